"""`cascade tune` and `cascade train-local`: thresholds and the learned tier."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Unpack

import typer
from rich.table import Table

from cascade.cliutil import JobOpt, PipelineOpt, app, fail, job_session, out, setup
from common.lifecycle import Status, Verdict

if TYPE_CHECKING:
    from cascade.tune_guarantee import Guarantee

T = TypeVar("T")


def observations(items: Sequence[Any], tier_index: int, use_gold: bool) -> list[Any]:
    """What tier ``tier_index`` answered for each item, judged against the reference.

    The reference is the gold label (``use_gold``) or, without gold, the answer the
    higher tier gave to an item this tier escalated, or to an item it accepted when
    that item was a shadow sample (the next tier answered it too): the pairs an
    accepted item otherwise lacks.
    """
    from workers.tuning import Observation

    out_: list[Observation] = []
    for item in items:
        verdicts = [v for v in item.verdicts if v.tier_index == tier_index]
        if not verdicts:
            continue
        v = verdicts[-1]
        escalated = v.decision == Verdict.ESCALATE
        answered_above = escalated and item.status == Status.DONE and item.final_label is not None
        if use_gold:
            reference = item.gold
            above_correct = (
                (item.final_label == item.gold) if answered_above and item.gold else None
            )
        else:
            reference = item.final_label if answered_above else None
            above_correct = True if answered_above else None
        above_cost = (
            sum(c for t, c in item.cost_by_tier.items() if t > tier_index) if escalated else None
        )
        shadow = item.shadows.get(tier_index + 1)
        if not escalated and shadow is not None:  # accepted, and the next tier answered too
            reference = item.gold if use_gold else shadow.label
            gold = item.gold
            above_correct = True if not use_gold else (shadow.label == gold if gold else None)
            above_cost = shadow.cost_nanos
        out_.append(
            Observation(
                confidence=v.confidence,
                correct=None if reference is None else v.label == reference,
                cost_nanos=item.cost_by_tier.get(tier_index, 0),
                above_correct=above_correct,
                above_cost_nanos=above_cost,
            )
        )
    return out_


def _usd(nanos: float) -> str:
    return f"${nanos / 1e9:.6f}"


@app.command()
def tune(
    job: JobOpt,
    target_agreement: Annotated[
        float | None, typer.Option(help="agreement with the higher tier to reach (default 0.98)")
    ] = None,
    target_accuracy: Annotated[
        float | None, typer.Option(help="accuracy against gold labels (items.meta.gold)")
    ] = None,
    budget_per_item: Annotated[
        float | None, typer.Option(help="USD per item to stay within")
    ] = None,
    write: Annotated[
        bool, typer.Option(help="write the recommended thresholds into --pipeline")
    ] = False,
    pipeline: Annotated[
        Path | None, typer.Option("--pipeline", "-p", help="pipeline TOML to update (--write)")
    ] = None,
    max_error: Annotated[
        float | None,
        typer.Option(help="guarantee mode: the error among accepted answers to stay within"),
    ] = None,
    confidence: Annotated[
        float, typer.Option(help="guarantee mode: how sure (exact binomial bound)")
    ] = 0.95,
    per_label: Annotated[
        bool, typer.Option("--per-label", help="guarantee mode: one threshold per label")
    ] = False,
    allow_uncertified: Annotated[
        bool,
        typer.Option(
            "--allow-uncertified", help="keep min_confidence where no threshold is certified"
        ),
    ] = False,
) -> None:
    """Per tier, the threshold trade-off curve from the ledger, and the cheapest threshold
    that meets the target; with --max-error, thresholds with a stated guarantee."""
    setup()
    given = [x for x in (target_agreement, target_accuracy, budget_per_item) if x is not None]
    _check_tune_args(len(given), max_error, confidence, write, pipeline)
    job_id, spec, items = _tuning_items(job)
    has_gold = any(i.gold is not None for i in items)
    if target_accuracy is not None and not has_gold:
        raise fail('--target-accuracy needs gold labels ("gold" in the items\' metadata)')
    target_file = pipeline if write else None
    if max_error is not None:
        _guarantee(
            items, spec, job_id, target_file, max_error=max_error, confidence=confidence,
            per_label=per_label, allow_uncertified=allow_uncertified, use_gold=has_gold,
        )  # fmt: skip
        return
    use_gold = target_accuracy is not None or (budget_per_item is not None and has_gold)
    target = target_accuracy if target_accuracy is not None else target_agreement
    if target is None:
        target = 0.98  # the default target: agreement with the higher tier
    budget = budget_per_item * 1e9 if budget_per_item is not None else None
    chosen = _recommend_all(items, spec, job_id, use_gold, target, budget)
    if target_file is not None:
        _write_min_confidence(target_file, chosen)


def _check_tune_args(
    targets: int, max_error: float | None, confidence: float, write: bool, pipeline: Path | None
) -> None:
    if targets > 1:
        raise fail("give one of --target-agreement, --target-accuracy, --budget-per-item")
    if targets and max_error is not None:
        raise fail("--max-error is a target of its own: give it without the other targets")
    if max_error is not None and not (0 < max_error < 1 and 0 < confidence < 1):
        raise fail("--max-error and --confidence must be within (0, 1)")
    if write and pipeline is None:
        raise fail("--write needs --pipeline P.toml (the file to update)")


def _tuning_items(job: str) -> tuple[int, dict[str, Any], list[Any]]:
    """(job id, its pipeline spec, its items with their verdicts) from the ledger."""
    from models.tuning import tuning_items

    with job_session(job) as (session, found):
        job_id, spec = found.id, dict(found.pipeline)
        items = tuning_items(session, job_id)
    return job_id, spec, list(items)


def _recommend_all(
    items: Sequence[Any],
    spec: dict[str, Any],
    job_id: int,
    use_gold: bool,
    target: float,
    budget: float | None,
) -> dict[int, float]:
    """Print each tier's curve and recommendation; return the recommended thresholds."""
    measure = "accuracy" if use_gold else "agreement"
    out.print(
        f"job {job_id}: {len(items):,} items; quality = {measure}"
        + ("" if use_gold else " with the higher tier's answer")
    )
    chosen: dict[int, float] = {}
    for k, tier in enumerate(spec.get("tiers", [])[:-1]):
        if tier.get("kind") != "rules":
            value = _recommend_tier(items, k, tier, use_gold, measure, target, budget)
            if value is not None:
                chosen[k] = value
    return chosen


def _recommend_tier(
    items: Sequence[Any],
    k: int,
    tier: dict[str, Any],
    use_gold: bool,
    measure: str,
    target: float,
    budget: float | None,
) -> float | None:
    """One tier's curve table and recommended min_confidence (None: keep the current one)."""
    from workers.tuning import curve, min_confidence_of, recommend

    obs = observations(items, k, use_gold)
    pairs = sum(1 for o in obs if o.correct is not None)
    current = min_confidence_of(tier)
    points = curve(obs)
    if budget is not None:
        rec = recommend(points, pairs, budget_nanos=budget)
    else:
        rec = recommend(points, pairs, target=target)
    table = Table(title=f"tier {k} {tier.get('name')} ({len(obs)} answers, {pairs} pairs)")
    for col in ("min_confidence", "kept", measure, "judged", "cost/item"):
        table.add_column(col, justify="right")
    for p in points:
        mark = " *" if rec.point is not None and p.threshold == rec.point.threshold else ""
        mark += " (now)" if math.isclose(p.threshold, current) else ""
        table.add_row(
            f"{p.threshold:.2f}{mark}",
            f"{100 * p.kept_share:.1f}%",
            "-" if p.quality is None or not p.verified else f"{p.quality:.4f}",
            str(p.verified),
            _usd(p.cost_per_item_nanos),
        )
    out.print(table)
    if rec.point is None:
        out.print(f"  {rec.reason}; keep min_confidence {current:g}")
        return None
    out.print(
        f"  recommend min_confidence = {rec.point.threshold:g} (now {current:g}): "
        f"{rec.reason}; rests on {rec.pairs} pairs, {rec.point.verified} judged at that "
        f"threshold, {_spread(rec.point.quality, rec.point.verified)}"
        + ("  \\[few pairs: treat as a hint]" if rec.pairs < 100 else "")  # text, not markup
    )
    return rec.point.threshold


def _rewrite(
    pipeline: Path, chosen: dict[int, T], edit: Callable[[str, int, T], str], what: str
) -> None:
    """Write each tier's ``chosen`` value into the pipeline file with ``edit``, and say so."""
    try:
        text = pipeline.read_text(encoding="utf-8")
        for k, value in chosen.items():
            text = edit(text, k, value)
    except (OSError, ValueError) as exc:
        raise fail(f"{pipeline}: {exc}") from None
    pipeline.write_text(text, encoding="utf-8")
    out.print(f"wrote {what} to {pipeline}")


def _write_min_confidence(pipeline: Path, chosen: dict[int, float]) -> None:
    from workers.tuning import set_min_confidence

    _rewrite(pipeline, chosen, set_min_confidence, f"{len(chosen)} threshold(s)")


def _guarantee(
    items: Sequence[Any],
    spec: dict[str, Any],
    job_id: int,
    pipeline: Path | None,
    **ask: Unpack[Guarantee],
) -> None:
    from cascade.tune_guarantee import tier_thresholds
    from workers.tuning import set_by_label

    out.print(
        f"job {job_id}: {len(items):,} items; guarantee: error <= {ask['max_error']:.1%} with "
        f"{ask['confidence']:.0%} confidence, "
        + ("per label" if ask["per_label"] else "labels pooled")
    )
    chosen = tier_thresholds(items, spec, job_id, **ask)
    if pipeline is not None:
        _rewrite(
            pipeline, chosen, set_by_label, f"min_confidence_by_label for {len(chosen)} tier(s)"
        )


@app.command("train-local")
def train_local(
    pipeline: PipelineOpt,
    from_job: Annotated[str, typer.Option("--from-job", help="job whose outcomes teach it")],
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write")] = Path(
        "local-model"
    ),
    source: Annotated[
        str, typer.Option(help="gold (items.meta.gold) | outcomes (accepted higher-tier labels)")
    ] = "gold",
) -> None:
    """Train the free local tier from a job's gold labels or its accepted outcomes."""
    from workers.local import LocalModel, LocalModelError
    from workers.pipeline import PipelineError, load_pipeline

    setup()
    if source not in ("gold", "outcomes"):
        raise fail("--source must be gold or outcomes")
    try:
        pipe = load_pipeline(pipeline)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    from models.tuning import training_examples

    local_tiers = [t.name for t in pipe.tiers if getattr(t, "kind", "") == "local"]
    with job_session(from_job) as (session, found):
        job_id = found.id
        examples = training_examples(session, job_id, source=source, exclude_tiers=local_tiers)
    labels = set(pipe.labels)
    examples = [(t, lb) for t, lb in examples if lb in labels]
    if not examples:
        raise fail(f"job {job_id} has no {source} labels from the pipeline's label set")
    try:
        model = LocalModel.train([t for t, _ in examples], [lb for _, lb in examples])
        saved = model.save(out_dir)
    except (LocalModelError, OSError) as exc:
        raise fail(str(exc)) from None
    out.print(
        f"local model {saved.version} written to {out_dir}: {saved.trained_on:,} examples, "
        f"labels {', '.join(saved.labels)}, "
        + ("calibrated" if saved.calibrated else "NOT calibrated (too few examples per label)")
    )


def _spread(quality: float | None, judged: int) -> str:
    """How sure the figure is: one standard error, or the rule of three when every
    judged answer agreed (a standard error of 0 would claim certainty)."""
    if not judged or quality is None:
        return "nothing judged there: no estimate"
    if quality in (0.0, 1.0):
        bound = 3 / judged
        return f"all {judged} judged alike: the other kind is below {bound:.4f} (95 %, rule of 3)"
    return f"± {math.sqrt(quality * (1 - quality) / judged):.4f} (one standard error)"

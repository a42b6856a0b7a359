"""`cascade tune --max-error E --confidence C`: per-label thresholds with a guarantee.

For each tier below the last, each answer it gave is judged against a reference:
the gold label where the item has one (``items.meta.gold`` or a reviewer's
verdict), else the next tier's answer — a shadow sample for an item the tier
accepted, the next tier's own answer for one it escalated. Without gold, the
escalated pairs are thinned by the same hash that picks shadow samples (at the
tier's ``shadow_rate``), so every pair is drawn at one rate and the pairs are a
uniform sample of what the tier answered. :func:`workers.guarantee.certify` then
finds, per label, the lowest threshold whose exact error bound meets the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict

from rich.table import Table

from cascade.cliutil import out
from common.lifecycle import Verdict
from workers.decision import shadow_sampled
from workers.guarantee import Certificate, Judged, certify_by_label, shadow_rate_for

POOLED = "*"


class Guarantee(TypedDict):
    """What ``cascade tune --max-error`` asks for, as :func:`tier_thresholds` takes it."""

    max_error: float  # the error among accepted answers to stay within
    confidence: float  # how sure (exact binomial bound)
    per_label: bool  # one threshold per label, else one for all labels
    allow_uncertified: bool  # keep min_confidence where no threshold is certified
    use_gold: bool  # judge against gold labels, else against the next tier


def _reference(item: Any, tier_index: int, use_gold: bool, job_id: int, rate: float) -> Any:
    """The answer this tier's answer is judged against, or None."""
    if use_gold:
        return item.gold
    mine = [v for v in item.verdicts if v.tier_index == tier_index][-1]
    if mine.decision != Verdict.ESCALATE:  # accepted (or sent to review over a shadow)
        shadow = item.shadows.get(tier_index + 1)
        return None if shadow is None else shadow.label
    if not shadow_sampled(job_id, item.pk, tier_index, rate):
        return None  # drawn at the shadow rate like the accepted ones
    above = [v for v in item.verdicts if v.tier_index == tier_index + 1]
    return above[-1].label if above else None


def judged_answers(
    items: Sequence[Any], tier_index: int, *, use_gold: bool, job_id: int, rate: float
) -> list[tuple[str, Judged]]:
    """(label the tier gave, its confidence and whether it was wrong) per judged answer."""
    found = []
    for item in items:
        mine = [v for v in item.verdicts if v.tier_index == tier_index]
        if not mine:
            continue
        reference = _reference(item, tier_index, use_gold, job_id, rate)
        if reference is not None:
            v = mine[-1]
            found.append((v.label, Judged(v.confidence, v.label != reference)))
    return found


def answered_counts(items: Sequence[Any], tier_index: int) -> dict[str, int]:
    """Per label, the tier's answers in this job: each becomes a pair at the shadow rate."""
    counts: dict[str, int] = {}
    for item in items:
        mine = [v for v in item.verdicts if v.tier_index == tier_index]
        if mine:
            counts[mine[-1].label] = counts.get(mine[-1].label, 0) + 1
    return counts


def _explain(label: str, cert: Certificate, answered: int, rate: float) -> str:
    """Why a label is not certified, and how many more shadow samples would do it."""
    stop = cert.stopped_at
    if stop is None or not stop.n:
        return f"    {label}: no judged answers yet"
    seen = f"{stop.errors}/{stop.n} wrong at >= {stop.threshold:.2f}"
    if cert.needed is None:
        return f"    {label}: {seen}: at that error rate no number of samples certifies it"
    more = max(0, cert.needed - stop.n)
    new_rate = shadow_rate_for(more, answered, rate)
    jobs = math.ceil(more / answered) if answered and new_rate >= 1.0 else 1
    return (
        f"    {label}: {seen}; {more:,} more judged samples would certify it if the error "
        f"rate holds: shadow_rate = {new_rate:g} gathers them in "
        + ("one more job" if jobs == 1 else f"about {jobs} more jobs")
        + " of this size"
    )


def _table(k: int, name: str, certs: dict[str, Certificate], measure: str) -> Table:
    table = Table(title=f"tier {k} {name}: error = {measure}")
    for col in ("label", "threshold", "tested at", "pairs", "errors", "upper bound"):
        table.add_column(col, justify="right")
    for label, c in certs.items():
        shown = c.certified or c.stopped_at
        table.add_row(
            label,
            "not certified" if c.threshold is None else f"{c.threshold:.2f}",
            f">= {shown.threshold:.2f}" if shown else "-",
            str(shown.n) if shown else "0",
            str(shown.errors) if shown else "0",
            f"{shown.upper:.4f}" if shown else "-",
        )
    return table


def tier_thresholds(
    items: Sequence[Any],
    spec: dict[str, Any],
    job_id: int,
    *,
    max_error: float,
    confidence: float,
    per_label: bool,
    allow_uncertified: bool,
    use_gold: bool,
) -> dict[int, dict[str, float | str]]:
    """Print each tier's certificates; return ``min_confidence_by_label`` per tier index."""
    labels = list(spec.get("labels", []))
    measure = "against gold" if use_gold else "disagreement with the next tier"
    chosen: dict[int, dict[str, float | str]] = {}
    for k, tier in enumerate(spec.get("tiers", [])[:-1]):
        if tier.get("kind") == "rules":
            continue
        rate = float(tier.get("shadow_rate", 0.0))
        judged = judged_answers(items, k, use_gold=use_gold, job_id=job_id, rate=rate)
        if per_label:
            certs = certify_by_label(judged, labels, max_error, confidence)
        else:
            pooled = certify_by_label(
                [(POOLED, j) for _, j in judged], [POOLED], max_error, confidence
            )
            certs = {POOLED: pooled[POOLED]}
        out.print(_table(k, str(tier.get("name")), certs, measure))
        answered = answered_counts(items, k)
        by_label: dict[str, float | str] = {}
        for label, c in certs.items():
            targets = labels if label == POOLED else [label]
            got = c.certified
            if c.threshold is not None and got is not None:
                out.print(
                    f"  {label}: accepted at >= {c.threshold:.2f}, the error ({measure}) is at "
                    f"most {max_error:.1%} with {confidence:.0%} confidence: {got.errors} of "
                    f"{got.n} judged answers wrong, upper bound {got.upper:.4f}"
                )
                by_label.update(dict.fromkeys(targets, c.threshold))
                continue
            n_acc = sum(answered.values()) if label == POOLED else answered.get(label, 0)
            out.print(f"  {label}: NOT certified")
            out.print(_explain(label, c, n_acc, rate))
            if not allow_uncertified:
                by_label.update(dict.fromkeys(targets, "never"))
        chosen[k] = by_label
        if by_label and set(by_label.values()) == {"never"}:
            out.print(
                f"  tier {tier.get('name')} certifies no label: every call to it is spent for "
                "nothing until it does; gather samples (shadow_rate) or drop the tier"
            )
    if not allow_uncertified and any("never" in m.values() for m in chosen.values()):
        out.print(
            'uncertified labels are written "never" (nothing accepted there; the next tier '
            "answers); --allow-uncertified keeps the tier's min_confidence for them"
        )
    return chosen

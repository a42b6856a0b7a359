"""`cascade review list|export|import|stats`: the human review queue.

Export writes one row per item waiting for review (JSONL, or CSV by the file's
suffix) with what the machine said and empty ``label``, ``reviewer``,
``reviewed_at`` and ``note`` fields; a reviewer fills them in and `import` reads
the same file back (rows without a label are skipped). Verdicts are gold.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cascade.cliutil import JobOpt, app, ensure_schema, fail, find_job, job_session, out, setup
from cascade.fmt import picked

review_app = typer.Typer(no_args_is_help=True, help="The human review queue.")
app.add_typer(review_app, name="review")

FIELDS = ("item_id", "machine_label", "confidence", "tier", "why", "text")
VERDICT_FIELDS = ("label", "reviewer", "reviewed_at", "note")


def _rows(job: str, limit: int | None = None) -> tuple[int, list[Any]]:
    setup()
    from models.reviews import waiting

    with job_session(job) as (session, found):
        job_id = found.id
        return job_id, list(waiting(session, job_id, limit=limit))


@review_app.command("list")
def list_(job: JobOpt, limit: Annotated[int, typer.Option(help="at most this many")] = 50) -> None:
    """Items waiting for a person, with what the machine said and why."""
    job_id, rows = _rows(job, limit)
    table = Table(title=f"job {job_id}: waiting for review (first {limit})")
    for col in ("item", "machine said", "confidence", "tier", "why", "text"):
        table.add_column(col)
    for w in rows:
        table.add_row(
            w.item_id,
            w.label or "-",
            "-" if w.confidence is None else f"{w.confidence:.2f}",
            w.tier or "-",
            (w.why or "")[:60],
            (w.text or "")[:60],
        )
    out.print(table)


def _export_row(w: Any) -> dict[str, Any]:
    return {
        "item_id": w.item_id,
        "machine_label": w.label,
        **picked(w, "confidence", "tier", "why", "text"),
        **dict.fromkeys(VERDICT_FIELDS, ""),
    }


@review_app.command("export")
def export(
    job: JobOpt,
    to: Annotated[Path, typer.Option("--out", "-o", help="file to write (.jsonl or .csv)")],
) -> None:
    """Write the queue for reviewers: fill in label, reviewer, reviewed_at and note."""
    job_id, rows = _rows(job)
    records = [_export_row(w) for w in rows]
    with to.open("w", encoding="utf-8", newline="") as fh:
        if to.suffix.lower() == ".csv":
            writer = csv.DictWriter(fh, fieldnames=[*FIELDS, *VERDICT_FIELDS])
            writer.writeheader()
            writer.writerows(records)
        else:
            for r in records:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    out.print(f"job {job_id}: {len(records):,} items waiting for review written to {to}")


def _read(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        if path.suffix.lower() == ".csv":
            for n, row in enumerate(csv.DictReader(fh), start=2):
                yield n, dict(row)
            return
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise fail(f"{path}:{n}: not JSON: {exc.msg}") from None
                yield n, row if isinstance(row, dict) else {}


def _when(text: Any, where: str) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(str(text))
    except ValueError:
        raise fail(f"{where}: reviewed_at {text!r} is not an ISO date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_verdicts(
    path: Path, labels: Sequence[str], default_reviewer: str | None
) -> tuple[list[Any], int]:
    """The verdicts in a reviewed file, and how many rows had no label yet."""
    from models.reviews import Verdict

    verdicts, blank, problems = [], 0, []
    for n, row in _read(path):
        label = str(row.get("label") or "").strip()
        if not label:
            blank += 1
            continue
        where = f"{path}:{n}"
        reviewer = str(row.get("reviewer") or default_reviewer or "").strip()
        if label not in labels:
            problems.append(f"{where}: label {label!r} is not one of {', '.join(labels)}")
        elif not reviewer:
            problems.append(f"{where}: who reviewed it? (a reviewer field, or --reviewer)")
        elif not row.get("item_id"):
            problems.append(f"{where}: no item_id")
        else:
            note = str(row.get("note") or "").strip() or None
            when = _when(row.get("reviewed_at"), where)
            verdicts.append(Verdict(str(row["item_id"]), label, reviewer[:200], when, note))
    if problems:
        raise fail("the file has problems, nothing imported:\n  " + "\n  ".join(problems[:20]))
    return verdicts, blank


@review_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="a reviewed export (.jsonl or .csv)")],
    job: JobOpt,
    reviewer: Annotated[
        str | None, typer.Option(help="who reviewed, for rows that do not say")
    ] = None,
) -> None:
    """Read reviewers' verdicts: each becomes the item's final label, and gold."""
    setup()
    ensure_schema()
    from models.reviews import import_verdicts
    from tasks.runtime import get_runtime

    if not path.is_file():
        raise fail(f"{path}: no such file")
    runtime = get_runtime()
    with runtime.sessions() as session:
        found = find_job(session, job)
        job_id, labels = found.id, list(found.pipeline.get("labels", []))
    verdicts, blank = parse_verdicts(path, labels, reviewer)
    with runtime.sessions.begin() as session:
        done = import_verdicts(session, job_id, verdicts)
    out.print(
        f"job {job_id}: {done.added:,} verdicts imported, {done.replaced:,} replaced, "
        f"{blank:,} rows without a label skipped"
        + (f", {len(done.unknown):,} unknown item ids" if done.unknown else "")
    )
    if done.unknown:
        out.print("  unknown: " + ", ".join(done.unknown[:10]))


@review_app.command("stats")
def stats(job: JobOpt) -> None:
    """How many items wait for a person, and each tier's accuracy against reviewers."""
    setup()
    from models.reviews import counts, tier_accuracy

    with job_session(job) as (session, found):
        job_id = found.id
        waiting_n, reviewed = counts(session, job_id)
        tiers = tier_accuracy(session, job_id)
    out.print(f"job {job_id}: {waiting_n:,} waiting for review, {reviewed:,} reviewed")
    for t in tiers:
        out.print(
            f"  tier {t.tier_index} {t.tier}: {t.agreed}/{t.judged} answers match the "
            f"reviewers ({t.agreed / t.judged:.1%})"
        )


def add_reviews(report: dict[str, Any], session: Any, job: Any) -> None:
    """The report's ``reviews`` section (one job): the queue and each tier against reviewers."""
    from models.reviews import counts, tier_accuracy

    if job is None:
        return
    waiting_n, reviewed = counts(session, int(job.id))
    report["reviews"] = {
        "waiting": waiting_n,
        "reviewed": reviewed,
        "tiers": [
            {
                "tier_index": t.tier_index,
                "tier": t.tier,
                "judged": t.judged,
                "agreed": t.agreed,
                "accuracy": round(t.agreed / t.judged, 4),
            }
            for t in tier_accuracy(session, int(job.id))
        ],
    }


def print_reviews(console: Any, report: dict[str, Any]) -> None:
    """One line per tier under the report's table, when people have reviewed items."""
    reviews = report.get("reviews")
    if not reviews or not (reviews["waiting"] or reviews["reviewed"]):
        return
    console.print(
        f"human review: {reviews['waiting']:,} waiting, {reviews['reviewed']:,} reviewed"
        + "".join(
            f"; {t['tier']} {t['agreed']}/{t['judged']} agree with reviewers"
            for t in reviews["tiers"]
        )
    )

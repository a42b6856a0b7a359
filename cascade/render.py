"""Turning report data into a JSON object, terminal tables, JSONL and CSV.

The report is built as one JSON-ready dict (:func:`job_report` for the headline
keys, ``cascade.render_sections.add_sections`` for the analytics sections); the
terminal tables (here and ``cascade.render_text``), the CSV (``cascade.render_csv``)
and the HTML page (``cascade.report_html``) all render that dict. This module is the
base the others build on: it imports none of them.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console

from cascade.fmt import FitTable, money, picked
from common.lifecycle import Status, Verdict
from models.analytics import FunnelTier
from models.reports import JobTotals, OutcomeRow, TierRow, nanos_to_usd


def usd(value: Decimal) -> str:
    return money(value)


def plain(value: Decimal) -> str:
    """A decimal without an exponent: 0.000000777, never 7.77E-7."""
    return format(value, "f")


def usd_text(nanos: int) -> str:
    return f"{nanos_to_usd(nanos):f}"  # never exponent notation


def job_report(job: Any, totals: JobTotals, tiers: list[TierRow]) -> dict[str, Any]:
    """The report as one JSON-ready object (money as decimal strings, exact).

    ``job`` is None for a report over several jobs (a pipeline, a time range, a
    label): the job keys are then None.
    """
    cost = nanos_to_usd(totals.cost_nanos)
    # Savings compare finished items only: their cost against what they would have cost
    # on the last tier (an unfinished item has a cost so far and no baseline yet).
    done_cost = nanos_to_usd(totals.finished_cost_nanos)
    baseline = nanos_to_usd(totals.finished_baseline_nanos)
    savings = float((baseline - done_cost) / baseline * 100) if baseline else 0.0
    capped = totals.by_status.get(Status.BUDGET_CAPPED, 0)
    review = totals.by_status.get(Status.REVIEW, 0)  # final for the machine
    unfinished = totals.items_total - totals.items_done - totals.items_failed - capped - review
    return {
        "job_id": None if job is None else job.id,
        "job_name": None if job is None else job.name,
        "pipeline": None if job is None else job.pipeline_name,
        "status": None if job is None else job.status,
        "items_total": totals.items_total,
        "items_done": totals.items_done,
        "items_failed": totals.items_failed,
        "items_budget_capped": capped,
        "items_paused_budget": totals.by_status.get(Status.PAUSED_BUDGET, 0),
        "items_review": review,
        "items_unfinished": unfinished,
        "partial": unfinished > 0,
        "budget_usd": plain(nanos_to_usd(job.budget_nanos))
        if job is not None and job.budget_nanos is not None
        else None,
        "spent_usd": None if job is None else plain(nanos_to_usd(job.spent_nanos)),
        "message": None if job is None else job.message,
        "lines_rejected": totals.lines_rejected,
        "model_calls": totals.model_calls,
        "steps_not_sent": totals.steps_not_sent,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": plain(cost),
        "finished_cost_usd": plain(done_cost),
        "baseline_cost_usd": plain(baseline),
        "savings_usd": plain(baseline - done_cost),
        "savings_pct": round(savings, 2),
        "tiers": [_tier(t) for t in tiers],
    }


def tier_counts(t: TierRow | FunnelTier) -> dict[str, Any]:
    """The keys a tier's row and its funnel row begin with, in this order."""
    return {
        "tier_index": t.tier_index,
        "tier": t.tier,
        "entered": t.entered,
        "accepted": t.accepted,
        "escalated": t.escalated,
        Status.FAILED: t.failed,  # the tier's visits that ended in Verdict.FAIL
    }


# the counts every tier table shows after the tier's name (terminal, HTML), in this order
TIER_COUNTS = ("entered", "accepted", "escalated", Status.FAILED)


def count_cells(
    row: dict[str, Any], keys: Sequence[str] = TIER_COUNTS, show: Callable[[Any], str] = str
) -> list[str]:
    """The cells of ``row``'s ``keys``, each as ``show`` writes it."""
    return [show(row[k]) for k in keys]


def _tier(t: TierRow) -> dict[str, Any]:
    return {
        **tier_counts(t),
        **picked(t, "calls", "not_sent", "fallbacks", "input_tokens", "output_tokens"),
        "cost_usd": plain(t.cost_usd),
        **picked(t, "p50_ms", "p95_ms"),
    }


def items_line(report: dict[str, Any]) -> str:
    """How many items, and where they are: the same words in the text and HTML reports.

    Items in review are final for the machine (a person decides): counted apart.
    """
    review = report.get("items_review", 0)
    return (
        f"items {report['items_total']:,}: done {report['items_done']:,}, "
        f"failed {report['items_failed']:,}, "
        + (f"in review {review:,}, " if review else "")
        + f"unfinished {report['items_unfinished']:,}; "
        f"rejected input lines {report['lines_rejected']:,}"
    )


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The job's (or scope's) tier table and headline lines."""
    console.print(_tier_table(report))
    console.print(items_line(report), soft_wrap=True)
    console.print(savings_line(report), soft_wrap=True)
    _print_notes(console, report)


def _tier_table(report: dict[str, Any]) -> FitTable:
    if report["job_id"] is None:
        title = f"Report · {report.get('scope_text', 'all jobs')}"
    else:
        title = (
            f"Job {report['job_id']} · {report['job_name']} · {report['pipeline']} · "
            f"{report['status']}"
        )
    table = FitTable(title=title)
    for col in (
        "tier",
        "in",
        "acc",
        "esc",
        Verdict.FAIL,
        "calls",
        "fb",
        "cost",
        "p50ms",
        "p95ms",
    ):
        table.add_column(col, justify="left" if col == "tier" else "right", no_wrap=True)
    for t in report["tiers"]:
        table.add_row(
            t["tier"],
            *count_cells(t, (*TIER_COUNTS, "calls", "fallbacks")),
            usd(Decimal(t["cost_usd"])),
            "-" if t["p50_ms"] is None else str(t["p50_ms"]),
            "-" if t["p95_ms"] is None else str(t["p95_ms"]),
        )
    return table


def _print_notes(console: Console, report: dict[str, Any]) -> None:
    """What the numbers above need said: offline, steps not sent, the budget, a message."""
    if report.get("offline"):
        console.print(
            "[yellow]offline[/yellow]: these calls went to the built-in fake Messages API, "
            "not a real model",
            soft_wrap=True,
        )
    if report.get("steps_not_sent"):
        console.print(
            f"[dim]{report['steps_not_sent']:,} model steps sent no request "
            "(breaker open or a drill): not counted as calls[/dim]"
        )
    if report.get("budget_usd") is not None or report.get("items_budget_capped"):
        console.print(
            f"budget {usd(Decimal(report['budget_usd'] or '0'))}, "
            f"spent {usd(Decimal(report['spent_usd'] or '0'))}: "
            f"{report['items_budget_capped']:,} items capped at a lower tier's answer, "
            f"{report['items_paused_budget']:,} waiting for `cascade resume --budget`"
        )
    if report.get("message"):
        console.print(f"[yellow]{report['status']}[/yellow]: {report['message']}")


def savings_line(report: dict[str, Any]) -> str:
    """Cost against the all-last-tier baseline, over finished items; a partial job says so."""
    cost, base = Decimal(report["finished_cost_usd"]), Decimal(report["baseline_cost_usd"])
    line = (
        f"cost {money(cost)} vs {money(base)} all on the last tier (estimate): "
        f"saved {money(Decimal(report['savings_usd']))} ([bold]{report['savings_pct']:.1f}%[/bold])"
    )
    if not report.get("partial"):
        return line
    done = report["items_total"] - report["items_unfinished"]
    return (
        f"[yellow]partial[/yellow]: over the {done:,} finished items of {report['items_total']:,}, "
        f"{line}; spent so far {money(Decimal(report['cost_usd']))}"
    )


def outcome_dict(row: OutcomeRow) -> dict[str, Any]:
    return {
        "id": row.item_id,
        **picked(row, "label", "tier", "confidence"),
        "cost_usd": str(nanos_to_usd(row.cost_nanos)),
        **picked(row, "latency_ms", "status", "error", "metadata"),
    }


def write_outcomes(rows: Iterable[OutcomeRow], fmt: str, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out  # the stream of now, not of import time
    n = 0
    writer = None
    for row in rows:
        d = outcome_dict(row)
        if fmt == "jsonl":
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
        else:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(d))
                writer.writeheader()
            d["metadata"] = json.dumps(d["metadata"], ensure_ascii=False)
            writer.writerow(d)
        n += 1
    return n

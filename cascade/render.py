"""Turning report data into a JSON object, terminal tables, JSONL and CSV."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

from models.reports import JobTotals, OutcomeRow, TierRow, nanos_to_usd


def _usd(value: Decimal) -> str:
    return f"${value:.4f}"


def job_report(job: Any, totals: JobTotals, tiers: list[TierRow]) -> dict[str, Any]:
    """The report as one JSON-ready object (money as decimal strings, exact)."""
    cost = nanos_to_usd(totals.cost_nanos)
    baseline = nanos_to_usd(totals.baseline_nanos)
    savings = float((baseline - cost) / baseline * 100) if totals.baseline_nanos else 0.0
    return {
        "job_id": job.id,
        "job_name": job.name,
        "pipeline": job.pipeline_name,
        "status": job.status,
        "items_total": totals.items_total,
        "items_done": totals.items_done,
        "items_failed": totals.items_failed,
        "items_unfinished": totals.items_total - totals.items_done - totals.items_failed,
        "lines_rejected": totals.lines_rejected,
        "model_calls": totals.model_calls,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": str(cost),
        "baseline_cost_usd": str(baseline),
        "savings_usd": str(baseline - cost),
        "savings_pct": round(savings, 2),
        "tiers": [
            {
                "tier_index": t.tier_index,
                "tier": t.tier,
                "entered": t.entered,
                "accepted": t.accepted,
                "escalated": t.escalated,
                "failed": t.failed,
                "calls": t.calls,
                "fallbacks": t.fallbacks,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "cost_usd": str(t.cost_usd),
                "p50_ms": t.p50_ms,
                "p95_ms": t.p95_ms,
            }
            for t in tiers
        ],
    }


def print_report(console: Console, report: dict[str, Any]) -> None:
    title = (
        f"Job {report['job_id']} · {report['job_name']} · {report['pipeline']} · {report['status']}"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in (
        "tier",
        "in",
        "accept",
        "escal",
        "fail",
        "calls",
        "fallbk",
        "cost",
        "p50ms",
        "p95ms",
    ):
        table.add_column(col, justify="left" if col == "tier" else "right", no_wrap=True)
    for t in report["tiers"]:
        table.add_row(
            t["tier"],
            str(t["entered"]),
            str(t["accepted"]),
            str(t["escalated"]),
            str(t["failed"]),
            str(t["calls"]),
            str(t["fallbacks"]),
            _usd(Decimal(t["cost_usd"])),
            "-" if t["p50_ms"] is None else str(t["p50_ms"]),
            "-" if t["p95_ms"] is None else str(t["p95_ms"]),
        )
    console.print(table)
    console.print(
        f"items {report['items_total']:,}: done {report['items_done']:,}, "
        f"failed {report['items_failed']:,}, unfinished {report['items_unfinished']:,}; "
        f"rejected input lines {report['lines_rejected']:,}"
    )
    console.print(
        f"cost {_usd(Decimal(report['cost_usd']))} vs {_usd(Decimal(report['baseline_cost_usd']))} "
        f"all on the last tier (estimate): saved {_usd(Decimal(report['savings_usd']))} "
        f"([bold]{report['savings_pct']:.1f}%[/bold])"
    )


def outcome_dict(row: OutcomeRow) -> dict[str, Any]:
    return {
        "id": row.item_id,
        "label": row.label,
        "tier": row.tier,
        "confidence": row.confidence,
        "cost_usd": str(nanos_to_usd(row.cost_nanos)),
        "latency_ms": row.latency_ms,
        "status": row.status,
        "error": row.error,
        "metadata": row.metadata,
    }


def write_outcomes(rows: Iterable[OutcomeRow], fmt: str, out: TextIO = sys.stdout) -> int:
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

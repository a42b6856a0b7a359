"""The report in long form (CSV), and two reports side by side (``--compare``)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TextIO


def cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def report_rows(r: dict[str, Any]) -> Iterable[tuple[str, str, str, Any]]:
    """The whole report in long form: (section, subject, metric, value)."""
    for key in (
        "job_id", "status", "items_total", "items_done", "items_failed", "lines_rejected",
        "model_calls", "input_tokens", "output_tokens", "cost_usd", "baseline_cost_usd",
        "savings_usd", "savings_pct",
    ):  # fmt: skip
        yield "summary", "", key, r[key]
    for section, rows, subject in (
        ("tiers", r["tiers"], "tier"),
        ("funnel", r.get("funnel", []), "tier"),
        ("cost_by_tier", r.get("cost", {}).get("by_tier", []), "tier"),
        ("cost_by_label", r.get("cost", {}).get("by_label", []), "label"),
        ("cost_by_model", r.get("cost", {}).get("by_model", []), "model"),
        ("latency", r.get("latency", {}).get("tiers", []), "tier"),
        ("fallbacks", r.get("reliability", {}).get("fallbacks", []), "link"),
        ("dead_letters", r.get("reliability", {}).get("dead_letters", []), "error"),
        ("agreement", r.get("confidence", {}).get("agreement", []), "tier"),
    ):
        for row in rows:
            for k, v in row.items():
                if k != subject:
                    yield section, cell(row[subject]), k, v
    for k, v in r.get("cost", {}).items():
        if not isinstance(v, list):
            yield "cost", "", k, v
    for k, v in r.get("reliability", {}).get("outcomes", {}).items():
        yield "outcomes", "", k, v
    lat = r.get("latency", {})
    for k, v in lat.get("end_to_end", {}).items():
        yield "latency_end_to_end", "", k, v
    for k in ("worst_path_p99_ms", "worst_path_max_ms"):
        if k in lat:
            yield "latency", "", k, lat[k]
    for b in r.get("confidence", {}).get("histogram", []):
        yield "confidence", f"{b['tier']}/{b['label']}/{b['bucket']}", "answers", b["answers"]
    for d in r.get("daily", []):
        subject = f"{d['day']}/{d['pipeline']}/{d['tier']}"
        for k, v in d.items():
            if k not in ("day", "pipeline", "tier"):
                yield "daily", subject, k, v


def write_report_csv(r: dict[str, Any], out: TextIO | None = None) -> None:
    """One CSV in long form: ``section,subject,metric,value``."""
    writer = csv.writer(sys.stdout if out is None else out)  # the stream of now
    writer.writerow(["section", "subject", "metric", "value"])
    for section, subject, metric, value in report_rows(r):
        writer.writerow([section, subject, metric, "" if value is None else value])


COMPARE_METRICS: tuple[str, ...] = (
    "items_total", "items_done", "items_failed", "model_calls", "input_tokens",
    "output_tokens", "cost_usd", "baseline_cost_usd", "savings_usd", "savings_pct",
)  # fmt: skip


def _num(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value))


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(metric, A, B, B - A) for the headline numbers and each tier's funnel and latency."""
    rows: list[tuple[str, Any, Any, Any]] = []

    def add(metric: str, va: Any, vb: Any) -> None:
        na, nb = _num(va), _num(vb)
        rows.append((metric, va, vb, None if na is None or nb is None else f"{nb - na:f}"))

    for m in COMPARE_METRICS:
        add(m, a[m], b[m])
    tiers_a = {t["tier"]: t for t in a.get("funnel", [])}
    tiers_b = {t["tier"]: t for t in b.get("funnel", [])}
    lat_a = {t["tier"]: t for t in a.get("latency", {}).get("tiers", [])}
    lat_b = {t["tier"]: t for t in b.get("latency", {}).get("tiers", [])}
    cost_a = {t["tier"]: t for t in a.get("cost", {}).get("by_tier", [])}
    cost_b = {t["tier"]: t for t in b.get("cost", {}).get("by_tier", [])}
    for tier in dict.fromkeys([*tiers_a, *tiers_b]):
        ta, tb = tiers_a.get(tier, {}), tiers_b.get(tier, {})
        for k in ("entered", "accepted", "escalated", "escalation_rate"):
            add(f"{tier}.{k}", ta.get(k), tb.get(k))
        add(
            f"{tier}.cost_usd",
            cost_a.get(tier, {}).get("cost_usd"),
            cost_b.get(tier, {}).get("cost_usd"),
        )
        for k in ("p50_ms", "p95_ms", "p99_ms"):
            add(f"{tier}.{k}", lat_a.get(tier, {}).get(k), lat_b.get(tier, {}).get(k))
    return rows


def compare_report(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "a": a,
        "b": b,
        "diff": {m: d for m, _, _, d in compare_rows(a, b)},
    }

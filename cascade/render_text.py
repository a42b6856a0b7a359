"""The analytics sections as terminal tables, after the job's own table."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from cascade.fmt import FitTable
from cascade.render import TIER_COUNTS, count_cells, usd
from cascade.render_csv import cell, compare_rows
from common.lifecycle import Outcome, Status, Verdict


def _table(title: str, columns: list[str]) -> Table:
    t = FitTable(title=title)
    for n, col in enumerate(columns):
        t.add_column(col, justify="left" if n == 0 else "right", no_wrap=True)
    return t


def print_sections(console: Console, r: dict[str, Any]) -> None:
    """The analytics sections as terminal tables, after ``print_report``'s table."""
    _print_funnel(console, r["funnel"])
    _print_cost(console, r["cost"])
    _print_latency(console, r["latency"])
    _print_reliability(console, r["reliability"])
    _print_confidence(console, r["confidence"])
    if r["daily"]:
        _print_daily(console, r["daily"])
        print_daily_not_calls(console, r["daily"])


def _print_funnel(console: Console, funnel: list[dict[str, Any]]) -> None:
    t = _table("Funnel", ["tier", "in", Verdict.ACCEPT, "escal", Verdict.FAIL, "dead", "escal %"])
    for f in funnel:
        t.add_row(
            f["tier"],
            *count_cells(f, (*TIER_COUNTS, "dead_lettered")),
            f"{f['escalation_rate'] * 100:.1f}",
        )
    console.print(t)
    for f in funnel:
        if f["warning"]:
            console.print(f"[yellow]warning:[/yellow] tier {f['tier']}: {f['warning']}")


def _print_cost(console: Console, c: dict[str, Any]) -> None:
    console.print(
        f"cost per item: mean {usd(Decimal(c['per_item_mean_usd']))}, p95 "
        f"{'-' if c['per_item_p95_usd'] is None else usd(Decimal(c['per_item_p95_usd']))}; "
        f"realtime {usd(Decimal(c['realtime_usd']))}, batch {usd(Decimal(c['batch_usd']))}; "
        f"cache saved {usd(Decimal(c['cache_savings_usd']))}"
    )
    if Decimal(c.get("calibration_usd") or 0):  # shadow samples, not in any item's cost
        console.print(f"calibration spend (shadow samples): {usd(Decimal(c['calibration_usd']))}")
    t = _table("Cost by label", ["label", "items", "cost", "baseline", "saved"])
    for x in c["by_label"]:
        t.add_row(
            cell(x["label"]),
            str(x["items"]),
            usd(Decimal(x["cost_usd"])),
            usd(Decimal(x["baseline_usd"])),
            usd(Decimal(x["savings_usd"])),
        )
    console.print(t)


def _print_latency(console: Console, lat: dict[str, Any]) -> None:
    t = _table("Latency (model calls, ms)", ["tier", "calls", "p50", "p95", "p99", "max"])
    rows = [(x["tier"], str(x["calls"]), x) for x in lat["tiers"]]
    rows.append(("end to end", str(lat["end_to_end"]["items"]), lat["end_to_end"]))
    for name, n, x in rows:
        t.add_row(
            name, n, cell(x["p50_ms"]), cell(x["p95_ms"]), cell(x["p99_ms"]), cell(x["max_ms"])
        )
    console.print(t)
    console.print(
        f"worst-case full escalation: {lat['worst_path_p99_ms']:,} ms (sum of tier p99s), "
        f"{lat['worst_path_max_ms']:,} ms (sum of tier maxima)"
    )


def _print_reliability(console: Console, rel: dict[str, Any]) -> None:
    outcomes = ", ".join(f"{k} {v}" for k, v in rel["outcomes"].items())
    unsent = f" (and {rel['not_sent']} steps that sent none)" if rel["not_sent"] else ""
    console.print(f"calls {rel['calls']}{unsent}: {outcomes}")
    fallbacks = [
        [x["tier"], x["link"], str(x["calls"]), str(x[Outcome.OK])] for x in rel["fallbacks"]
    ]
    openings = [
        [o["breaker_key"], o["opened_at"], cell(o["closed_at"]), cell(o["seconds"]), o["reason"]]
        for o in rel["breaker_openings"]
    ]
    drills = [
        [d["breaker_key"], d["started_at"], d["until"], cell(d["cleared_at"]),
         str(d["calls_diverted"])]
        for d in rel["drills"]
    ]  # fmt: skip
    dead = [[x["error"], str(x["items"])] for x in rel["dead_letters"]]
    for title, columns, rows in (
        ("Fallbacks by chain link", ["tier", "link", "calls", Outcome.OK], fallbacks),
        ("Breaker openings", ["breaker", "opened", "closed", "seconds", "reason"], openings),
        ("Chaos drills", ["breaker", "started", "until", "cleared", "diverted"], drills),
        (f"Dead letters ({rel['dead_lettered']})", ["reason", "items"], dead),
    ):
        if rows:  # an empty section prints nothing
            t = _table(title, columns)
            for row in rows:
                t.add_row(*row)
            console.print(t)


def _print_daily(console: Console, daily: list[dict[str, Any]]) -> None:
    t = _table(
        "Per day",
        ["day", "pipeline", "tier", "items", "escal", Verdict.FAIL, "calls", "cost", "p95"],
    )
    for d in daily:
        t.add_row(
            d["day"],
            d["pipeline"],
            d["tier"],
            str(d["items"]),
            str(d["escalated"]),
            str(d[Status.FAILED]),
            str(d["calls"]),
            usd(Decimal(d["cost_usd"])),
            cell(d["p95_ms"]),
        )
    console.print(t)


def _print_confidence(console: Console, conf: dict[str, Any]) -> None:
    if conf["histogram"]:
        grid: dict[tuple[str, str], list[int]] = {}
        for b in conf["histogram"]:
            row = grid.setdefault((b["tier"], b["label"]), [0] * 10)
            row[int(float(b["bucket"].split("-")[0]) * 10 + 0.5)] += b["answers"]
        t = _table(
            "Confidence (answers per 0.1 bucket)",
            ["tier", "label", *[f".{n}" for n in range(10)]],
        )
        for (tier, label), counts in grid.items():
            t.add_row(tier, label, *(str(n) if n else "·" for n in counts))
        console.print(t)
    for a in conf["agreement"]:
        console.print(
            f"{a['tier']}: agreed with the final label on {a['agreed']} of {a['pairs']} "
            f"escalated items ({a['rate'] * 100:.1f}%)"
        )


def print_daily_not_calls(console: Console, daily: list[dict[str, Any]]) -> None:
    """Under the per-day table: the steps it does not count as calls, when there are any."""
    not_sent = sum(d["not_sent"] for d in daily)
    reused = sum(d[Outcome.REUSED] for d in daily)
    if not_sent:
        console.print(f"[dim]per day, not in calls: {not_sent:,} model steps sent no request[/dim]")
    if reused:
        saved = sum((Decimal(d["reuse_saved_usd"]) for d in daily), Decimal(0))
        console.print(
            f"[dim]per day, not in calls: {reused:,} items reused an identical text's "
            f"decision (saved {usd(saved)})[/dim]"
        )


def print_compare(console: Console, a: dict[str, Any], b: dict[str, Any]) -> None:
    t = _table(
        "Compare",
        [
            "metric",
            f"A: job {a['job_id']} {a['job_name']}",
            f"B: job {b['job_id']} {b['job_name']}",
            "B - A",
        ],
    )
    for metric, va, vb, d in compare_rows(a, b):
        t.add_row(metric, cell(va), cell(vb), cell(d))
    console.print(t)

"""Turning report data into a JSON object, terminal tables, JSONL and CSV.

The report is built as one JSON-ready dict (:func:`job_report` for the headline
keys, :func:`add_sections` for the analytics sections); the terminal tables, the
CSV and the HTML page (``cascade.report_html``) all render that dict.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from cascade.fmt import FitTable, money
from models import analytics as an
from models.reports import JobTotals, OutcomeRow, TierRow, nanos_to_usd
from workers.pricing import PriceTable, UnknownModelError

# A tier escalating more than this share of its items cascades too aggressively;
# less than LOW_ESCALATION (and it is not the last tier): thresholds may be too loose.
HIGH_ESCALATION = 0.5
LOW_ESCALATION = 0.02


def _usd(value: Decimal) -> str:
    return money(value)


def _plain(value: Decimal) -> str:
    """A decimal without an exponent: 0.000000777, never 7.77E-7."""
    return format(value, "f")


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
    unfinished = (
        totals.items_total
        - totals.items_done
        - totals.items_failed
        - totals.by_status.get("budget_capped", 0)
        - totals.by_status.get("review", 0)
    )
    return {
        "job_id": None if job is None else job.id,
        "job_name": None if job is None else job.name,
        "pipeline": None if job is None else job.pipeline_name,
        "status": None if job is None else job.status,
        "items_total": totals.items_total,
        "items_done": totals.items_done,
        "items_failed": totals.items_failed,
        "items_budget_capped": totals.by_status.get("budget_capped", 0),
        "items_paused_budget": totals.by_status.get("paused_budget", 0),
        "items_review": totals.by_status.get("review", 0),  # final for the machine
        "items_unfinished": unfinished,
        "partial": unfinished > 0,
        "budget_usd": _plain(nanos_to_usd(job.budget_nanos))
        if job is not None and job.budget_nanos is not None
        else None,
        "spent_usd": None if job is None else _plain(nanos_to_usd(job.spent_nanos)),
        "message": None if job is None else job.message,
        "lines_rejected": totals.lines_rejected,
        "model_calls": totals.model_calls,
        "steps_not_sent": totals.steps_not_sent,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": _plain(cost),
        "finished_cost_usd": _plain(done_cost),
        "baseline_cost_usd": _plain(baseline),
        "savings_usd": _plain(baseline - done_cost),
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
                "not_sent": t.not_sent,
                "fallbacks": t.fallbacks,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "cost_usd": _plain(t.cost_usd),
                "p50_ms": t.p50_ms,
                "p95_ms": t.p95_ms,
            }
            for t in tiers
        ],
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
        "fail",
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
    console.print(items_line(report), soft_wrap=True)
    console.print(savings_line(report), soft_wrap=True)
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
            f"budget {_usd(Decimal(report['budget_usd'] or '0'))}, "
            f"spent {_usd(Decimal(report['spent_usd'] or '0'))}: "
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


# ------------------------------------------------------------------ sections


def _money(nanos: int) -> str:
    return f"{nanos_to_usd(nanos):f}"  # never exponent notation


def _pct(part: int, whole: int) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


def escalation_warning(tier: an.FunnelTier, last: bool) -> str | None:
    """The funnel's warning for one tier, or None. A free tier (rules, local: no model
    call) escalating most items is doing its job: it takes only what it is sure of."""
    if tier.entered == 0 or last or (tier.calls == 0 and tier.not_sent == 0):
        return None
    if tier.escalation_rate > HIGH_ESCALATION:
        return "cascading too aggressively: escalates more than half its items"
    if tier.escalation_rate < LOW_ESCALATION:
        return "escalates almost nothing (< 2 %): thresholds may be too loose"
    return None


def cache_savings_nanos(
    prices: PriceTable | None, model: str, cache_read_tokens: int
) -> int | None:
    """cache_read tokens priced at input minus cache-read (the base rates); None if unpriced."""
    if prices is None:
        return None
    try:
        price = prices.price(model)
    except UnknownModelError:
        return None
    # 1 USD per million tokens is 1000 nano-USD per token.
    return int((cache_read_tokens * (price.input - price.cache_read) * 1000).to_integral_value())


def _latency(hist: Any) -> dict[str, int | None]:
    return {
        "p50_ms": hist.percentile(50),
        "p95_ms": hist.percentile(95),
        "p99_ms": hist.percentile(99),
        "max_ms": hist.max_ms,
    }


def _bucket(b: int) -> str:
    return f"{b / 10:.1f}-{(b + 1) / 10:.1f}"


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def add_sections(
    report: dict[str, Any],
    scope: an.Scope,
    funnel: list[an.FunnelTier],
    cost: an.Cost,
    e2e: an.EndToEnd,
    rel: an.Reliability,
    conf: list[an.ConfidenceBucket],
    agree: list[an.Agreement],
    daily: list[an.DailyRow],
    prices: PriceTable | None,
) -> dict[str, Any]:
    """Add the analytics sections to a report dict (in place; also returned)."""
    report["scope"] = {
        "job_ids": list(scope.job_ids),
        "pipeline": scope.pipeline,
        "since": _iso(scope.since),
        "until": _iso(scope.until),
        "label": scope.label,
    }
    report["funnel"] = [
        {
            "tier_index": t.tier_index,
            "tier": t.tier,
            "entered": t.entered,
            "accepted": t.accepted,
            "escalated": t.escalated,
            "failed": t.failed,
            "dead_lettered": t.dead_lettered,
            "escalation_rate": round(t.escalation_rate, 4),
            "warning": escalation_warning(t, n == len(funnel) - 1),
        }
        for n, t in enumerate(funnel)
    ]
    cache_rows = []
    cache_total = 0
    for m in cost.by_model:
        saved = cache_savings_nanos(prices, m.model, m.cache_read_tokens)
        cache_total += saved or 0
        cache_rows.append(
            {
                "model": m.model,
                "calls": m.calls,
                "input_tokens": m.input_tokens,
                "cache_read_tokens": m.cache_read_tokens,
                "cache_write_tokens": m.cache_write_tokens,
                "cache_savings_usd": None if saved is None else _money(saved),
            }
        )
    report["cost"] = {
        "total_usd": _money(cost.cost_nanos),
        "baseline_usd": _money(cost.baseline_nanos),
        "savings_usd": _money(cost.baseline_nanos - cost.cost_nanos),
        "savings_pct": _pct(cost.baseline_nanos - cost.cost_nanos, cost.baseline_nanos),
        "items": cost.items,
        "per_item_mean_usd": _money(cost.item_mean_nanos),
        "per_item_p95_usd": None if cost.item_p95_nanos is None else _money(cost.item_p95_nanos),
        "realtime_usd": _money(cost.realtime_nanos),
        "batch_usd": _money(cost.batch_nanos),
        "cache_savings_usd": _money(cache_total),
        "by_tier": [
            {
                "tier_index": t.tier_index,
                "tier": t.tier,
                "cost_usd": _money(t.cost_nanos),
                "share_pct": _pct(t.cost_nanos, cost.cost_nanos),
            }
            for t in funnel
        ],
        "by_label": [
            {
                "label": x.label,
                "items": x.items,
                "cost_usd": _money(x.cost_nanos),
                "baseline_usd": _money(x.baseline_nanos),
                "savings_usd": _money(x.baseline_nanos - x.cost_nanos),
            }
            for x in cost.by_label
        ],
        "by_model": cache_rows,
    }
    model_tiers = [t for t in funnel if t.calls]
    report["latency"] = {
        "tiers": [
            {"tier_index": t.tier_index, "tier": t.tier, "calls": t.calls, **_latency(t)}
            for t in model_tiers
        ],
        "end_to_end": {"items": e2e.items, **_latency(e2e)},
        # A full escalation visits every model tier once: the sum of each tier's p99
        # (a bad but plausible path) and of each tier's max (the worst seen).
        "worst_path_p99_ms": sum(t.percentile(99) or 0 for t in model_tiers),
        "worst_path_max_ms": sum(t.max_ms or 0 for t in model_tiers),
    }
    report["reliability"] = {
        "calls": rel.calls,
        "outcomes": dict(rel.outcomes),
        "fallbacks": [
            {"tier": f.tier, "link": f.link, "calls": f.calls, "ok": f.ok} for f in rel.fallbacks
        ],
        "breaker_openings": [
            {
                "breaker_key": o.breaker_key,
                "opened_at": o.opened_at.isoformat(),
                "closed_at": _iso(o.closed_at),
                "seconds": o.seconds,
                "reason": o.reason,
            }
            for o in rel.breaker_openings
        ],
        "drills": [
            {
                "breaker_key": d.breaker_key,
                "reason": d.reason,
                "started_at": d.started_at.isoformat(),
                "until": d.until.isoformat(),
                "cleared_at": _iso(d.cleared_at),
                "calls_diverted": d.calls_diverted,
            }
            for d in rel.drills
        ],
        "dead_lettered": rel.dead_lettered,
        "dead_letters": [{"error": e, "items": n} for e, n in rel.dead_letters],
    }
    report["confidence"] = {
        "histogram": [
            {"tier": b.tier, "label": b.label, "bucket": _bucket(b.bucket), "answers": b.answers}
            for b in conf
        ],
        "agreement": [
            {"tier": a.tier, "pairs": a.pairs, "agreed": a.agreed, "rate": round(a.rate, 4)}
            for a in agree
        ],
    }
    report["daily"] = [
        {
            "day": d.day.isoformat(),
            "pipeline": d.pipeline,
            "tier": d.tier,
            "items": d.items,
            "accepted": d.accepted,
            "escalated": d.escalated,
            "failed": d.failed,
            "calls": d.calls,
            "cost_usd": _money(d.cost_nanos),
            "baseline_cost_usd": _money(d.baseline_nanos),
            "p95_ms": d.p95_ms,
            "escalation_rate": round(d.escalated / d.items, 4) if d.items else 0.0,
            "not_sent": d.not_sent,
            "reused": d.reused,
            "reuse_saved_usd": _money(d.reuse_saved_nanos),
        }
        for d in daily
    ]
    return report


def _table(title: str, columns: list[str]) -> Table:
    t = FitTable(title=title)
    for n, col in enumerate(columns):
        t.add_column(col, justify="left" if n == 0 else "right", no_wrap=True)
    return t


def _s(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def print_sections(console: Console, r: dict[str, Any]) -> None:
    """The analytics sections as terminal tables, after :func:`print_report`'s table."""
    t = _table("Funnel", ["tier", "in", "accept", "escal", "fail", "dead", "escal %"])
    for f in r["funnel"]:
        t.add_row(
            f["tier"],
            str(f["entered"]),
            str(f["accepted"]),
            str(f["escalated"]),
            str(f["failed"]),
            str(f["dead_lettered"]),
            f"{f['escalation_rate'] * 100:.1f}",
        )
    console.print(t)
    for f in r["funnel"]:
        if f["warning"]:
            console.print(f"[yellow]warning:[/yellow] tier {f['tier']}: {f['warning']}")
    c = r["cost"]
    console.print(
        f"cost per item: mean {_usd(Decimal(c['per_item_mean_usd']))}, p95 "
        f"{'-' if c['per_item_p95_usd'] is None else _usd(Decimal(c['per_item_p95_usd']))}; "
        f"realtime {_usd(Decimal(c['realtime_usd']))}, batch {_usd(Decimal(c['batch_usd']))}; "
        f"cache saved {_usd(Decimal(c['cache_savings_usd']))}"
    )
    if Decimal(c.get("calibration_usd") or 0):  # shadow samples, not in any item's cost
        console.print(f"calibration spend (shadow samples): {_usd(Decimal(c['calibration_usd']))}")
    t = _table("Cost by label", ["label", "items", "cost", "baseline", "saved"])
    for x in c["by_label"]:
        t.add_row(
            _s(x["label"]),
            str(x["items"]),
            _usd(Decimal(x["cost_usd"])),
            _usd(Decimal(x["baseline_usd"])),
            _usd(Decimal(x["savings_usd"])),
        )
    console.print(t)
    lat = r["latency"]
    t = _table("Latency (model calls, ms)", ["tier", "calls", "p50", "p95", "p99", "max"])
    rows = [(x["tier"], str(x["calls"]), x) for x in lat["tiers"]]
    rows.append(("end to end", str(lat["end_to_end"]["items"]), lat["end_to_end"]))
    for name, n, x in rows:
        t.add_row(name, n, _s(x["p50_ms"]), _s(x["p95_ms"]), _s(x["p99_ms"]), _s(x["max_ms"]))
    console.print(t)
    console.print(
        f"worst-case full escalation: {lat['worst_path_p99_ms']} ms (sum of tier p99s), "
        f"{lat['worst_path_max_ms']} ms (sum of tier maxima)"
    )
    rel = r["reliability"]
    outcomes = ", ".join(f"{k} {v}" for k, v in rel["outcomes"].items())
    console.print(f"calls {rel['calls']}: {outcomes}")
    if rel["fallbacks"]:
        t = _table("Fallbacks by chain link", ["tier", "link", "calls", "ok"])
        for x in rel["fallbacks"]:
            t.add_row(x["tier"], x["link"], str(x["calls"]), str(x["ok"]))
        console.print(t)
    if rel["breaker_openings"]:
        t = _table("Breaker openings", ["breaker", "opened", "closed", "seconds", "reason"])
        for o in rel["breaker_openings"]:
            t.add_row(
                o["breaker_key"], o["opened_at"], _s(o["closed_at"]), _s(o["seconds"]), o["reason"]
            )
        console.print(t)
    if rel["drills"]:
        t = _table("Chaos drills", ["breaker", "started", "until", "cleared", "diverted"])
        for d in rel["drills"]:
            t.add_row(
                d["breaker_key"],
                d["started_at"],
                d["until"],
                _s(d["cleared_at"]),
                str(d["calls_diverted"]),
            )
        console.print(t)
    if rel["dead_letters"]:
        t = _table(f"Dead letters ({rel['dead_lettered']})", ["reason", "items"])
        for x in rel["dead_letters"]:
            t.add_row(x["error"], str(x["items"]))
        console.print(t)
    _print_confidence(console, r["confidence"])
    if r["daily"]:
        t = _table(
            "Per day", ["day", "pipeline", "tier", "items", "escal", "fail", "calls", "cost", "p95"]
        )
        for d in r["daily"]:
            t.add_row(
                d["day"],
                d["pipeline"],
                d["tier"],
                str(d["items"]),
                str(d["escalated"]),
                str(d["failed"]),
                str(d["calls"]),
                _usd(Decimal(d["cost_usd"])),
                _s(d["p95_ms"]),
            )
        console.print(t)
        _print_daily_not_calls(console, r["daily"])


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
                    yield section, _s(row[subject]), k, v
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


def _print_daily_not_calls(console: Console, daily: list[dict[str, Any]]) -> None:
    """Under the per-day table: the steps it does not count as calls, when there are any."""
    not_sent = sum(d["not_sent"] for d in daily)
    reused = sum(d["reused"] for d in daily)
    if not_sent:
        console.print(f"[dim]per day, not in calls: {not_sent:,} model steps sent no request[/dim]")
    if reused:
        saved = sum((Decimal(d["reuse_saved_usd"]) for d in daily), Decimal(0))
        console.print(
            f"[dim]per day, not in calls: {reused:,} items reused an identical text's "
            f"decision (saved {_usd(saved)})[/dim]"
        )


def write_report_csv(r: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """One CSV in long form: ``section,subject,metric,value``."""
    writer = csv.writer(out)
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
        t.add_row(metric, _s(va), _s(vb), _s(d))
    console.print(t)

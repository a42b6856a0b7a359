"""The report's analytics sections: typed analytics values into the report dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cascade.render import tier_counts, usd_text
from common.lifecycle import Outcome, Status
from models import analytics as an
from workers.pricing import PriceTable, UnknownModelError

# A tier escalating more than this share of its items cascades too aggressively;
# less than LOW_ESCALATION (and it is not the last tier): thresholds may be too loose.
HIGH_ESCALATION = 0.5
LOW_ESCALATION = 0.02


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


@dataclass(frozen=True, slots=True)
class Sections:
    """The analytics values a report's sections are made of (``models.analytics``)."""

    scope: an.Scope
    funnel: list[an.FunnelTier]
    cost: an.Cost
    e2e: an.EndToEnd
    rel: an.Reliability
    conf: list[an.ConfidenceBucket]
    agree: list[an.Agreement]
    daily: list[an.DailyRow]


def add_sections(report: dict[str, Any], s: Sections, prices: PriceTable | None) -> dict[str, Any]:
    """Add the analytics sections to a report dict (in place; also returned)."""
    report["scope"] = {
        "job_ids": list(s.scope.job_ids),
        "pipeline": s.scope.pipeline,
        "since": _iso(s.scope.since),
        "until": _iso(s.scope.until),
        "label": s.scope.label,
    }
    report["funnel"] = [
        _funnel_tier(t, last=n == len(s.funnel) - 1) for n, t in enumerate(s.funnel)
    ]
    report["cost"] = _cost(s.cost, s.funnel, prices)
    report["latency"] = _latency_section(s.funnel, s.e2e)
    report["reliability"] = _reliability(s.rel)
    report["confidence"] = {
        "histogram": [
            {"tier": b.tier, "label": b.label, "bucket": _bucket(b.bucket), "answers": b.answers}
            for b in s.conf
        ],
        "agreement": [
            {"tier": a.tier, "pairs": a.pairs, "agreed": a.agreed, "rate": round(a.rate, 4)}
            for a in s.agree
        ],
    }
    report["daily"] = [_day(d) for d in s.daily]
    return report


def _funnel_tier(t: an.FunnelTier, *, last: bool) -> dict[str, Any]:
    return {
        **tier_counts(t),
        "dead_lettered": t.dead_lettered,
        "escalation_rate": round(t.escalation_rate, 4),
        "warning": escalation_warning(t, last),
    }


def _by_model(cost: an.Cost, prices: PriceTable | None) -> tuple[list[dict[str, Any]], int]:
    """Tokens per model with what cache reads saved; and the total saved (nano-USD)."""
    rows = []
    total = 0
    for m in cost.by_model:
        saved = cache_savings_nanos(prices, m.model, m.cache_read_tokens)
        total += saved or 0
        rows.append(
            {
                "model": m.model,
                "calls": m.calls,
                "input_tokens": m.input_tokens,
                "cache_read_tokens": m.cache_read_tokens,
                "cache_write_tokens": m.cache_write_tokens,
                "cache_savings_usd": None if saved is None else usd_text(saved),
            }
        )
    return rows, total


def _cost(cost: an.Cost, funnel: list[an.FunnelTier], prices: PriceTable | None) -> dict[str, Any]:
    by_model, cache_total = _by_model(cost, prices)
    p95 = cost.item_p95_nanos
    return {
        "total_usd": usd_text(cost.cost_nanos),
        "baseline_usd": usd_text(cost.baseline_nanos),
        "savings_usd": usd_text(cost.baseline_nanos - cost.cost_nanos),
        "savings_pct": _pct(cost.baseline_nanos - cost.cost_nanos, cost.baseline_nanos),
        "items": cost.items,
        "per_item_mean_usd": usd_text(cost.item_mean_nanos),
        "per_item_p95_usd": None if p95 is None else usd_text(p95),
        "realtime_usd": usd_text(cost.realtime_nanos),
        "batch_usd": usd_text(cost.batch_nanos),
        "cache_savings_usd": usd_text(cache_total),
        "by_tier": [
            {
                "tier_index": t.tier_index,
                "tier": t.tier,
                "cost_usd": usd_text(t.cost_nanos),
                "share_pct": _pct(t.cost_nanos, cost.cost_nanos),
            }
            for t in funnel
        ],
        "by_label": [
            {
                "label": x.label,
                "items": x.items,
                "cost_usd": usd_text(x.cost_nanos),
                "baseline_usd": usd_text(x.baseline_nanos),
                "savings_usd": usd_text(x.baseline_nanos - x.cost_nanos),
            }
            for x in cost.by_label
        ],
        "by_model": by_model,
    }


def _latency_section(funnel: list[an.FunnelTier], e2e: an.EndToEnd) -> dict[str, Any]:
    model_tiers = [t for t in funnel if t.calls]
    return {
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


def _reliability(rel: an.Reliability) -> dict[str, Any]:
    return {
        "calls": rel.calls,
        "not_sent": rel.not_sent,
        "outcomes": dict(rel.outcomes),
        "fallbacks": [
            {"tier": f.tier, "link": f.link, "calls": f.calls, Outcome.OK: f.ok}
            for f in rel.fallbacks
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


def _day(d: an.DailyRow) -> dict[str, Any]:
    return {
        "day": d.day.isoformat(),
        "pipeline": d.pipeline,
        "tier": d.tier,
        "items": d.items,
        "accepted": d.accepted,
        "escalated": d.escalated,
        Status.FAILED: d.failed,
        "calls": d.calls,
        "cost_usd": usd_text(d.cost_nanos),
        "baseline_cost_usd": usd_text(d.baseline_nanos),
        "p95_ms": d.p95_ms,
        "escalation_rate": round(d.escalated / d.items, 4) if d.items else 0.0,
        "not_sent": d.not_sent,
        Outcome.REUSED: d.reused,
        "reuse_saved_usd": usd_text(d.reuse_saved_nanos),
    }

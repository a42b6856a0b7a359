"""A whole report dict with known numbers, built the way `cascade report` builds it.

The analytics values go through the real ``job_report``, ``add_sections``,
``add_calibration`` and ``add_cache_sections``, so the renderers' tests read the
exact shape the command hands them, not a hand-written imitation of it.

Tiers: rules (free), small (claude-haiku-5-5), large (claude-sonnet-5-5).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

from cascade.cli_report import add_calibration
from cascade.render import job_report
from cascade.render_cache import add_cache_sections
from cascade.render_sections import Sections, add_sections
from models import analytics as an
from models.analytics.reliability import BreakerOpening, DrillRow, FallbackLink
from models.analytics.spend import Calibration, LabelCost, ModelTokens
from models.cache_report import Reuse, TierCache
from models.reports import JobTotals, TierRow
from workers.pricing import PriceTable

OPENED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CLOSED = datetime(2026, 12, 1, 9, 0, 45, tzinfo=UTC)

FUNNEL = [
    an.FunnelTier(0, "rules", 10, 4, 6, 0, 0, 0, 0, 0, 0, 0, {}),
    # small: 6 in, 3 accepted, 2 escalated, 1 failed (dead-lettered here)
    an.FunnelTier(1, "small", 6, 3, 2, 1, 1, 7, 0, 700, 70, 2_000_000, {100: 3, 200: 3, 900: 1}),
    an.FunnelTier(2, "large", 2, 2, 0, 0, 0, 2, 1, 400, 40, 3_000_000, {1000: 1, 1500: 1}),
]
COST = an.Cost(
    items=10,
    cost_nanos=5_000_000,
    baseline_nanos=20_000_000,
    item_mean_nanos=500_000,
    item_p95_nanos=2_000_000,
    realtime_nanos=3_000_000,
    batch_nanos=2_000_000,
    by_label=[LabelCost("spam", 6, 4_000_000, 12_000_000), LabelCost(None, 1, 1_000, 2_000_000)],
    by_model=[
        # 1,000 cache-read tokens at haiku's input 0.10 less its read 0.01: 90,000 nanos
        ModelTokens("claude-haiku-5-5", 7, 700, 1_000, 300),
        ModelTokens("someone-elses-model", 2, 400, 500, 0),  # not in the price table
    ],
)
RELIABILITY = an.Reliability(
    calls=9,
    outcomes={"ok": 8, "transient": 1},
    fallbacks=[FallbackLink(2, "large", "bedrock:claude-sonnet-5-5", 1, 1)],
    dead_letters=[("malformed output", 1)],
    dead_lettered=1,
    breaker_openings=[
        BreakerOpening("anthropic:claude-haiku-5-5", OPENED, CLOSED, "5 failures in 60 s"),
        BreakerOpening("anthropic:claude-sonnet-5-5", OPENED, None, "overloaded"),
    ],
    drills=[DrillRow("anthropic:claude-haiku-5-5", "game day", OPENED, CLOSED, None, 4)],
)
DAILY = [
    an.DailyRow(date(2026, 12, 1), "triage", 1, "small", 4, 2, 1, 0, 4, 1_000_000, 4_000_000, 200),
    an.DailyRow(
        date(2026, 12, 2), "triage", 1, "small", 2, 1, 1, 1, 3, 1_000_000, 2_000_000, None,
        not_sent=2, reused=3, reuse_saved_nanos=1_500,
    ),
]  # fmt: skip
CACHE = [
    # realtime: 1,000 written at 5 m, 10,000 read: (11,000 x 0.10 - 125 - 100) x 1,000
    TierCache(1, "small", "claude-haiku-5-5", False, 7, 4, 3, 1, 700, 1_000, 10_000, 1),
    # batch: written at 1 h, then half price: (1,100 - 200 - 100) x 1,000 x 0.5
    TierCache(1, "small", "claude-haiku-5-5", True, 5, 0, 0, 0, 500, 1_000, 10_000, 1),
    TierCache(2, "large", "someone-elses-model", False, 2, 2, 1, 1, 400, 0, 0, 1),
]
SMALL_CACHE_SAVED = "0.000875000"
BATCH_CACHE_SAVED = "0.000400000"


def job(**changes: Any) -> SimpleNamespace:
    values: dict[str, Any] = {
        "id": 7,
        "name": "tickets",
        "pipeline_name": "triage",
        "status": "done",
        "budget_nanos": None,
        "spent_nanos": 5_000_000,
        "message": None,
    }
    return SimpleNamespace(**(values | changes))


def totals(**changes: Any) -> JobTotals:
    values: dict[str, Any] = {
        "job_id": 7,
        "items_total": 10,
        "by_status": {"done": 9, "failed": 1},
        "items_done": 9,
        "items_failed": 1,
        "lines_rejected": 2,
        "cost_nanos": 5_000_000,
        "baseline_nanos": 20_000_000,
        "model_calls": 9,
        "input_tokens": 1_100,
        "output_tokens": 110,
        "finished_cost_nanos": 5_000_000,
        "finished_baseline_nanos": 20_000_000,
    }
    return JobTotals(**(values | changes))


def tier_rows() -> list[TierRow]:
    return an.tier_rows(FUNNEL, 7)


def full_report(
    *, the_job: Any = None, sums: JobTotals | None = None, prices: PriceTable | None = None
) -> dict[str, Any]:
    """The report of job 7 with every section filled in."""
    report = job_report(the_job or job(), sums or totals(), tier_rows())
    sections = Sections(
        scope=an.Scope(job_ids=(7,)),
        funnel=FUNNEL,
        cost=COST,
        e2e=an.EndToEnd(9, {0: 1, 100: 4, 1300: 4}),
        rel=RELIABILITY,
        conf=[
            an.ConfidenceBucket(1, "small", "spam", 9, 3),
            an.ConfidenceBucket(1, "small", "ham", 5, 2),
        ],
        agree=[an.Agreement(1, "small", 2, 1)],
        daily=DAILY,
    )
    table = prices or PriceTable.load()
    add_sections(report, sections, table)
    add_calibration(
        report, Calibration(samples=3, items=3, cost_nanos=300_000, agreed=2, answered=3)
    )
    add_cache_sections(report, CACHE, Reuse(items=3, waiting=1, saved_nanos=1_500), table)
    report["offline"] = False
    report["scope_text"] = "all jobs"
    return report

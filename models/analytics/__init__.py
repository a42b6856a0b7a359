"""Every query behind ``cascade report``'s sections: funnel, cost, latency,
reliability, confidence, per day. Pure SQLAlchemy, typed, no printing.

A :class:`Scope` selects a set of items (by job, pipeline, final label, and the
UTC day the item was created); every section is computed over those items and
their attempts, except :func:`daily`, which buckets *attempts* by the UTC day they
were made (exactly the ``report_daily`` view, same SQL body; see models.rollup).

Percentiles are nearest rank, like the views: the p-th percentile of N values
sorted ascending is the value at rank ceil(p * N / 100). Latencies are fetched
as a histogram (value, count) — a few thousand rows whatever the job size — and
ranked here, exactly, on both databases.

Money stays integer nano-USD.

One module per group of sections, all built on :mod:`models.analytics.scope` and on
:mod:`models.reports` (the per-job queries), never the other way round; this package
names them all, so callers write ``analytics.funnel(...)``.
"""

from __future__ import annotations

from models.analytics.answers import Agreement, ConfidenceBucket, agreement, bucket_of, confidence
from models.analytics.funnel import FunnelTier, funnel, job_totals, tier_rows, totals
from models.analytics.per_day import DailyRow, daily
from models.analytics.reliability import (
    BreakerOpening,
    DrillRow,
    EndToEnd,
    FallbackLink,
    Reliability,
    breaker_openings,
    drills,
    end_to_end,
    reliability,
)
from models.analytics.scope import (
    MODEL_OUTCOMES,
    NOT_TIER_ANSWERS,
    PERCENTILES,
    SHADOW,
    Scope,
    for_reports,
    nearest_rank,
)
from models.analytics.spend import (
    Calibration,
    Cost,
    LabelCost,
    ModelTokens,
    calibration_spend,
    cost,
)

__all__ = [
    "MODEL_OUTCOMES",
    "NOT_TIER_ANSWERS",
    "PERCENTILES",
    "SHADOW",
    "Agreement",
    "BreakerOpening",
    "Calibration",
    "ConfidenceBucket",
    "Cost",
    "DailyRow",
    "DrillRow",
    "EndToEnd",
    "FallbackLink",
    "FunnelTier",
    "LabelCost",
    "ModelTokens",
    "Reliability",
    "Scope",
    "agreement",
    "breaker_openings",
    "bucket_of",
    "calibration_spend",
    "confidence",
    "cost",
    "daily",
    "drills",
    "end_to_end",
    "for_reports",
    "funnel",
    "job_totals",
    "nearest_rank",
    "reliability",
    "tier_rows",
    "totals",
]

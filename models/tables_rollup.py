"""The daily rollup behind ``report_daily``: additive counters per (UTC day, pipeline,
tier) and an exact model-call latency histogram, covering attempts up to a watermark.

See ``models.rollup`` (the refresh) and docs/views.md (how the view merges them with
the attempts after the watermark).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base


class _DayTier:
    """The key both rollup tables begin with: one pipeline's tier on one UTC day.

    ``sort_order=-1`` keeps these columns first, where the migration put them.
    """

    day: Mapped[date] = mapped_column(Date, primary_key=True, sort_order=-1)
    pipeline: Mapped[str] = mapped_column(String(40), primary_key=True, sort_order=-1)
    tier_index: Mapped[int] = mapped_column(SmallInteger, primary_key=True, sort_order=-1)
    tier: Mapped[str] = mapped_column(String(40), primary_key=True, sort_order=-1)


class RollupDaily(_DayTier, Base):
    """Sums over non-shadow attempts with id <= ``rollup_mark.last_id``."""

    __tablename__ = "rollup_daily"

    # first step of an item at this tier on this day (so the sum is distinct items)
    items: Mapped[int] = mapped_column(BigInteger)
    accepted: Mapped[int] = mapped_column(BigInteger)
    escalated: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    calls: Mapped[int] = mapped_column(BigInteger)
    cost_nanos: Mapped[int] = mapped_column(BigInteger)
    baseline_nanos: Mapped[int] = mapped_column(BigInteger)
    # model steps that sent no request (breaker open, drill): not in ``calls`` (0012)
    not_sent: Mapped[int] = mapped_column(BigInteger)
    # items that took an identical text's decision, and what their sources cost (0012)
    reused: Mapped[int] = mapped_column(BigInteger)
    reuse_saved_nanos: Mapped[int] = mapped_column(BigInteger)


class RollupDailyLatency(_DayTier, Base):
    """How many requests sent took exactly ``latency_ms`` (so the p95 stays exact)."""

    __tablename__ = "rollup_daily_latency"

    latency_ms: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class RollupMark(Base):
    """One row (id 1): the rollup holds exactly the attempts with id <= last_id."""

    __tablename__ = "rollup_mark"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(BigInteger)
    refreshed_at: Mapped[datetime | None]

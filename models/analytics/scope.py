"""What a report covers (:class:`Scope`) and the filters every section applies to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.orm import Session

from common.lifecycle import Outcome
from models.tables import Attempt, Item, Job

MODEL_OUTCOMES: tuple[str, ...] = (
    Outcome.OK,
    Outcome.REFUSAL,
    Outcome.MALFORMED,
    Outcome.TRANSIENT,
    Outcome.PERMANENT,
    Outcome.CONTEXT,
    Outcome.SPEND_LIMIT,
)
PERCENTILES: tuple[int, ...] = (50, 95, 99)
SHADOW = "shadow"  # a sample sent to the next tier: calibration spend, not the item's
# Steps whose label is not the tier's own answer (checks, and shadows seen from below).
NOT_TIER_ANSWERS: tuple[str, ...] = ("shadow", "consistency", "verifier")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which items a report covers; every field narrows it (empty = no filter)."""

    job_ids: tuple[int, ...] = ()
    pipeline: str | None = None
    since: date | None = None  # UTC day, inclusive
    until: date | None = None  # UTC day, inclusive
    label: str | None = None  # the item's final label

    @property
    def item_level(self) -> bool:
        """True when the scope filters items, not only whole jobs."""
        return self.label is not None or self.since is not None or self.until is not None


def bounds(scope: Scope) -> tuple[datetime | None, datetime | None]:
    lo = datetime.combine(scope.since, time(), UTC) if scope.since else None
    hi = datetime.combine(scope.until + timedelta(days=1), time(), UTC) if scope.until else None
    return lo, hi


def in_range(scope: Scope, at: Any) -> list[ColumnElement[bool]]:
    """The scope's days as conditions on the time column ``at`` (none for an open end)."""
    lo, hi = bounds(scope)
    conds: list[ColumnElement[bool]] = []
    if lo is not None:
        conds.append(at >= lo)
    if hi is not None:
        conds.append(at < hi)
    return conds


def job_filter(scope: Scope, job_col: Any) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if scope.job_ids:
        conds.append(job_col.in_(scope.job_ids))
    if scope.pipeline is not None:
        conds.append(job_col.in_(select(Job.id).where(Job.pipeline_name == scope.pipeline)))
    return conds


def item_filter(scope: Scope) -> list[ColumnElement[bool]]:
    conds = job_filter(scope, Item.job_id)
    if scope.label is not None:
        conds.append(Item.label == scope.label)
    return conds + in_range(scope, Item.created_at)


def attempt_filter(scope: Scope) -> list[ColumnElement[bool]]:
    conds = job_filter(scope, Attempt.job_id)
    if scope.item_level:
        conds.append(Attempt.item_id.in_(select(Item.id).where(*item_filter(scope))))
    return conds


def as_int(value: Any) -> int:
    return 0 if value is None else int(value)


def nearest_rank(hist: Mapping[int, int], p: int) -> int | None:
    """The p-th percentile (nearest rank) of values given as {value: count}."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = (p * n + 99) // 100
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)  # unreachable: rank <= n


def for_reports(session: Session) -> None:
    """Postgres settings for the rest of this transaction, for report queries.

    JIT off: the planner prices the daily report's per-step lookups (and a job's
    few hundred thousand attempt rows) high enough to JIT-compile, which costs up
    to ~1 s per query for queries that run in a fraction of that. More work_mem:
    the merged latency histogram of a month is sorted in memory, not on disk.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT set_config('jit', 'off', true)"))
        session.execute(text("SELECT set_config('work_mem', '64MB', true)"))

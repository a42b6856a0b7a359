"""Report queries for prompt caching (per tier) and reused decisions (repeats of a text).

Token sums only; the cascade layer prices them (``cascade/render_cache.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session, aliased

from common.lifecycle import Status
from models.analytics.scope import Scope, as_int, attempt_filter, item_filter
from models.tables import Attempt, Item

NOT_CALLS = ("rules", "local", "reuse")
# A repeat that took its source's decision and is finished (the source's call, saved).
REUSE_SETTLED = (Status.DONE, Status.BUDGET_CAPPED)


@dataclass(frozen=True, slots=True)
class TierCache:
    """One tier's model calls on one model, realtime or batch: how the cache served them."""

    tier_index: int
    tier: str
    model: str
    is_batch: bool
    calls: int
    cached_calls: int  # calls that wrote or read the cache (a marked, long-enough prefix)
    hits: int  # calls that read it
    writes: int  # calls that wrote it
    input_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    cost_nanos: int


def cache_by_tier(session: Session, scope: Scope) -> list[TierCache]:
    read = Attempt.cache_read_tokens > 0
    wrote = Attempt.cache_write_tokens > 0
    rows = session.execute(
        select(
            Attempt.tier_index,
            Attempt.tier,
            Attempt.model,
            Attempt.is_batch,
            func.count(),
            func.sum(case((read | wrote, 1), else_=0)),
            func.sum(case((read, 1), else_=0)),
            func.sum(case((wrote, 1), else_=0)),
            func.sum(Attempt.input_tokens),
            func.sum(Attempt.cache_write_tokens),
            func.sum(Attempt.cache_read_tokens),
            func.sum(Attempt.cost_nanos),
        )
        .where(*attempt_filter(scope), Attempt.role.not_in(NOT_CALLS))
        .group_by(Attempt.tier_index, Attempt.tier, Attempt.model, Attempt.is_batch)
        .order_by(Attempt.tier_index, Attempt.tier, Attempt.model, Attempt.is_batch)
    ).all()
    return [
        TierCache(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), *(as_int(v) for v in r[4:]))
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Reuse:
    items: int  # items that took an identical text's decision (zero calls)
    waiting: int  # repeats still waiting on a text in flight
    saved_nanos: int  # what their sources' calls cost: what classifying them again would


def reuse_summary(session: Session, scope: Scope) -> Reuse:
    source = aliased(Item)
    row = session.execute(
        select(
            func.sum(case((Item.status.in_(REUSE_SETTLED), 1), else_=0)),
            func.sum(case((Item.status == Status.REUSE_WAIT, 1), else_=0)),
            func.sum(case((Item.status.in_(REUSE_SETTLED), source.cost_nanos), else_=0)),
        )
        .join(source, source.id == Item.reuse_of)
        .where(*item_filter(scope), and_(Item.reuse_of.is_not(None)))
    ).one()
    return Reuse(as_int(row[0]), as_int(row[1]), as_int(row[2]))

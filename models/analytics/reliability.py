"""Latency end to end, and reliability: outcomes, fallbacks, breakers, drills."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from common.lifecycle import NOT_SENT, Outcome, Role, Status
from models.analytics.scope import (
    MODEL_OUTCOMES,
    Scope,
    as_int,
    attempt_filter,
    in_range,
    item_filter,
    nearest_rank,
)
from models.core import count_rows
from models.db import as_utc
from models.tables import Attempt, Item
from models.tables_resilience import BreakerEvent, Drill


@dataclass(frozen=True, slots=True)
class EndToEnd:
    """Items' summed model-call latency (``items.latency_ms``), over finished items."""

    items: int
    latency: Mapping[int, int]

    def percentile(self, p: int) -> int | None:
        return nearest_rank(self.latency, p)

    @property
    def max_ms(self) -> int | None:
        return max(self.latency) if self.latency else None


def end_to_end(session: Session, scope: Scope) -> EndToEnd:
    hist = {
        int(ms): as_int(n)
        for ms, n in session.execute(
            select(Item.latency_ms, func.count())
            .where(*item_filter(scope), Item.status.in_((Status.DONE, Status.FAILED)))
            .group_by(Item.latency_ms)
        )
    }
    return EndToEnd(items=sum(hist.values()), latency=hist)


@dataclass(frozen=True, slots=True)
class FallbackLink:
    tier_index: int
    tier: str
    link: str  # provider:model
    calls: int
    ok: int


@dataclass(frozen=True, slots=True)
class BreakerOpening:
    breaker_key: str
    opened_at: datetime
    closed_at: datetime | None  # None: still open (no later 'closed' for this key)
    reason: str

    @property
    def seconds(self) -> float | None:
        if self.closed_at is None:
            return None
        return (self.closed_at - self.opened_at).total_seconds()


@dataclass(frozen=True, slots=True)
class DrillRow:
    breaker_key: str
    reason: str
    started_at: datetime
    until: datetime
    cleared_at: datetime | None
    calls_diverted: int


@dataclass(frozen=True, slots=True)
class Reliability:
    calls: int  # requests sent (shadow samples included)
    outcomes: Mapping[str, int]  # every MODEL_OUTCOMES key, plus 'retried' and 'fell_back'
    fallbacks: list[FallbackLink]
    dead_letters: list[tuple[str, int]]  # (error, items), most frequent first
    dead_lettered: int
    breaker_openings: list[BreakerOpening] = field(default_factory=list)
    drills: list[DrillRow] = field(default_factory=list)
    not_sent: int = 0  # steps that sent no request (breaker open, drill, reuse, rules)


def breaker_openings(session: Session, scope: Scope) -> list[BreakerOpening]:
    """Each transition into 'open', paired with the next transition into 'closed' of
    the same key (half-open probes that re-open extend the same opening).

    Breakers are fleet-wide, so only the time range applies (events whose ``at``
    falls in it); the job, pipeline and label filters do not.
    """
    conds = in_range(scope, BreakerEvent.at)
    out: list[BreakerOpening] = []
    open_since: dict[str, tuple[datetime, str]] = {}
    for key, to_state, reason, at in session.execute(
        select(
            BreakerEvent.breaker_key, BreakerEvent.to_state, BreakerEvent.reason, BreakerEvent.at
        )
        .where(*conds)
        .order_by(BreakerEvent.breaker_key, BreakerEvent.at, BreakerEvent.id)
    ):
        if to_state == "open" and key not in open_since:
            open_since[key] = (as_utc(at), reason)
        elif to_state == "closed" and key in open_since:
            opened, why = open_since.pop(key)
            out.append(BreakerOpening(key, opened, as_utc(at), why))
    out.extend(BreakerOpening(k, at, None, why) for k, (at, why) in open_since.items())
    return sorted(out, key=lambda o: (o.opened_at, o.breaker_key))


def drills(session: Session, scope: Scope) -> list[DrillRow]:
    """Chaos drills that started in the time range (fleet-wide, like breakers)."""
    conds = in_range(scope, Drill.started_at)
    return [
        DrillRow(
            r.breaker_key,
            r.reason,
            as_utc(r.started_at),
            as_utc(r.until),
            None if r.cleared_at is None else as_utc(r.cleared_at),
            r.calls_diverted,
        )
        for r in session.execute(select(Drill).where(*conds).order_by(Drill.started_at)).scalars()
    ]


def reliability(session: Session, scope: Scope, dead_letter_limit: int = 20) -> Reliability:
    where = [*attempt_filter(scope), Attempt.role != "rules"]
    outcomes: dict[str, int] = dict.fromkeys(MODEL_OUTCOMES, 0)
    calls = not_sent = 0
    for outcome, n in session.execute(
        select(Attempt.outcome, func.count()).where(*where).group_by(Attempt.outcome)
    ):
        outcomes[str(outcome)] = as_int(n)
        if outcome in NOT_SENT:
            not_sent += as_int(n)
        else:
            calls += as_int(n)
    retried, fell_back = session.execute(
        select(
            func.sum(case((Attempt.decision.is_(None), 1), else_=0)),
            func.sum(case((Attempt.role == Role.FALLBACK, 1), else_=0)),
        ).where(*where)
    ).one()
    outcomes["retried"] = as_int(retried)
    outcomes["fell_back"] = as_int(fell_back)
    links = [
        FallbackLink(int(r[0]), str(r[1]), f"{r[2]}:{r[3]}", as_int(r[4]), as_int(r[5]))
        for r in session.execute(
            select(
                Attempt.tier_index,
                Attempt.tier,
                Attempt.provider,
                Attempt.model,
                func.count(),
                func.sum(case((Attempt.outcome == Outcome.OK, 1), else_=0)),
            )
            .where(*where, Attempt.role == Role.FALLBACK)
            .group_by(Attempt.tier_index, Attempt.tier, Attempt.provider, Attempt.model)
            .order_by(Attempt.tier_index, func.count().desc(), Attempt.provider, Attempt.model)
        )
    ]
    failed = [*item_filter(scope), Item.status == Status.FAILED]
    dead = [
        (str(err) if err is not None else "(no reason recorded)", as_int(n))
        for err, n in session.execute(
            select(Item.error, func.count())
            .where(*failed)
            .group_by(Item.error)
            .order_by(func.count().desc(), Item.error)
            .limit(dead_letter_limit)
        )
    ]
    dead_total = count_rows(session, Item, *failed)
    return Reliability(
        calls=calls,
        outcomes=outcomes,
        fallbacks=links,
        dead_letters=dead,
        dead_lettered=dead_total,
        breaker_openings=breaker_openings(session, scope),
        drills=drills(session, scope),
        not_sent=not_sent,
    )

"""The sweep's view of the ledger: items no message carries, one sweeper at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, text, tuple_
from sqlalchemy.orm import Session

from common.lifecycle import (
    RUNNING,
    Phase,
    Status,
    phase_of,
)
from models.ledger.claims import SWEEP_LOCK_KEY, _postgres
from models.repo import ITEMS, utcnow


# -- sweeping -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Stray:
    job_id: int
    tier_index: int
    phase: Phase
    ids: list[int]


def try_sweep_lock(session: Session) -> bool:
    """Take the fleet's sweep lock for this transaction (Postgres); True if we have it.

    SQLite is the embedded runtime: one process, one sweeper.
    """
    if not _postgres(session):
        return True
    got = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_KEY})
    return bool(got.scalar())


def _waiting(phase: Phase) -> ColumnElement[bool]:
    """Items waiting for a message of ``phase``. A deferred item waits in 'fallback' on
    purpose (its message's countdown): only one never deferred is waiting for nothing."""
    if phase == Phase.FALLBACK:
        return and_(ITEMS.c.status == Status.FALLBACK, ITEMS.c.deferrals == 0)
    return ITEMS.c.status == Status.PENDING


def waiting_tiers(session: Session, *, idle_s: float) -> list[tuple[int, int, Phase]]:
    """(job, tier, phase) with items waiting for a message of that phase for longer than
    ``idle_s``: the sweeper asks the broker whether a message still carries them (see
    :func:`strays`)."""
    before = utcnow() - timedelta(seconds=idle_s)
    out: list[tuple[int, int, Phase]] = []
    for phase in (Phase.TIER, Phase.FALLBACK):
        rows = session.execute(
            select(ITEMS.c.job_id, ITEMS.c.tier_index)
            .where(_waiting(phase), ITEMS.c.updated_at < before)
            .distinct()
        ).all()
        out += [(r.job_id, r.tier_index, phase) for r in rows]
    return out


def strays(
    session: Session,
    *,
    idle_s: int,
    fallback_idle_s: int | None = None,
    quiet: Sequence[tuple[int, int, Phase]] = (),
    quiet_idle_s: float = 0,
    limit: int = 10_000,
) -> list[Stray]:
    """Unfinished items nobody is working on: waiting too long, or their lease expired.

    Items waiting at a tier count as lost after ``idle_s``; items waiting for the
    fallback chain (possibly deferred on purpose) after ``fallback_idle_s``; either,
    never deferred, after ``quiet_idle_s`` at a (job, tier, phase) of ``quiet``, whose
    queue holds no message (a broker that lost its messages).
    """
    now = utcnow()
    idle_before = now - timedelta(seconds=idle_s)
    fallback_before = now - timedelta(seconds=fallback_idle_s or idle_s)
    lost = [
        and_(ITEMS.c.status == Status.PENDING, ITEMS.c.updated_at < idle_before),
        and_(ITEMS.c.status == Status.FALLBACK, ITEMS.c.updated_at < fallback_before),
        and_(ITEMS.c.status.in_(list(RUNNING)), ITEMS.c.lease_until < now),
    ]
    for phase in (Phase.TIER, Phase.FALLBACK):
        at = [(job_id, tier_index) for job_id, tier_index, p in quiet if p == phase]
        if at:
            lost.append(
                and_(
                    _waiting(phase),
                    ITEMS.c.updated_at < now - timedelta(seconds=quiet_idle_s),
                    tuple_(ITEMS.c.job_id, ITEMS.c.tier_index).in_(at),
                )
            )
    stmt = (
        select(ITEMS.c.job_id, ITEMS.c.tier_index, ITEMS.c.status, ITEMS.c.id)
        .where(or_(*lost))
        .order_by(ITEMS.c.id)
        .limit(limit)
    )
    if _postgres(session):
        # locked in id order before they are touched below (no deadlock with a claim or
        # a settle); one another transaction holds is being worked on: not a stray
        stmt = stmt.with_for_update(skip_locked=True)
    rows = session.execute(stmt).all()
    groups: dict[tuple[int, int, Phase], list[int]] = {}
    for r in rows:
        groups.setdefault((r.job_id, r.tier_index, phase_of(r.status)), []).append(r.id)
    # Touch them so a second sweeper pass does not re-send the same items at once.
    if rows:
        session.execute(
            ITEMS.update()
            .where(
                ITEMS.c.id.in_([r.id for r in rows]),
                ITEMS.c.status.in_((Status.PENDING, Status.FALLBACK)),
            )
            .values(updated_at=now)
        )
    return [Stray(j, t, p, ids) for (j, t, p), ids in groups.items()]


def mark_unsent(session: Session, ids: Sequence[int]) -> None:
    """Items whose message could not be published: the next sweep re-sends them."""
    if ids:
        session.execute(
            ITEMS.update()
            .where(ITEMS.c.id.in_(list(ids)), ITEMS.c.status.in_((Status.PENDING, Status.FALLBACK)))
            .values(updated_at=datetime(2000, 1, 1, tzinfo=UTC))
        )

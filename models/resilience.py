"""Breaker events and chaos drills: written by workers and the CLI, read by reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.tables_resilience import BreakerEvent, Drill


@dataclass(frozen=True, slots=True)
class BreakerChange:
    key: str
    from_state: str
    to_state: str
    reason: str
    at: float  # epoch seconds


def add_breaker_events(
    session: Session, changes: Sequence[BreakerChange], *, job_id: int | None, worker: str
) -> None:
    for c in changes:
        session.add(
            BreakerEvent(
                breaker_key=c.key,
                from_state=c.from_state,
                to_state=c.to_state,
                reason=c.reason,
                job_id=job_id,
                worker=worker,
                at=datetime.fromtimestamp(c.at, UTC),
            )
        )


def active_drills(session: Session, now: datetime | None = None) -> dict[str, str]:
    """Breaker key -> reason for every drill in force now."""
    now = now or datetime.now(UTC)
    rows = session.execute(
        select(Drill.breaker_key, Drill.reason).where(Drill.until > now, Drill.cleared_at.is_(None))
    )
    return {r.breaker_key: r.reason for r in rows}


def start_drill(session: Session, key: str, seconds: int, reason: str) -> Drill:
    now = datetime.now(UTC)
    drill = Drill(
        breaker_key=key,
        reason=reason,
        started_at=now,
        until=now + timedelta(seconds=seconds),
        calls_diverted=0,
    )
    session.add(drill)
    session.flush()
    return drill


def clear_drills(session: Session, key: str | None = None) -> int:
    now = datetime.now(UTC)
    stmt = select(Drill).where(Drill.until > now, Drill.cleared_at.is_(None))
    if key is not None:
        stmt = stmt.where(Drill.breaker_key == key)
    drills = list(session.scalars(stmt))
    for d in drills:
        d.cleared_at = now
    return len(drills)


def list_drills(session: Session, limit: int = 20) -> list[Drill]:
    return list(session.scalars(select(Drill).order_by(Drill.id.desc()).limit(limit)))

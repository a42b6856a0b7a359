"""Keeping the ``report_daily`` rollup: add the attempts after the watermark.

``rollup_daily`` / ``rollup_daily_latency`` hold sums over exactly the attempts
with ``id <= rollup_mark.last_id`` (the watermark, W). A refresh aggregates the
attempts with ids in (W, W'] and adds them (``INSERT … ON CONFLICT DO UPDATE SET
x = x + excluded.x``) in the same transaction that moves the mark to W'. The view
adds the attempts after the mark live, so a refresh changes how fast
``report_daily`` answers, never what it answers.

Choosing W' — the one assumption. Ids come from a sequence, so a transaction
still open can hold an id below rows that are already committed; a W' above it
would skip that row for ever. W' is therefore the largest id among attempts whose
``created_at`` (the database clock at the start of the writing transaction) is
older than ``grace`` (5 minutes by default). This is safe as long as no
transaction that writes attempt rows stays open longer than ``grace / 2``: the row
at W' was written (so allocated) before its transaction committed, at most
grace/2 after ``created_at``, i.e. before now - grace/2; any smaller id was
allocated earlier still, and its transaction committed within grace/2 of that,
before now. Tier tasks write an attempt batch and commit in well under a second.

Concurrency: the refresh first updates the mark row (a no-op update), which takes
its row lock on Postgres and the database write lock on SQLite, so a second
refresher waits, then reads the mark the first one wrote: nothing is added twice.
Re-running a refresh with nothing new is a no-op (idempotent).

Assumptions the sums rely on: attempt rows are never updated or deleted, a job's
pipeline name never changes, and an item's ``baseline_nanos`` is written in the
same transaction as its deciding (accept / fail) step (``ledger.settle``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from models.core import count_rows
from models.db import as_utc
from models.tables import Attempt
from models.tables_rollup import RollupMark
from models.views_daily import ROLLUP_REFRESH_SQL

GRACE = timedelta(minutes=5)
CHUNK = 2_000_000  # attempt ids per transaction: bounds one refresh transaction's size


@dataclass(frozen=True, slots=True)
class Refreshed:
    before: int  # the watermark before
    after: int  # and after
    batches: int  # transactions that added attempts


@dataclass(frozen=True, slots=True)
class RollupState:
    last_id: int
    refreshed_at: datetime | None
    tail: int  # attempt rows after the watermark (aggregated live by report_daily)


def _db_param(session: Session, value: datetime) -> Any:
    # SQLite keeps timestamps as UTC text: compare text with text.
    if session.get_bind().dialect.name == "postgresql":
        return value
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def safe_mark(session: Session, after: int, *, grace: timedelta, now: datetime) -> int:
    """The largest attempt id W' > ``after`` that is safe to roll up, else ``after``."""
    cutoff = _db_param(session, now - grace)
    hi = session.execute(
        select(func.max(Attempt.id)).where(Attempt.id > after, Attempt.created_at < cutoff)
    ).scalar()
    return after if hi is None else int(hi)


def _lock_mark(session: Session) -> int:
    session.execute(text("UPDATE rollup_mark SET last_id = last_id WHERE id = 1"))
    return int(session.execute(select(RollupMark.last_id).where(RollupMark.id == 1)).scalar_one())


def add_range(session: Session, lo: int, hi: int) -> None:
    """Add the attempts with lo < id <= hi to the rollup (the caller moves the mark)."""
    for stmt in ROLLUP_REFRESH_SQL[session.get_bind().dialect.name]:
        session.execute(text(stmt), {"lo": lo, "hi": hi})


def refresh(
    sessions: sessionmaker[Session],
    *,
    grace: timedelta = GRACE,
    now: datetime | None = None,
    chunk: int = CHUNK,
) -> Refreshed:
    """Roll up every attempt that is safe to roll up, ``chunk`` ids per transaction."""
    with sessions() as session:
        start = int(
            session.execute(select(RollupMark.last_id).where(RollupMark.id == 1)).scalar_one()
        )
        clock = as_utc(now or session.execute(select(func.now())).scalar_one())
        target = safe_mark(session, start, grace=grace, now=clock)
    before, batches = None, 0
    while True:
        with sessions.begin() as session:
            mark = _lock_mark(session)
            before = mark if before is None else before
            if mark >= target:
                break
            hi = min(target, mark + chunk)
            add_range(session, mark, hi)
            session.execute(
                update(RollupMark).where(RollupMark.id == 1).values(last_id=hi, refreshed_at=clock)
            )
            batches += 1
    if batches:
        _analyze(sessions)
    return Refreshed(before=before, after=mark, batches=batches)


def _analyze(sessions: sessionmaker[Session]) -> None:
    # Fresh statistics for the planner: the first refresh fills the rollup from
    # nothing, and autovacuum would only notice some time later. Small tables: cheap.
    with sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE rollup_daily, rollup_daily_latency"))


def state(session: Session) -> RollupState:
    mark = session.execute(select(RollupMark).where(RollupMark.id == 1)).scalar_one()
    tail = count_rows(session, Attempt, Attempt.id > mark.last_id)
    at = mark.refreshed_at
    return RollupState(int(mark.last_id), None if at is None else as_utc(at), int(tail))

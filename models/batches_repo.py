"""Writes and reads for Message Batches and backfills.

A batch row is written (``submitting``) before the API is called and gets its API id
right after, so a worker that dies in between leaves a row the recovery can see; the
items stay leased under the claim's token until the batch is collected, and results
are settled under that token, so collecting twice writes nothing twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.orm import Session

from common.lifecycle import BatchStatus, RunStatus, Status
from models.core import RELEASED, count_rows
from models.repo import ITEMS, _insert, utcnow
from models.tables import Attempt
from models.tables_batches import BackfillRun, BackfillWatermark, MessageBatch

BATCHES: Table = MessageBatch.__table__  # type: ignore[assignment]
ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]
OPEN = (BatchStatus.SUBMITTING, BatchStatus.IN_PROGRESS)


def new_poll_token() -> str:
    return secrets.token_hex(8)


# -- batches --------------------------------------------------------------------
def add_batches(
    session: Session,
    *,
    job_id: int,
    tier_index: int,
    tier: str,
    provider: str,
    model: str,
    mechanism: str,
    token: str,
    groups: Sequence[Sequence[tuple[int, int]]],
) -> list[int]:
    """One ``submitting`` row per group of (item id, step); returns the row ids in order."""
    rows = []
    for group in groups:
        row = MessageBatch(
            job_id=job_id,
            tier_index=tier_index,
            tier=tier,
            provider=provider,
            model=model,
            mechanism=mechanism,
            lease_token=token,
            items=[[pk, step] for pk, step in group],
            request_count=len(group),
            status=BatchStatus.SUBMITTING,
            poll_count=0,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    return [r.id for r in rows]


def get_batch(session: Session, row_id: int) -> MessageBatch | None:
    return session.get(MessageBatch, row_id)


def mark_submitted(
    session: Session, row_id: int, batch_id: str, poll_token: str, next_poll_at: datetime
) -> None:
    session.execute(
        BATCHES.update()
        .where(BATCHES.c.id == row_id, BATCHES.c.status == BatchStatus.SUBMITTING)
        .values(
            batch_id=batch_id,
            status=BatchStatus.IN_PROGRESS,
            submitted_at=utcnow(),
            poll_token=poll_token,
            next_poll_at=next_poll_at,
        )
    )


def mark_failed(session: Session, row_id: int, status: str, error: str) -> None:
    """A batch the API refused (``failed``) or whose submit was lost (``abandoned``)."""
    session.execute(
        BATCHES.update()
        .where(BATCHES.c.id == row_id, BATCHES.c.status == BatchStatus.SUBMITTING)
        .values(status=status, error=error[:2000], collected_at=utcnow())
    )


def record_poll(
    session: Session,
    row_id: int,
    poll_token: str,
    counts: dict[str, int],
    *,
    ended: bool,
    next_poll_at: datetime | None,
) -> bool:
    """Count a poll made by the current poll chain; False if another chain owns the row."""
    values: dict[str, Any] = {
        "poll_count": BATCHES.c.poll_count + 1,
        "counts": counts,
        "next_poll_at": next_poll_at,
    }
    if ended:
        values |= {"ended_at": utcnow()}
    res = session.execute(
        BATCHES.update()
        .where(
            BATCHES.c.id == row_id,
            BATCHES.c.poll_token == poll_token,
            BATCHES.c.status == BatchStatus.IN_PROGRESS,
        )
        .values(values)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


def mark_collected(session: Session, row_id: int) -> None:
    session.execute(
        BATCHES.update()
        .where(BATCHES.c.id == row_id, BATCHES.c.status == BatchStatus.IN_PROGRESS)
        .values(
            status=BatchStatus.COLLECTED, collected_at=utcnow(), poll_token=None, next_poll_at=None
        )
    )


def take_over_poll(session: Session, row_id: int) -> str | None:
    """Give an open batch a new poll token (older poll chains stop); None if not open."""
    token = new_poll_token()
    res = session.execute(
        BATCHES.update()
        .where(BATCHES.c.id == row_id, BATCHES.c.status == BatchStatus.IN_PROGRESS)
        .values(poll_token=token, next_poll_at=utcnow())
    )
    return token if res.rowcount else None  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class OpenBatch:
    id: int
    status: str
    job_id: int
    tier_index: int
    tier: str


def overdue_batches(
    session: Session, *, polls_before: datetime, submits_before: datetime
) -> list[OpenBatch]:
    """Open batches whose next poll is overdue (its message was lost) or whose submit stalled."""
    rows = session.execute(
        select(
            BATCHES.c.id, BATCHES.c.status, BATCHES.c.job_id, BATCHES.c.tier_index, BATCHES.c.tier
        )
        .where(
            or_(
                and_(
                    BATCHES.c.status == BatchStatus.IN_PROGRESS,
                    BATCHES.c.next_poll_at < polls_before,
                ),
                and_(
                    BATCHES.c.status == BatchStatus.SUBMITTING,
                    BATCHES.c.created_at < submits_before,
                ),
            )
        )
        .order_by(BATCHES.c.id)
    ).all()
    return [OpenBatch(r.id, r.status, r.job_id, r.tier_index, r.tier) for r in rows]


@dataclass(frozen=True, slots=True)
class HeldItem:
    pk: int
    text: str
    steps: int
    label: str | None = None  # the best answer of a lower tier, if it escalated with one


def held_items(session: Session, pks: Sequence[int], token: str) -> list[HeldItem]:
    """The items still leased under ``token`` (the batch's claim)."""
    rows = session.execute(
        select(ITEMS.c.id, ITEMS.c.text, ITEMS.c.steps, ITEMS.c.label).where(
            ITEMS.c.id.in_(list(pks)), ITEMS.c.lease_token == token
        )
    ).all()
    return [HeldItem(r.id, r.text or "", r.steps, r.label) for r in rows]


def release_items(session: Session, pks: Sequence[int], token: str) -> list[int]:
    """Hand items of an abandoned batch back to their tier's queue (the sweeper re-sends them)."""
    rows = session.execute(
        ITEMS.update()
        .where(ITEMS.c.id.in_(list(pks)), ITEMS.c.lease_token == token)
        .values(status=Status.PENDING, updated_at=utcnow(), **RELEASED)
        .returning(ITEMS.c.id)
    ).all()
    return [r.id for r in rows]


def job_batches(session: Session, job_id: int) -> list[MessageBatch]:
    return list(
        session.scalars(
            select(MessageBatch).where(MessageBatch.job_id == job_id).order_by(MessageBatch.id)
        )
    )


def open_batch_count(session: Session, job_id: int) -> int:
    return count_rows(session, BATCHES, BATCHES.c.job_id == job_id, BATCHES.c.status.in_(OPEN))


# -- backfills ------------------------------------------------------------------
def get_watermark(session: Session, pipeline: str, source: str) -> datetime | None:
    row = session.get(BackfillWatermark, (pipeline, source[:500]))
    return row.watermark if row is not None else None


def set_watermark(session: Session, pipeline: str, source: str, watermark: datetime) -> None:
    """Move the watermark forward (never back: a late, older run cannot rewind it)."""
    table: Table = BackfillWatermark.__table__  # type: ignore[assignment]
    now = utcnow()
    stmt = _insert(session, table).values(
        pipeline=pipeline, source=source[:500], watermark=watermark, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["pipeline", "source"],
        set_={"watermark": watermark, "updated_at": now},
        where=table.c.watermark < watermark,
    )
    session.execute(stmt)


def start_run(
    session: Session,
    *,
    name: str | None,
    pipeline: str,
    source: str,
    mode: str,
    since: datetime | None,
) -> int:
    run = BackfillRun(
        name=name,
        pipeline=pipeline,
        source=source[:500],
        mode=mode,
        since=since,
        status=RunStatus.RUNNING,
        items_added=0,
        lines_rejected=0,
    )
    session.add(run)
    session.flush()
    return run.id


def finish_run(
    session: Session,
    run_id: int,
    *,
    status: str,
    job_id: int | None = None,
    until: datetime | None = None,
    items_added: int = 0,
    lines_rejected: int = 0,
    message: str | None = None,
) -> None:
    run = session.get(BackfillRun, run_id)
    assert run is not None
    run.status, run.job_id, run.until = status, job_id, until
    run.items_added, run.lines_rejected = items_added, lines_rejected
    run.message = message[:2000] if message else None
    run.finished_at = utcnow()


def last_runs(session: Session, limit: int = 50) -> list[BackfillRun]:
    return list(session.scalars(select(BackfillRun).order_by(BackfillRun.id.desc()).limit(limit)))


@dataclass(frozen=True, slots=True)
class CallUsage:
    model: str
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    cost_nanos: int


def batch_calls(session: Session, job_id: int) -> list[CallUsage]:
    """Every batch-priced model call of a job: tokens and what it cost."""
    a = ATTEMPTS.c
    rows = session.execute(
        select(
            a.model,
            a.input_tokens,
            a.output_tokens,
            a.cache_write_tokens,
            a.cache_read_tokens,
            a.cost_nanos,
        ).where(a.job_id == job_id, a.is_batch.is_(True))
    ).all()
    return [CallUsage(r[0], *(int(v) for v in r[1:])) for r in rows]

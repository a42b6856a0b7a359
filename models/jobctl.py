"""A job's life from the outside: stop it, cancel it, reopen it, find what nobody carries.

Statuses stay the strings the rest of the code uses: a stopped or cancelled job is
``failed`` with its reason in ``message``; a cancelled item is ``failed`` with the
reason in ``error``; an item stopped with its job waits ``paused`` (resumable).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, true
from sqlalchemy.orm import Session

from common.lifecycle import ANSWERED, UNFINISHED, JobStatus, Phase, Status, phase_of
from models.core import ATTEMPTS, ITEMS, JOBS, RELEASED, utcnow

CANCELLED = "cancelled by the user"
WAITING = (Status.PENDING, Status.FALLBACK)  # on a queue (or meant to be), not leased by anyone
LEASED = (Status.RUNNING, Status.FALLBACK_RUNNING)


def stop_job(session: Session, job_id: int, message: str) -> None:
    """Fail the job with ``message``; its waiting items pause (no call is made for them
    any more) and can be resumed once the cause is fixed (`cascade resume`)."""
    now = utcnow()
    session.execute(
        ITEMS.update()
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_(WAITING))
        .values(status=Status.PAUSED, error=message[:2000], updated_at=now)
    )
    session.execute(
        JOBS.update()
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status.in_((JobStatus.RUNNING, JobStatus.SUBMITTING, JobStatus.PAUSED)),
        )
        .values(status=JobStatus.FAILED, message=message[:2000], finished_at=now, updated_at=now)
    )


def cancel_job(session: Session, job_id: int) -> int:
    """Every unfinished item fails as cancelled (a worker holding one loses its lease,
    so what it settles later is recorded as an orphan call, never as the item's
    outcome); the job fails with the reason. Returns the items cancelled."""
    now = utcnow()
    res = session.execute(
        ITEMS.update()
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_(UNFINISHED))
        .values(status=Status.FAILED, error=CANCELLED, finished_at=now, updated_at=now, **RELEASED)
    )
    session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id)
        .values(status=JobStatus.FAILED, message=CANCELLED, finished_at=now, updated_at=now)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


def reopen_job(session: Session, job_id: int) -> None:
    """A failed (stopped) or paused job runs again: its paused items wait at their tier."""
    now = utcnow()
    session.execute(
        ITEMS.update()
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_((Status.PAUSED, Status.PAUSED_BUDGET)))
        .values(status=Status.PENDING, error=None, updated_at=now)
    )
    session.execute(
        JOBS.update()
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status.in_((JobStatus.FAILED, JobStatus.PAUSED, JobStatus.SUBMITTING)),
        )
        .values(status=JobStatus.RUNNING, message=None, finished_at=None, updated_at=now)
    )


@dataclass(frozen=True, slots=True)
class Waiting:
    """Items of one job at one tier and phase, to put on that queue again."""

    tier_index: int
    phase: Phase
    ids: list[int]


def uncarried(
    session: Session,
    job_id: int,
    *,
    before: datetime,
    release_leases: bool,
    fallback_before: datetime | None = None,
    tiers: Collection[int] | None = None,
) -> list[Waiting]:
    """The job's items no message may carry any more: waiting since before ``before``
    (``fallback_before`` for the fallback phase, where a deferred item waits on purpose),
    or leased with the lease run out.

    ``release_leases`` (the embedded runtime, ``before`` = when this process started: a
    lease taken before then was taken by a process that is gone): those leases end now.
    ``tiers``: only items at these tier indexes.
    """
    now = utcnow()
    if release_leases:
        for leased, waiting in zip(LEASED, WAITING, strict=True):
            session.execute(
                ITEMS.update()
                .where(
                    ITEMS.c.job_id == job_id,
                    ITEMS.c.status == leased,
                    ITEMS.c.updated_at < before,
                )
                .values(status=waiting, updated_at=before, **RELEASED)
            )
    fb_before = fallback_before or before
    rows = session.execute(
        select(ITEMS.c.tier_index, ITEMS.c.status, ITEMS.c.id)
        .where(
            ITEMS.c.job_id == job_id,
            ITEMS.c.tier_index.in_(list(tiers)) if tiers is not None else true(),
            or_(
                and_(ITEMS.c.status == Status.PENDING, ITEMS.c.updated_at <= before),
                and_(ITEMS.c.status == Status.FALLBACK, ITEMS.c.updated_at <= fb_before),
                and_(ITEMS.c.status.in_(LEASED), ITEMS.c.lease_until < now),
            ),
        )
        .order_by(ITEMS.c.id)
    ).all()
    groups: dict[tuple[int, Phase], list[int]] = {}
    for tier_index, status, pk in rows:
        phase = phase_of(status)
        groups.setdefault((tier_index, phase), []).append(pk)
    return [Waiting(t, p, ids) for (t, p), ids in sorted(groups.items())]


def seconds_ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def fail_if_no_call_passed(session: Session, job_id: int) -> bool:
    """A finished job with failed items and not one model call the API answered (even
    with a refusal) failed as a job: every call failed permanently (a retired model, a
    refused request). Its message gives the commonest reason. True if it changed."""
    answered = session.execute(
        select(ATTEMPTS.c.id)
        .where(
            ATTEMPTS.c.job_id == job_id,
            ATTEMPTS.c.role.not_in(("rules", "shadow")),
            ATTEMPTS.c.outcome.in_(list(ANSWERED)),  # the API answered (HTTP 200),
        )
        .limit(1)
    ).first()
    if answered is not None:
        return False
    top = session.execute(
        select(ITEMS.c.error, func.count().label("n"))
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status == Status.FAILED)
        .group_by(ITEMS.c.error)
        .order_by(func.count().desc())
        .limit(1)
    ).first()
    if top is None:  # nothing failed (a job the rules answered whole)
        return False
    message = f"every model call failed; the commonest reason ({top.n:,} items): {top.error}"
    res = session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.DONE)
        .values(status=JobStatus.FAILED, message=message[:2000], updated_at=utcnow())
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]

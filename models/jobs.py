"""A job's rows: open it for a submission, mark it submitted, done, paused or resumed,
its budget and what it spent. Stopping and cancelling are in :mod:`models.jobctl`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, bindparam, case, exists, select
from sqlalchemy.orm import Session

from common.lifecycle import UNFINISHED, JobStatus, Status
from common.stops import AUTH_FAILED
from models.core import DAILY, ITEMS, JOBS, count_rows, dialect_insert, utcnow
from models.jobctl import fail_if_no_call_passed, stop_job
from models.tables import Job


class JobConflictError(ValueError):
    """A job of that name exists with a different pipeline."""


# -- jobs ---------------------------------------------------------------------
def job_by_ref(session: Session, ref: str | int) -> Job | None:
    """A job by its id or its name."""
    text = str(ref)
    if text.isdigit():
        job = session.get(Job, int(text))
        if job is not None:
            return job
    return session.scalars(select(Job).where(Job.name == text)).first()


def open_job(session: Session, name: str, pipeline: dict[str, Any]) -> tuple[int, bool]:
    """The id of the job called ``name`` (its pipeline must match), created if new, and
    whether it was; marks it submitting. One statement for a job that exists."""
    now = utcnow()
    found = session.execute(
        JOBS.update()
        .where(JOBS.c.name == name)
        .values(status=JobStatus.SUBMITTING, finished_at=None, updated_at=now)
        .returning(JOBS.c.id, JOBS.c.pipeline, JOBS.c.pipeline_name)
    ).first()
    if found is not None:
        _same_pipeline(name, found.pipeline, found.pipeline_name, pipeline)
        return int(found.id), False
    job = Job(
        name=name, pipeline_name=pipeline["name"], pipeline=pipeline, status=JobStatus.SUBMITTING
    )
    session.add(job)
    session.flush()
    return job.id, True


def _same_pipeline(name: str, stored: Any, stored_name: str, pipeline: dict[str, Any]) -> None:
    if stored != pipeline:  # the caller's transaction rolls the update back
        raise conflict(name, stored_name)


def conflict(name: str, stored_name: str) -> JobConflictError:
    return JobConflictError(
        f"job {name!r} exists with a different pipeline ({stored_name}); "
        "use another --job-name or the same pipeline file"
    )


def list_jobs(session: Session, limit: int = 50) -> list[Job]:
    return list(session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)))


def job_submitted(session: Session, job_id: int) -> None:
    """The file is in: a submitting job goes running, or straight to done if nothing is
    left unfinished (every item settled at the door). One statement."""
    unfinished = exists().where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_(UNFINISHED))
    now = utcnow()
    session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.SUBMITTING)
        .values(
            status=case((unfinished, JobStatus.RUNNING), else_=JobStatus.DONE),
            finished_at=case((unfinished, None), else_=now),
            updated_at=now,
        )
    )


def finish_job_if_done(session: Session, job_id: int) -> bool:
    """Mark a running job done when none of its items is unfinished. True if it changed now."""
    unfinished = exists().where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_(UNFINISHED))
    now = utcnow()
    res = session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.RUNNING, ~unfinished)
        .values(status=JobStatus.DONE, finished_at=now, updated_at=now)
    )
    if res.rowcount:  # type: ignore[attr-defined]
        fail_if_no_call_passed(session, job_id)
    return bool(res.rowcount)  # type: ignore[attr-defined]


def unfinished_count(session: Session, job_id: int) -> int:
    return count_rows(session, ITEMS, ITEMS.c.job_id == job_id, ITEMS.c.status.in_(UNFINISHED))


# -- pausing and resuming ---------------------------------------------------
def pause_job(session: Session, job_id: int, message: str) -> None:
    if message.startswith(AUTH_FAILED):  # no later try can pass: the job fails (resumable)
        stop_job(session, job_id, message)
        return
    session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status.in_((JobStatus.RUNNING, JobStatus.SUBMITTING)))
        .values(status=JobStatus.PAUSED, message=message[:2000], updated_at=utcnow())
    )


def resume_job(
    session: Session, job_id: int, budget_nanos: int | None = None
) -> list[tuple[int, list[int]]]:
    """Paused items go back to waiting at their tier; returns (tier_index, ids) to send."""
    if budget_nanos is not None:
        session.execute(JOBS.update().where(JOBS.c.id == job_id).values(budget_nanos=budget_nanos))
    rows = session.execute(
        ITEMS.update()
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_((Status.PAUSED, Status.PAUSED_BUDGET)))
        .values(status=Status.PENDING, error=None, updated_at=utcnow())
        .returning(ITEMS.c.id, ITEMS.c.tier_index)
    ).all()
    session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.PAUSED)
        .values(status=JobStatus.RUNNING, message=None, updated_at=utcnow())
    )
    by_tier: dict[int, list[int]] = {}
    for r in rows:
        by_tier.setdefault(r.tier_index, []).append(r.id)
    return sorted(by_tier.items())


# -- budgets ----------------------------------------------------------------
def set_budget(session: Session, job_id: int, budget_nanos: int | None) -> None:
    session.execute(JOBS.update().where(JOBS.c.id == job_id).values(budget_nanos=budget_nanos))


def budget_left(session: Session, job_id: int, daily_budget_nanos: int | None) -> int | None:
    """What the job may still spend (job budget and its pipeline's daily budget); None = no cap."""
    row = session.execute(
        select(JOBS.c.budget_nanos, JOBS.c.spent_nanos, JOBS.c.pipeline_name).where(
            JOBS.c.id == job_id
        )
    ).one()
    left: list[int] = []
    if row.budget_nanos is not None:
        left.append(row.budget_nanos - row.spent_nanos)
    if daily_budget_nanos is not None:
        spent = session.scalar(
            select(DAILY.c.spent_nanos).where(
                DAILY.c.pipeline_name == row.pipeline_name, DAILY.c.day == utcnow().date()
            )
        )
        left.append(daily_budget_nanos - int(spent or 0))
    return max(0, min(left)) if left else None


# Built once: every worker commit adds its spend (statement building was 2.5 % of a
# worker's CPU in the mixed bench). Bound values only.
_ADD_TO_JOB = (
    JOBS.update()
    .where(JOBS.c.id == bindparam("job"))
    .values(spent_nanos=JOBS.c.spent_nanos + bindparam("nanos", type_=BigInteger))
)
_ADD_TO_DAY: dict[str, Any] = {}


def _add_to_day(session: Session) -> Any:
    name = session.get_bind().dialect.name
    stmt = _ADD_TO_DAY.get(name)
    if stmt is None:
        insert = dialect_insert(session, DAILY).values(
            pipeline_name=bindparam("name"), day=bindparam("day"), spent_nanos=bindparam("nanos")
        )
        stmt = _ADD_TO_DAY[name] = insert.on_conflict_do_update(
            index_elements=["pipeline_name", "day"],
            set_={"spent_nanos": DAILY.c.spent_nanos + insert.excluded.spent_nanos},
        )
    return stmt


def add_spend(session: Session, job_id: int, pipeline_name: str, nanos: int) -> None:
    """Count what calls cost, on the job and on its pipeline's day (atomic increments)."""
    if nanos <= 0:
        return
    session.execute(_ADD_TO_JOB, {"job": job_id, "nanos": nanos})
    day = {"name": pipeline_name, "day": utcnow().date(), "nanos": nanos}
    session.execute(_add_to_day(session), day)

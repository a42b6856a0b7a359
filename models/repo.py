"""Every write the service makes, in bulk and idempotent.

Postgres (or SQLite in the embedded runtime) is the source of truth; the broker
only rings the doorbell. A tier task *claims* its items here (only items still
at that tier and not leased by a live worker), so a redelivered message does no
double work; results are written under the claim's lease token, attempt rows
are keyed by (item, step) and inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Table,
    case,
    exists,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common.lifecycle import (
    UNFINISHED,
)
from common.stops import AUTH_FAILED
from models.tables import Attempt, Item, Job, RejectedLine, Submission
from models.tables_ops import DailySpend

ITEMS: Table = Item.__table__  # type: ignore[assignment]
ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]
JOBS: Table = Job.__table__  # type: ignore[assignment]
SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]
DAILY: Table = DailySpend.__table__  # type: ignore[assignment]


class JobConflictError(ValueError):
    """A job of that name exists with a different pipeline."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    return secrets.token_hex(8)


def _insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT (it has ON CONFLICT); Postgres and SQLite only."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database {name!r}: use Postgres or SQLite")


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
        .values(status="submitting", finished_at=None, updated_at=now)
        .returning(JOBS.c.id, JOBS.c.pipeline, JOBS.c.pipeline_name)
    ).first()
    if found is not None:
        _same_pipeline(name, found.pipeline, found.pipeline_name, pipeline)
        return int(found.id), False
    job = Job(name=name, pipeline_name=pipeline["name"], pipeline=pipeline, status="submitting")
    session.add(job)
    session.flush()
    return job.id, True


def _same_pipeline(name: str, stored: Any, stored_name: str, pipeline: dict[str, Any]) -> None:
    if stored != pipeline:  # the caller's transaction rolls the update back
        raise _conflict(name, stored_name)


def _conflict(name: str, stored_name: str) -> JobConflictError:
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
        .where(JOBS.c.id == job_id, JOBS.c.status == "submitting")
        .values(
            status=case((unfinished, "running"), else_="done"),
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
        .where(JOBS.c.id == job_id, JOBS.c.status == "running", ~unfinished)
        .values(status="done", finished_at=now, updated_at=now)
    )
    if res.rowcount:  # type: ignore[attr-defined]
        from models.jobctl import fail_if_no_call_passed  # issue 21

        fail_if_no_call_passed(session, job_id)
    return bool(res.rowcount)  # type: ignore[attr-defined]


# -- submissions --------------------------------------------------------------
def start_submission(session: Session, job_id: int, source: str) -> int:
    return int(
        session.execute(
            SUBMISSIONS.insert()
            .values(job_id=job_id, source=source[:500])
            .returning(SUBMISSIONS.c.id)
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Opened:
    """A submission opened: its job (``created`` if new) and, when asked for and the
    job existed (Postgres), fresh item ids and the transaction's time."""

    job_id: int
    created: bool
    submission_id: int
    ids: list[int] = field(default_factory=list)
    now: datetime | None = None


def open_submission(
    session: Session,
    name: str,
    pipeline: dict[str, Any],
    source: str,
    *,
    draw: int = 0,
    begin: bool = False,
    pipeline_text: str | None = None,
) -> Opened:
    """:func:`open_job` and :func:`start_submission`.

    On Postgres, for a job that exists, one statement does both and draws ``draw``
    item ids (the short path of a one-item submission); a conflicting pipeline raises
    and the caller rolls back. ``begin``: the session's first statement, which starts
    its transaction in the same round trip (:func:`begin_with`). ``pipeline_text``:
    ``pipeline`` as JSON, when the caller has it already.
    """
    if session.get_bind().dialect.name == "postgresql":
        params = {
            "name": name,
            "source": source[:500],
            "now": utcnow(),
            "draw": draw,
            "pipeline": pipeline_text or json.dumps(pipeline),
        }
        if begin:
            cur = begin_with(session, _OPEN_SQL, params)
        else:
            cur = driver_connection(session).execute(_OPEN_SQL, params)
        found = cur.fetchone()
        if found is not None:
            job_id, same, stored_name, sub_id, ids, now = found
            if not same:
                raise _conflict(name, stored_name)
            return Opened(int(job_id), False, int(sub_id), list(ids or []), now)
    job_id, created = open_job(session, name, pipeline)
    return Opened(job_id, created, start_submission(session, job_id, source))


def driver_connection(session: Session) -> Any:
    """The session's psycopg connection (Postgres), for COPY and pipelined statements."""
    return session.connection().connection.driver_connection


def begin_with(session: Session, sql: str, params: Mapping[str, Any]) -> Any:
    """Start the session's transaction and run ``sql`` in one round trip (Postgres);
    returns the psycopg cursor holding its result.

    psycopg sends BEGIN on its own and waits for it before the first statement. Here
    the session's connection is taken in autocommit, so the driver sends no BEGIN,
    and ``BEGIN`` and ``sql`` go out in one pipeline. Every later statement runs in that
    transaction; the session's commit or rollback still reaches the server (psycopg
    sends COMMIT or ROLLBACK whenever the server is in a transaction), and the pool
    puts the connection back out of autocommit when it is returned. The session must
    not have used its connection yet (SQLAlchemy refuses the option then).
    """
    conn = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    raw: Any = conn.connection.driver_connection
    with raw.pipeline():
        raw.execute("BEGIN")
        cur = raw.execute(sql, params)
    return cur  # noqa: RET504 (read once the pipeline has synced, on leaving it)


# ids: drawn only when the job is found (a scalar subquery runs once per output row);
# the pipelines are compared as jsonb (keys in any order), not sent back
_OPEN_SQL = """
    WITH job AS (
        UPDATE jobs SET status = 'submitting', finished_at = NULL, updated_at = %(now)s
        WHERE name = %(name)s
        RETURNING id, pipeline, pipeline_name
    ), sub AS (
        INSERT INTO submissions
            (job_id, source, lines_read, items_added, items_existing, lines_rejected)
        SELECT id, %(source)s, 0, 0, 0, 0 FROM job
        RETURNING id
    )
    SELECT job.id, job.pipeline::jsonb = %(pipeline)s::jsonb, job.pipeline_name, sub.id,
        (SELECT array_agg(nextval('items_id_seq')) FROM generate_series(1, %(draw)s)),
        now()
    FROM job, sub
    """


def finish_submission(session: Session, submission_id: int, counts: dict[str, int]) -> None:
    session.execute(
        SUBMISSIONS.update()
        .where(SUBMISSIONS.c.id == submission_id)
        .values(
            lines_read=counts.get("lines_read", 0),
            items_added=counts.get("items_added", 0),
            items_existing=counts.get("items_existing", 0),
            lines_rejected=counts.get("lines_rejected", 0),
            finished_at=utcnow(),
        )
    )


def close_submission(
    session: Session, job_id: int, submission_id: int, counts: dict[str, int]
) -> None:
    """:func:`finish_submission` and :func:`job_submitted`; one statement on Postgres."""
    if session.get_bind().dialect.name != "postgresql":  # SQLite: no UPDATE in a WITH
        finish_submission(session, submission_id, counts)
        job_submitted(session, job_id)
        return
    session.connection().exec_driver_sql(*close_statement(job_id, submission_id, counts))


def close_statement(
    job_id: int, submission_id: int, counts: dict[str, int], *, adding_unfinished: bool = False
) -> tuple[str, dict[str, Any]]:
    """:func:`close_submission` on Postgres as SQL and parameters, for a caller that sends
    it along with the submission's last rows; ``adding_unfinished``: those rows, not yet
    visible to it, hold an unfinished item."""
    return _CLOSE_SQL, {
        "job_id": job_id,
        "sub_id": submission_id,
        "lines_read": counts.get("lines_read", 0),
        "items_added": counts.get("items_added", 0),
        "items_existing": counts.get("items_existing", 0),
        "lines_rejected": counts.get("lines_rejected", 0),
        "unfinished": list(UNFINISHED),
        "adding_unfinished": adding_unfinished,
        "now": utcnow(),
    }


# finish_submission and job_submitted, the same rules in one statement (a one-item
# submission's last)
_CLOSE_SQL = """
    WITH finished_submission AS (
        UPDATE submissions SET lines_read = %(lines_read)s, items_added = %(items_added)s,
            items_existing = %(items_existing)s, lines_rejected = %(lines_rejected)s,
            finished_at = %(now)s
        WHERE id = %(sub_id)s
    )
    UPDATE jobs SET
        status = CASE WHEN open.busy THEN 'running' ELSE 'done' END,
        finished_at = CASE WHEN open.busy THEN NULL ELSE CAST(%(now)s AS timestamptz) END,
        updated_at = %(now)s
    FROM (
        SELECT %(adding_unfinished)s OR EXISTS (
            SELECT 1 FROM items WHERE job_id = %(job_id)s AND status = ANY(%(unfinished)s)
        ) AS busy
    ) AS open
    WHERE jobs.id = %(job_id)s AND jobs.status = 'submitting'
    """


@dataclass(slots=True)  # not frozen: one per submitted line
class NewItem:
    line_no: int
    key: str
    text: str
    meta: dict[str, Any]
    text_hash: int | None = None  # models.reuse.text_hash: repeats of a text share it


@dataclass(slots=True)
class AddResult:
    added: list[int]  # row ids, in input order
    duplicates: list[tuple[int, str, int]]  # (line_no, key, line_no of the first occurrence)
    existing: int  # already in the job from an earlier submission


def split_duplicates(
    batch: Sequence[NewItem],
) -> tuple[list[NewItem], list[tuple[int, str, int]]]:
    """(the batch without repeats, the repeats): the first occurrence of an id wins."""
    first_line: dict[str, int] = {}
    unique: list[NewItem] = []
    duplicates: list[tuple[int, str, int]] = []
    for it in batch:
        if it.key in first_line:
            duplicates.append((it.line_no, it.key, first_line[it.key]))
        else:
            first_line[it.key] = it.line_no
            unique.append(it)
    return unique, duplicates


def add_items(
    session: Session, job_id: int, submission_id: int, batch: Sequence[NewItem]
) -> AddResult:
    """Insert a batch; items whose id the job already has are not inserted again."""
    unique, duplicates = split_duplicates(batch)
    result = AddResult([], duplicates, 0)
    if not unique:
        return result
    rows = [
        {
            "job_id": job_id,
            "submission_id": submission_id,
            "item_key": it.key,
            "line_no": it.line_no,
            "text": it.text,
            "meta": it.meta,
            "text_hash": it.text_hash,
        }
        for it in unique
    ]
    stmt = (
        _insert(session, ITEMS)
        .on_conflict_do_nothing(index_elements=["job_id", "item_key"])
        .returning(ITEMS.c.id, ITEMS.c.item_key, sort_by_parameter_order=True)
    )
    inserted = session.execute(stmt, rows).all()
    result.added = [r.id for r in inserted]
    got = {r.item_key for r in inserted}
    missing = [it for it in unique if it.key not in got]
    classify_not_inserted(session, job_id, submission_id, missing, result)
    return result


def classify_not_inserted(
    session: Session,
    job_id: int,
    submission_id: int,
    missing: Sequence[NewItem],
    result: AddResult,
) -> None:
    """Items the insert skipped: a duplicate inside this submission, or already in the job."""
    if not missing:
        return
    found = {
        r.item_key: (r.submission_id, r.line_no)
        for r in session.execute(
            select(ITEMS.c.item_key, ITEMS.c.submission_id, ITEMS.c.line_no).where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.item_key.in_({it.key for it in missing}),
            )
        )
    }
    for it in missing:
        sub_id, first = found[it.key]
        if sub_id == submission_id and first != it.line_no:
            result.duplicates.append((it.line_no, it.key, first))
        else:
            result.existing += 1


def add_rejected(
    session: Session,
    job_id: int,
    submission_id: int,
    source: str,
    rows: Sequence[tuple[int, str, str]],
) -> None:
    """Record bad input lines (line_no, reason, raw); a re-submit records them once."""
    if not rows:
        return
    stmt = _insert(session, RejectedLine.__table__).on_conflict_do_nothing(
        index_elements=["job_id", "source", "line_no"]
    )
    session.execute(
        stmt,
        [
            {
                "job_id": job_id,
                "submission_id": submission_id,
                "source": source[:500],
                "line_no": n,
                "reason": reason,
                "raw": raw,
            }
            for n, reason, raw in rows
        ],
    )


def pending_ids(
    session: Session, job_id: int, tier_index: int, after: int, limit: int
) -> list[int]:
    return list(
        session.scalars(
            select(ITEMS.c.id)
            .where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.tier_index == tier_index,
                ITEMS.c.status == "pending",
                ITEMS.c.id > after,
            )
            .order_by(ITEMS.c.id)
            .limit(limit)
        )
    )


def unfinished_count(session: Session, job_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ITEMS)
            .where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_(UNFINISHED))
        )
        or 0
    )


# -- pausing and resuming ---------------------------------------------------
def pause_job(session: Session, job_id: int, message: str) -> None:
    if message.startswith(AUTH_FAILED):  # no later try can pass: the job fails (resumable)
        from models.jobctl import stop_job

        stop_job(session, job_id, message)
        return
    session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status.in_(("running", "submitting")))
        .values(status="paused", message=message[:2000], updated_at=utcnow())
    )


def resume_job(
    session: Session, job_id: int, budget_nanos: int | None = None
) -> list[tuple[int, list[int]]]:
    """Paused items go back to waiting at their tier; returns (tier_index, ids) to send."""
    if budget_nanos is not None:
        session.execute(JOBS.update().where(JOBS.c.id == job_id).values(budget_nanos=budget_nanos))
    rows = session.execute(
        ITEMS.update()
        .where(ITEMS.c.job_id == job_id, ITEMS.c.status.in_(("paused", "paused_budget")))
        .values(status="pending", error=None, updated_at=utcnow())
        .returning(ITEMS.c.id, ITEMS.c.tier_index)
    ).all()
    session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status == "paused")
        .values(status="running", message=None, updated_at=utcnow())
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


def add_spend(session: Session, job_id: int, pipeline_name: str, nanos: int) -> None:
    """Count what calls cost, on the job and on its pipeline's day (atomic increments)."""
    if nanos <= 0:
        return
    session.execute(
        JOBS.update().where(JOBS.c.id == job_id).values(spent_nanos=JOBS.c.spent_nanos + nanos)
    )
    stmt = _insert(session, DAILY).values(
        pipeline_name=pipeline_name, day=utcnow().date(), spent_nanos=nanos
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["pipeline_name", "day"],
        set_={"spent_nanos": DAILY.c.spent_nanos + stmt.excluded.spent_nanos},
    )
    session.execute(stmt)

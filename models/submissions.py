"""A submission's rows: opened with its job, closed with its counts; on Postgres
each in one statement (the short path of a one-item submission)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from common.lifecycle import UNFINISHED
from models.core import SUBMISSIONS, utcnow
from models.jobs import conflict, job_submitted, open_job


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
                raise conflict(name, stored_name)
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

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
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common.stops import AUTH_FAILED
from models import pgbulk
from models.db import as_utc
from models.tables import Attempt, Item, Job, RejectedLine, Submission
from models.tables_ops import DailySpend

ITEMS: Table = Item.__table__  # type: ignore[assignment]
ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]
JOBS: Table = Job.__table__  # type: ignore[assignment]
SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]
DAILY: Table = DailySpend.__table__  # type: ignore[assignment]
UNFINISHED = (
    "pending",
    "running",
    "fallback",
    "fallback_running",
    "paused",
    "paused_budget",
)
PHASES = {"tier": ("pending", "running"), "fallback": ("fallback", "fallback_running")}


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


# -- claims and results -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Claimed:
    pk: int
    text: str
    steps: int
    error: str | None = None  # why the item was handed to the fallback chain
    deferrals: int = 0
    label: str | None = None  # the best answer of a lower tier, if it has one
    confidence: float | None = None


_CLAIMED = (
    ITEMS.c.id,
    ITEMS.c.text,
    ITEMS.c.steps,
    ITEMS.c.error,
    ITEMS.c.deferrals,
    ITEMS.c.label,
    ITEMS.c.confidence,
)


def _claimed(rows: Any) -> list[Claimed]:
    return [
        Claimed(r.id, r.text or "", r.steps, r.error, r.deferrals, r.label, r.confidence)
        for r in rows
    ]


def _locked_waiting(
    session: Session,
    job_id: int,
    tier_index: int,
    ids: Sequence[int],
    phase: str,
    columns: Sequence[Any],
    *,
    skip_locked: bool,
) -> list[Any]:
    """Lock the given rows by primary key; keep those waiting at this tier and phase.

    The WHERE clause is the primary key alone, on purpose. With the job, tier and
    status in it too, Postgres, lacking statistics for a job submitted moments ago,
    estimates one matching row, scans the job's whole (job, status, tier) index range
    and tests each row against the id array: 0.4-1.5 s per 1,000-id batch at 100,000
    items, against ~2 ms for the primary-key probe. The other conditions are checked
    here, on rows this transaction holds locked.
    """
    waiting, running = PHASES[phase]
    now = utcnow()
    extra = (ITEMS.c.job_id, ITEMS.c.tier_index, ITEMS.c.status, ITEMS.c.lease_until)
    rows = session.execute(
        select(*columns, *extra)
        .where(ITEMS.c.id.in_(list(ids)))
        .order_by(ITEMS.c.id)  # one lock order for every worker: no deadlocks
        .with_for_update(skip_locked=skip_locked)
    ).all()
    return [
        r
        for r in rows
        if r.job_id == job_id
        and r.tier_index == tier_index
        and (
            r.status == waiting
            or (r.status == running and r.lease_until is not None and as_utc(r.lease_until) < now)
        )
    ]


def claim(
    session: Session,
    job_id: int,
    tier_index: int,
    ids: Sequence[int],
    *,
    phase: str,
    token: str,
    lease_s: int,
) -> list[Claimed]:
    """Lease the given items still waiting at this tier and phase (or whose lease ran out)."""
    waiting, running = PHASES[phase]
    now = utcnow()
    lease = {
        "status": running,
        "lease_token": token,
        "lease_until": now + timedelta(seconds=lease_s),
        "updated_at": now,
    }
    if session.get_bind().dialect.name == "postgresql":
        mine = [
            r.id
            for r in _locked_waiting(
                session, job_id, tier_index, ids, phase, (ITEMS.c.id,), skip_locked=False
            )
        ]
        if not mine:
            return []
        stmt = ITEMS.update().where(ITEMS.c.id.in_(mine)).values(lease).returning(*_CLAIMED)
        return sorted(_claimed(session.execute(stmt)), key=lambda c: c.pk)
    # SQLite: one writer at a time and a rowid lookup for the id list, so one statement.
    stmt = (
        ITEMS.update()
        .where(
            ITEMS.c.id.in_(list(ids)),
            ITEMS.c.job_id == job_id,
            ITEMS.c.tier_index == tier_index,
            or_(
                ITEMS.c.status == waiting,
                and_(ITEMS.c.status == running, ITEMS.c.lease_until < now),
            ),
        )
        .values(lease)
        .returning(*_CLAIMED)
    )
    return _claimed(session.execute(stmt))


def take(
    session: Session, job_id: int, tier_index: int, ids: Sequence[int], *, token: str
) -> list[Claimed]:
    """Take items a free tier decides inside this same transaction (rules, local).

    On Postgres the rows are locked (``FOR UPDATE SKIP LOCKED``) rather than leased:
    no lease is written, so an item costs one UPDATE (its outcome) instead of two,
    and a concurrent copy of the message skips them. Elsewhere: a normal claim.
    """
    if session.get_bind().dialect.name != "postgresql":
        return claim(session, job_id, tier_index, ids, phase="tier", token=token, lease_s=600)
    return _claimed(
        _locked_waiting(session, job_id, tier_index, ids, "tier", _CLAIMED, skip_locked=True)
    )


@dataclass(slots=True)  # not frozen: built once per item per tier visit, cheaper so
class Settled:
    """How one claimed item leaves this tier visit."""

    pk: int
    decision: str  # accept | escalate | fallback | fail
    tier_index: int
    tier: str
    steps: int
    model_calls: int
    cost_nanos: int
    latency_ms: int
    fallback_used: bool
    baseline_nanos: int = 0
    label: str | None = None
    confidence: float | None = None
    reason: str | None = None
    error: str | None = None
    # shadow samples' cost: spent (budgets count it), never part of the item's cost
    calibration_nanos: int = 0


_NEXT_STATUS = {
    "accept": "done",
    "escalate": "pending",
    "fallback": "fallback",
    "defer": "fallback",  # back to the fallback queue, later
    "fail": "failed",
    "pause": "paused",  # the spend limit: waits, unspent, for `cascade resume`
    "capped": "budget_capped",  # final: a lower tier's answer, kept for review
    "hold": "paused_budget",  # the budget: waits for `cascade resume --budget`
}
FINAL_DECISIONS = ("accept", "fail", "capped")


def settle(
    session: Session,
    token: str,
    attempts: Sequence[dict[str, Any]],
    settled: Sequence[Settled],
    *,
    drop_text: bool = False,
    taken: set[int] | None = None,
) -> list[Settled]:
    """Write attempt rows and item outcomes in one go; returns those whose lease still held.

    ``drop_text`` forgets a finished item's text (the pipeline's ``store_text = false``).
    ``taken``: the items this same transaction took with :func:`take` (no lease to check).
    """
    pks = {s.pk for s in settled} | {a["item_id"] for a in attempts}
    if not pks:
        return []
    if taken is not None:
        held = taken & pks
    else:
        # Only items still leased to us are ours to decide (a slow worker may have lost them).
        held = set(
            session.scalars(
                select(ITEMS.c.id)
                .where(ITEMS.c.id.in_(pks), ITEMS.c.lease_token == token)
                .with_for_update()
            )
        )
    ours = [a for a in attempts if a["item_id"] in held]
    _insert_attempts(session, ours)
    _record_orphans(session, [a for a in attempts if a["item_id"] not in held])
    kept = [s for s in settled if s.pk in held]
    now = utcnow()
    # One statement per shape of update, not one per item.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for s in kept:
        row = settled_values(s, now, drop_text)
        groups.setdefault(tuple(sorted(row)), []).append(row | {"id": s.pk})
    for rows in groups.values():
        _update_items(session, rows)
    return kept


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert_attempts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Attempt rows, idempotent on (item, step): a retried write adds nothing."""
    if not rows:
        return
    if _postgres(session):
        pgbulk.insert_rows(session, ATTEMPTS, rows, conflict=("item_id", "step"))
        return
    stmt = _insert(session, ATTEMPTS).on_conflict_do_nothing(index_elements=["item_id", "step"])
    session.execute(stmt, rows)


def _update_items(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Item rows of one shape, by ``id``; the counters in ``_ADDED`` are added to."""
    if not rows:
        return
    if _postgres(session):
        pgbulk.update_rows(session, ITEMS, "id", rows, added=_ADDED)
        return
    values: dict[str, Any] = {
        c: ITEMS.c[c] + bindparam(f"p_{c}", type_=ITEMS.c[c].type)
        if c in _ADDED
        else bindparam(f"p_{c}", type_=ITEMS.c[c].type)
        for c in rows[0]
        if c != "id"
    }
    session.execute(
        ITEMS.update().where(ITEMS.c.id == bindparam("p_id")).values(values),
        [{f"p_{k}": v for k, v in r.items()} for r in rows],
    )


# Calls made by a worker that lost its lease were still made (and billed): they are
# kept, deciding nothing, numbered from here so they never take a step number that
# the worker now holding the item will write.
ORPHAN_STEP_BASE = 1_000_000


def _record_orphans(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    # A retried write of the same lost batch must not record its calls twice.
    seen = {
        (pk, rid)
        for pk, rid in session.execute(
            select(Attempt.item_id, Attempt.request_id).where(
                Attempt.item_id.in_({r["item_id"] for r in rows}),
                Attempt.request_id.is_not(None),
            )
        ).tuples()
    }
    rows = [
        r for r in rows if r["request_id"] is None or (r["item_id"], r["request_id"]) not in seen
    ]
    if not rows:
        return
    taken: dict[int, int] = dict(
        session.execute(
            select(Attempt.item_id, func.max(Attempt.step))
            .where(
                Attempt.item_id.in_({r["item_id"] for r in rows}),
                Attempt.step >= ORPHAN_STEP_BASE,
            )
            .group_by(Attempt.item_id)
        )
        .tuples()
        .all()
    )
    orphans: list[dict[str, Any]] = []
    spent: dict[int, list[int]] = {}
    for r in rows:
        pk = r["item_id"]
        step = max(taken.get(pk, ORPHAN_STEP_BASE - 1), ORPHAN_STEP_BASE - 1) + 1
        taken[pk] = step
        orphans.append({**r, "step": step, "decision": None})
        if r["role"] == "shadow":
            continue  # calibration spend, never the item's cost
        acc = spent.setdefault(pk, [0, 0])
        acc[0] += int(r["cost_nanos"])
        acc[1] += 1 if r["role"] != "rules" else 0
    _insert_attempts(session, orphans)
    _update_items(
        session, [{"id": pk, "cost_nanos": c, "model_calls": n} for pk, (c, n) in spent.items()]
    )


_ADDED = ("steps", "model_calls", "cost_nanos", "latency_ms", "deferrals")


def settled_values(s: Settled, now: datetime, drop_text: bool) -> dict[str, Any]:
    """The columns a tier visit's outcome sets; the counters in ``_ADDED`` are increments.

    Built as one dict (set item by item, no merged temporaries): rules at the door
    call this once per item.
    """
    decision = s.decision
    values: dict[str, Any] = {
        "status": _NEXT_STATUS[decision],
        "tier_index": s.tier_index + 1 if decision == "escalate" else s.tier_index,
        "lease_token": None,
        "lease_until": None,
        "updated_at": now,
        "steps": s.steps,
        "model_calls": s.model_calls,
        "cost_nanos": s.cost_nanos,
        "latency_ms": s.latency_ms,
        "deferrals": 1 if decision == "defer" else 0,
    }
    if s.fallback_used:
        values["fallback_used"] = True
    if decision in FINAL_DECISIONS:
        values["label"] = s.label
        values["confidence"] = s.confidence
        values["reason"] = s.reason
        values["final_tier"] = s.tier
        values["error"] = s.error
        values["baseline_nanos"] = s.baseline_nanos
        values["finished_at"] = now
        if drop_text:
            values["text"] = None
    elif decision == "escalate":
        if s.label is not None:
            # the lower tier's answer, kept in case a budget caps the item later
            values["label"] = s.label
            values["confidence"] = s.confidence
    elif decision in ("fallback", "defer", "pause", "hold"):
        values["error"] = s.error  # the fallback task reports it if nothing serves the item
    return values


# -- sweeping -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Stray:
    job_id: int
    tier_index: int
    phase: str
    ids: list[int]


def strays(
    session: Session, *, idle_s: int, fallback_idle_s: int | None = None, limit: int = 10_000
) -> list[Stray]:
    """Unfinished items nobody is working on: waiting too long, or their lease expired.

    Items waiting at a tier count as lost after ``idle_s``; items waiting for the
    fallback chain (possibly deferred on purpose) after ``fallback_idle_s``.
    """
    now = utcnow()
    idle_before = now - timedelta(seconds=idle_s)
    fallback_before = now - timedelta(seconds=fallback_idle_s or idle_s)
    rows = session.execute(
        select(ITEMS.c.job_id, ITEMS.c.tier_index, ITEMS.c.status, ITEMS.c.id)
        .where(
            or_(
                and_(ITEMS.c.status == "pending", ITEMS.c.updated_at < idle_before),
                and_(ITEMS.c.status == "fallback", ITEMS.c.updated_at < fallback_before),
                and_(
                    ITEMS.c.status.in_(("running", "fallback_running")),
                    ITEMS.c.lease_until < now,
                ),
            )
        )
        .order_by(ITEMS.c.id)
        .limit(limit)
    ).all()
    groups: dict[tuple[int, int, str], list[int]] = {}
    for r in rows:
        phase = "fallback" if r.status.startswith("fallback") else "tier"
        groups.setdefault((r.job_id, r.tier_index, phase), []).append(r.id)
    # Touch them so a second sweeper pass does not re-send the same items at once.
    if rows:
        session.execute(
            ITEMS.update()
            .where(
                ITEMS.c.id.in_([r.id for r in rows]),
                ITEMS.c.status.in_(("pending", "fallback")),
            )
            .values(updated_at=now)
        )
    return [Stray(j, t, p, ids) for (j, t, p), ids in groups.items()]


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

"""Every write the service makes, in bulk and idempotent.

Postgres (or SQLite in the embedded runtime) is the source of truth; the broker
only rings the doorbell. A tier task *claims* its items here (only items still
at that tier and not leased by a live worker), so a redelivered message does no
double work; results are written under the claim's lease token, attempt rows
are keyed by (item, step) and inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.tables import Attempt, Item, Job, RejectedLine, Submission

ITEMS: Table = Item.__table__  # type: ignore[assignment]
JOBS: Table = Job.__table__  # type: ignore[assignment]
UNFINISHED = ("pending", "running", "fallback", "fallback_running")
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


def open_job(session: Session, name: str, pipeline: dict[str, Any]) -> tuple[Job, bool]:
    """Get the job called ``name`` (its pipeline must match) or create it. Marks it submitting."""
    job = session.scalars(select(Job).where(Job.name == name).with_for_update()).first()
    if job is not None:
        if job.pipeline != pipeline:
            raise JobConflictError(
                f"job {name!r} exists with a different pipeline ({job.pipeline_name}); "
                "use another --job-name or the same pipeline file"
            )
        job.status, job.finished_at, job.updated_at = "submitting", None, utcnow()
        session.flush()
        return job, False
    job = Job(name=name, pipeline_name=pipeline["name"], pipeline=pipeline, status="submitting")
    session.add(job)
    session.flush()
    return job, True


def list_jobs(session: Session, limit: int = 50) -> list[Job]:
    return list(session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)))


def set_job_running(session: Session, job_id: int) -> None:
    session.execute(
        JOBS.update()
        .where(JOBS.c.id == job_id, JOBS.c.status == "submitting")
        .values(status="running", updated_at=utcnow())
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
    return bool(res.rowcount)  # type: ignore[attr-defined]


# -- submissions --------------------------------------------------------------
def start_submission(session: Session, job_id: int, source: str) -> int:
    sub = Submission(job_id=job_id, source=source[:500])
    session.add(sub)
    session.flush()
    return sub.id


def finish_submission(session: Session, submission_id: int, counts: dict[str, int]) -> None:
    sub = session.get(Submission, submission_id)
    assert sub is not None
    sub.lines_read = counts.get("lines_read", 0)
    sub.items_added = counts.get("items_added", 0)
    sub.items_existing = counts.get("items_existing", 0)
    sub.lines_rejected = counts.get("lines_rejected", 0)
    sub.finished_at = utcnow()


@dataclass(frozen=True, slots=True)
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


def add_items(
    session: Session, job_id: int, submission_id: int, batch: Sequence[NewItem]
) -> AddResult:
    """Insert a batch; items whose id the job already has are not inserted again."""
    result = AddResult([], [], 0)
    first_line: dict[str, int] = {}
    unique: list[NewItem] = []
    for it in batch:  # an id seen twice inside this batch: the first occurrence wins
        if it.key in first_line:
            result.duplicates.append((it.line_no, it.key, first_line[it.key]))
        else:
            first_line[it.key] = it.line_no
            unique.append(it)
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
    if missing:
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
    return result


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
        .values(
            status=running,
            lease_token=token,
            lease_until=now + timedelta(seconds=lease_s),
            updated_at=now,
        )
        .returning(ITEMS.c.id, ITEMS.c.text, ITEMS.c.steps, ITEMS.c.error)
    )
    return [Claimed(r.id, r.text or "", r.steps, r.error) for r in session.execute(stmt)]


@dataclass(frozen=True, slots=True)
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


_NEXT_STATUS = {"accept": "done", "escalate": "pending", "fallback": "fallback", "fail": "failed"}


def settle(
    session: Session, token: str, attempts: Sequence[dict[str, Any]], settled: Sequence[Settled]
) -> list[Settled]:
    """Write attempt rows and item outcomes in one go; returns those whose lease still held."""
    if attempts:
        stmt = _insert(session, Attempt.__table__).on_conflict_do_nothing(
            index_elements=["item_id", "step"]
        )
        session.execute(stmt, list(attempts))
    now = utcnow()
    kept: list[Settled] = []
    for s in settled:
        final = s.decision in ("accept", "fail")
        values: dict[str, Any] = {
            "status": _NEXT_STATUS[s.decision],
            "tier_index": s.tier_index + 1 if s.decision == "escalate" else s.tier_index,
            "steps": ITEMS.c.steps + s.steps,
            "model_calls": ITEMS.c.model_calls + s.model_calls,
            "cost_nanos": ITEMS.c.cost_nanos + s.cost_nanos,
            "latency_ms": ITEMS.c.latency_ms + s.latency_ms,
            "lease_token": None,
            "lease_until": None,
            "updated_at": now,
        }
        if s.fallback_used:
            values["fallback_used"] = True
        if s.decision == "fallback":
            values["error"] = s.error  # the fallback task reports it if nothing serves the item
        if final:
            values |= {
                "label": s.label,
                "confidence": s.confidence,
                "reason": s.reason,
                "final_tier": s.tier,
                "error": s.error,
                "baseline_nanos": s.baseline_nanos,
                "finished_at": now,
            }
        res = session.execute(
            ITEMS.update().where(ITEMS.c.id == s.pk, ITEMS.c.lease_token == token).values(values)
        )
        if res.rowcount:  # type: ignore[attr-defined]
            kept.append(s)
    return kept


# -- sweeping -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Stray:
    job_id: int
    tier_index: int
    phase: str
    ids: list[int]


def strays(session: Session, *, idle_s: int, limit: int = 10_000) -> list[Stray]:
    """Unfinished items nobody is working on: waiting longer than ``idle_s``, or lease expired."""
    now = utcnow()
    idle_before = now - timedelta(seconds=idle_s)
    rows = session.execute(
        select(ITEMS.c.job_id, ITEMS.c.tier_index, ITEMS.c.status, ITEMS.c.id)
        .where(
            or_(
                and_(ITEMS.c.status.in_(("pending", "fallback")), ITEMS.c.updated_at < idle_before),
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
            .where(ITEMS.c.id == bindparam("pk"), ITEMS.c.status.in_(("pending", "fallback")))
            .values(updated_at=now),
            [{"pk": r.id} for r in rows],
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

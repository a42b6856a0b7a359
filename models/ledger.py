"""The ledger of tier visits: claim items under a lease, journal each model call as it
is sent and as it returns, settle each item's visit, keep leases alive, find strays.

The ledger is the bill: a call is written as *in flight* before its request leaves
(:func:`journal`), and replaced by its reply or error when that returns, so a worker
killed mid-call leaves a row behind. The next claim of the item turns such a row into
``unknown`` (sent, outcome never seen, cost estimated) and hands every row of the
unfinished visit back to the caller (``Claimed.recorded``): answers already paid for
are reused, not bought again.

Attempt rows are keyed by (item, step). Results are written under the claim's lease
token: a worker that lost its lease (it was too slow, and the item was claimed again)
records its calls apart, numbered from ``ORPHAN_STEP_BASE``, deciding nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, text, tuple_
from sqlalchemy.orm import Session

from common.lifecycle import (
    PHASE_STATUS,
    RUNNING,
    TRANSITIONS,
    Outcome,
    Phase,
    Status,
    Verdict,
    phase_of,
)
from models import pgbulk, reuse
from models.db import as_utc
from models.repo import ATTEMPTS, ITEMS, _insert, utcnow
from models.tables import Attempt

# Calls made by a worker that lost its lease were still made (and billed): they are
# kept, deciding nothing, numbered from here so they never take a step number that
# the worker now holding the item will write.
ORPHAN_STEP_BASE = 1_000_000
# One lock for the fleet's sweeper: whoever takes it sweeps, the others skip.
SWEEP_LOCK_KEY = 0x63617363  # "casc"
RELEASED = "cascade.reuse.released"


def new_token() -> str:
    return secrets.token_hex(8)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- claims -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Claimed:
    pk: int
    text: str
    steps: int  # the item's next step number
    error: str | None = None  # why the item was handed to the fallback chain
    error_kind: str | None = None  # and the kind of that failure (an attempts outcome)
    deferrals: int = 0
    label: str | None = None  # the best answer of a lower tier, if it has one
    confidence: float | None = None
    # attempt rows of a visit a worker began and never settled (it died): calls made
    recorded: tuple[dict[str, Any], ...] = ()


_CLAIMED = (
    ITEMS.c.id,
    ITEMS.c.text,
    ITEMS.c.steps,
    ITEMS.c.error,
    ITEMS.c.error_kind,
    ITEMS.c.deferrals,
    ITEMS.c.label,
    ITEMS.c.confidence,
)


def _claimed(rows: Any) -> list[Claimed]:
    return [
        Claimed(
            r.id, r.text or "", r.steps, r.error, r.error_kind, r.deferrals, r.label, r.confidence
        )
        for r in rows
    ]


def _locked_waiting(
    session: Session,
    job_id: int,
    tier_index: int,
    ids: Sequence[int],
    phase: Phase,
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
    waiting, running = PHASE_STATUS[phase]
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
    phase: Phase | str,
    token: str,
    lease_s: int,
) -> list[Claimed]:
    """Lease the given items still waiting at this tier and phase (or whose lease ran out).

    An item whose last visit was cut off (a worker died) comes with that visit's rows
    in ``recorded``; rows still ``in_flight`` are ``unknown`` from now on.
    """
    phase = Phase(phase)
    waiting, running = PHASE_STATUS[phase]
    now = utcnow()
    lease = {
        "status": running,
        "lease_token": token,
        "lease_until": now + timedelta(seconds=lease_s),
        "updated_at": now,
    }
    if _postgres(session):
        mine = [
            r.id
            for r in _locked_waiting(
                session, job_id, tier_index, ids, phase, (ITEMS.c.id,), skip_locked=False
            )
        ]
        if not mine:
            return []
        stmt = ITEMS.update().where(ITEMS.c.id.in_(mine)).values(lease).returning(*_CLAIMED)
        claimed = sorted(_claimed(session.execute(stmt)), key=lambda c: c.pk)
    else:
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
        claimed = _claimed(session.execute(stmt))
    return _with_recorded(session, claimed)


def _with_recorded(session: Session, claimed: list[Claimed]) -> list[Claimed]:
    """Attach the rows of each item's unsettled visit (steps at or past its ``steps``)."""
    if not claimed:
        return claimed
    start = {c.pk: c.steps for c in claimed}
    rows = session.execute(
        select(ATTEMPTS).where(
            ATTEMPTS.c.item_id.in_(list(start)), ATTEMPTS.c.step < ORPHAN_STEP_BASE
        )
    ).mappings()
    found: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r["step"] >= start[r["item_id"]]:
            found.setdefault(r["item_id"], []).append(dict(r))
    if not found:
        return claimed
    cut = [
        (r["item_id"], r["step"])
        for rs in found.values()
        for r in rs
        if r["outcome"] == Outcome.IN_FLIGHT
    ]
    for pk, step in cut:
        session.execute(
            ATTEMPTS.update()
            .where(ATTEMPTS.c.item_id == pk, ATTEMPTS.c.step == step)
            .values(outcome=Outcome.UNKNOWN, error="the worker stopped before the reply")
        )
    out = []
    for c in claimed:
        rs = found.get(c.pk)
        if rs:
            for row in rs:
                if row["outcome"] == Outcome.IN_FLIGHT:
                    row["outcome"] = Outcome.UNKNOWN
                    row["error"] = "the worker stopped before the reply"
            rs.sort(key=lambda r: int(r["step"]))
            c = Claimed(**{**_fields(c), "recorded": tuple(rs)})
        out.append(c)
    return out


def _fields(c: Claimed) -> dict[str, Any]:
    return {f: getattr(c, f) for f in Claimed.__dataclass_fields__}


def take(
    session: Session, job_id: int, tier_index: int, ids: Sequence[int], *, token: str
) -> list[Claimed]:
    """Take items a free tier decides inside this same transaction (rules, local).

    On Postgres the rows are locked (``FOR UPDATE SKIP LOCKED``) rather than leased:
    no lease is written, so an item costs one UPDATE (its outcome) instead of two,
    and a concurrent copy of the message skips them. Elsewhere: a normal claim.
    """
    if not _postgres(session):
        return claim(session, job_id, tier_index, ids, phase=Phase.TIER, token=token, lease_s=600)
    return _claimed(
        _locked_waiting(session, job_id, tier_index, ids, Phase.TIER, _CLAIMED, skip_locked=True)
    )


def extend_leases(session: Session, tokens: Sequence[str], lease_s: int) -> int:
    """A live worker's heartbeat: push the leases of every item it holds forward."""
    if not tokens:
        return 0
    now = utcnow()
    res = session.execute(
        ITEMS.update()
        .where(ITEMS.c.lease_token.in_(list(tokens)), ITEMS.c.status.in_(list(RUNNING)))
        .values(lease_until=now + timedelta(seconds=lease_s))
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


# -- the call journal -----------------------------------------------------------
def journal(
    session: Session, rows: Sequence[dict[str, Any]], tokens: Mapping[int, str]
) -> set[int]:
    """Write call rows (in flight, or returned) of items still leased under ``tokens``.

    Returns the items no longer held: an in-flight row of theirs is not written (the
    caller does not send that call); a returned call of theirs is kept apart as an
    orphan (it was made and billed). A row replaces an earlier row of the same step
    only while that one decides nothing (an in-flight row, or a reply not settled).
    """
    if not rows:
        return set()
    held = _held(session, tokens)
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    lost: list[dict[str, Any]] = []
    for r in rows:
        if r["item_id"] in held:
            latest[(r["item_id"], r["step"])] = r
        elif r["outcome"] != Outcome.IN_FLIGHT:
            lost.append(r)
    _upsert_attempts(session, list(latest.values()), only_undecided=True)
    _record_orphans(session, lost)
    return {r["item_id"] for r in rows} - held


def _held(session: Session, tokens: Mapping[int, str], *, lock: bool = False) -> set[int]:
    """The items still leased under the given token (one per item)."""
    if not tokens:
        return set()
    stmt = select(ITEMS.c.id, ITEMS.c.lease_token).where(ITEMS.c.id.in_(list(tokens)))
    if _postgres(session):
        # FOR SHARE: a claim by another worker waits until this transaction is done
        stmt = stmt.with_for_update() if lock else stmt.with_for_update(read=True)
    return {pk for pk, token in session.execute(stmt) if token == tokens[pk]}


# -- settling -----------------------------------------------------------------
@dataclass(slots=True)  # not frozen: built once per item per tier visit, cheaper so
class Settled:
    """How one claimed item leaves this tier visit."""

    pk: int
    decision: Verdict
    tier_index: int
    tier: str
    steps: int | None  # the item's next step number after the visit (None: unchanged)
    model_calls: int
    cost_nanos: int
    latency_ms: int
    fallback_used: bool
    baseline_nanos: int = 0
    label: str | None = None
    confidence: float | None = None
    reason: str | None = None
    error: str | None = None
    error_kind: str | None = None  # a fallback's failure kind (the failed call's outcome)
    # shadow samples' cost: spent (budgets count it), never part of the item's cost
    calibration_nanos: int = 0


def settle(
    session: Session,
    token: str | Mapping[int, str],
    attempts: Sequence[dict[str, Any]],
    settled: Sequence[Settled],
    *,
    drop_text: bool = False,
    taken: set[int] | None = None,
) -> list[Settled]:
    """Write attempt rows and item outcomes in one go; returns those whose lease still held.

    ``token``: the claim's lease token, or one per item (a worker process settles
    items of many claims together).
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
        tokens = dict.fromkeys(pks, token) if isinstance(token, str) else token
        held = _held(session, {pk: tokens[pk] for pk in pks if pk in tokens}, lock=True)
    ours = [a for a in attempts if a["item_id"] in held]
    _upsert_attempts(session, ours, only_undecided=False)
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
    # repeats of a finished item's text take its decision now (models.reuse)
    finals = [s.pk for s in kept if TRANSITIONS[s.decision].final]
    session.info.setdefault(RELEASED, []).extend(
        reuse.settle_dependents(session, finals, drop_text=drop_text)
    )
    return kept


def released(session: Session) -> list[reuse.Released]:
    """Repeats this transaction's settles put back on a tier (their source failed)."""
    found: list[reuse.Released] = session.info.pop(RELEASED, [])
    return found


def _upsert_attempts(
    session: Session, rows: Sequence[dict[str, Any]], *, only_undecided: bool
) -> None:
    """Attempt rows by (item, step): a row written again replaces the earlier one.

    ``only_undecided``: replace only a row that decides nothing yet (the journal never
    overwrites what a settle wrote).
    """
    if not rows:
        return
    if _postgres(session):
        pgbulk.upsert_rows(
            session,
            ATTEMPTS,
            rows,
            conflict=("item_id", "step"),
            where="attempts.decision IS NULL" if only_undecided else None,
        )
        return
    stmt = _insert(session, ATTEMPTS)
    columns = [c for c in rows[0] if c not in ("item_id", "step")]
    stmt = stmt.on_conflict_do_update(
        index_elements=["item_id", "step"],
        set_={c: stmt.excluded[c] for c in columns},
        where=ATTEMPTS.c.decision.is_(None) if only_undecided else None,
    )
    session.execute(stmt, list(rows))


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


def _record_orphans(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    # A call already in the ledger (journaled while the lease held, or a retried write
    # of the same lost batch) is not recorded twice.
    seen = {
        (pk, rid)
        for pk, rid in session.execute(
            select(Attempt.item_id, Attempt.request_id).where(
                Attempt.item_id.in_({r["item_id"] for r in rows}),
                Attempt.request_id.is_not(None),
            )
        )
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
        ).all()
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


_ADDED = ("model_calls", "cost_nanos", "latency_ms", "deferrals")


def settled_values(s: Settled, now: datetime, drop_text: bool) -> dict[str, Any]:
    """The columns a tier visit's outcome sets; the counters in ``_ADDED`` are increments.

    Built as one dict (set item by item, no merged temporaries): rules at the door
    call this once per item.
    """
    move = TRANSITIONS[s.decision]
    values: dict[str, Any] = {
        "status": move.status,
        "tier_index": s.tier_index + 1 if move.next_tier else s.tier_index,
        "lease_token": None,
        "lease_until": None,
        "updated_at": now,
        "model_calls": s.model_calls,
        "cost_nanos": s.cost_nanos,
        "latency_ms": s.latency_ms,
        "deferrals": 1 if move.later else 0,
    }
    if s.steps is not None:
        values["steps"] = s.steps
    if s.fallback_used:
        values["fallback_used"] = True
    if move.final:
        values["label"] = s.label
        values["confidence"] = s.confidence
        values["reason"] = s.reason
        values["final_tier"] = s.tier
        values["error"] = s.error
        values["baseline_nanos"] = s.baseline_nanos
        values["finished_at"] = now
        if drop_text:
            values["text"] = None
    elif move.next_tier:
        if s.label is not None:
            # the lower tier's answer, kept in case a budget caps the item later
            values["label"] = s.label
            values["confidence"] = s.confidence
    elif move.keeps_error:
        values["error"] = s.error  # the fallback task reports it if nothing serves the item
        values["error_kind"] = s.error_kind
    return values


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


def waiting_tiers(session: Session, *, idle_s: float) -> list[tuple[int, int]]:
    """(job, tier) pairs with items waiting at a tier for longer than ``idle_s``: the
    sweeper asks the broker whether a message still carries them (see :func:`strays`)."""
    before = utcnow() - timedelta(seconds=idle_s)
    rows = session.execute(
        select(ITEMS.c.job_id, ITEMS.c.tier_index)
        .where(ITEMS.c.status == Status.PENDING, ITEMS.c.updated_at < before)
        .distinct()
    ).all()
    return [(r.job_id, r.tier_index) for r in rows]


def strays(
    session: Session,
    *,
    idle_s: int,
    fallback_idle_s: int | None = None,
    quiet: Sequence[tuple[int, int]] = (),
    quiet_idle_s: float = 0,
    limit: int = 10_000,
) -> list[Stray]:
    """Unfinished items nobody is working on: waiting too long, or their lease expired.

    Items waiting at a tier count as lost after ``idle_s``, or after ``quiet_idle_s``
    at a (job, tier) of ``quiet``, whose queue holds no message (a broker that lost its
    messages); items waiting for the fallback chain (possibly deferred on purpose) after
    ``fallback_idle_s``.
    """
    now = utcnow()
    idle_before = now - timedelta(seconds=idle_s)
    fallback_before = now - timedelta(seconds=fallback_idle_s or idle_s)
    lost = [
        and_(ITEMS.c.status == Status.PENDING, ITEMS.c.updated_at < idle_before),
        and_(ITEMS.c.status == Status.FALLBACK, ITEMS.c.updated_at < fallback_before),
        and_(ITEMS.c.status.in_(list(RUNNING)), ITEMS.c.lease_until < now),
    ]
    if quiet:
        lost.append(
            and_(
                ITEMS.c.status == Status.PENDING,
                ITEMS.c.updated_at < now - timedelta(seconds=quiet_idle_s),
                tuple_(ITEMS.c.job_id, ITEMS.c.tier_index).in_(list(quiet)),
            )
        )
    rows = session.execute(
        select(ITEMS.c.job_id, ITEMS.c.tier_index, ITEMS.c.status, ITEMS.c.id)
        .where(or_(*lost))
        .order_by(ITEMS.c.id)
        .limit(limit)
    ).all()
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

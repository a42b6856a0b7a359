"""Claims: items taken under a lease token, a visit a dead worker left continued, and
the call journal written as calls leave and return."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from common.lifecycle import (
    PHASE_STATUS,
    RUNNING,
    Outcome,
    Phase,
)
from models import pgbulk
from models.db import as_utc
from models.repo import ATTEMPTS, ITEMS, utcnow

# Calls made by a worker that lost its lease were still made (and billed): they are
# kept, deciding nothing, numbered from here so they never take a step number that
# the worker now holding the item will write.
ORPHAN_STEP_BASE = 1_000_000
# One lock for the fleet's sweeper: whoever takes it sweeps, the others skip.
SWEEP_LOCK_KEY = 0x63617363  # "casc"


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
        .where(pgbulk.among(session, ITEMS.c.id, ids))
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
        stmt = (
            ITEMS.update()
            .where(pgbulk.among(session, ITEMS.c.id, mine))
            .values(lease)
            .returning(*_CLAIMED)
        )
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
            pgbulk.among(session, ATTEMPTS.c.item_id, start), ATTEMPTS.c.step < ORPHAN_STEP_BASE
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

"""Writing a visit: the call journal (each call as it leaves and returns), then its
attempt rows and each item's way out of its tier, all under the claim's lease token."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from common.lifecycle import TRANSITIONS, Outcome, Verdict
from models import pgbulk, reuse
from models.ledger.claims import ORPHAN_STEP_BASE, _postgres
from models.repo import ATTEMPTS, ITEMS, _insert, utcnow
from models.tables import Attempt

RELEASED = "cascade.reuse.released"


# -- the call journal -----------------------------------------------------------
def journal(
    session: Session,
    rows: Sequence[dict[str, Any]],
    tokens: Mapping[int, str],
    *,
    held: set[int] | None = None,
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


def recover_calls(
    session: Session, replies: Sequence[dict[str, Any]], unsent: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """What a dead worker's spool (``tasks.spool``) knew and the ledger did not yet.

    ``replies``: call rows whose reply (or error) came back; each replaces its step's
    row while that is still ``in_flight`` (nobody has claimed the item since), so the
    next claim reuses the answer instead of buying it again. ``unsent``: (item, step)
    of calls whose row was written and whose request never left: their ``in_flight``
    row goes. A row that is anything else by now is left as it is. Returns how many
    rows each changed.
    """
    filled = removed = 0
    still = ATTEMPTS.c.outcome == Outcome.IN_FLIGHT
    for row in replies:
        values = {k: v for k, v in row.items() if k not in ("item_id", "step", "reuse_of")}
        res = session.execute(
            ATTEMPTS.update()
            .where(ATTEMPTS.c.item_id == row["item_id"], ATTEMPTS.c.step == row["step"], still)
            .values(values)
        )
        filled += int(res.rowcount)  # type: ignore[attr-defined]
    for pk, step in unsent:
        res = session.execute(
            ATTEMPTS.delete().where(ATTEMPTS.c.item_id == pk, ATTEMPTS.c.step == step, still)
        )
        removed += int(res.rowcount)  # type: ignore[attr-defined]
    return filled, removed


def leases(session: Session, pks: Iterable[int], *, share: bool = False) -> dict[int, str | None]:
    """Each item's lease token, its row locked to the end of the transaction on Postgres
    (``share``: FOR SHARE; a claim by another worker waits until this transaction is done).
    """
    pks = set(pks)
    if not pks:
        return {}
    # in id order, as every statement here that locks several items: two transactions
    # that lock rows in different orders deadlock (a settle against submit's reuse
    # lookup did, in the mixed bench)
    stmt = (
        select(ITEMS.c.id, ITEMS.c.lease_token)
        .where(pgbulk.among(session, ITEMS.c.id, pks))
        .order_by(ITEMS.c.id)
    )
    if _postgres(session):
        stmt = stmt.with_for_update(read=share)
    return {row[0]: row[1] for row in session.execute(stmt)}


def _held(session: Session, tokens: Mapping[int, str], *, lock: bool = False) -> set[int]:
    """The items still leased under the given token (one per item)."""
    current = leases(session, tokens, share=not lock)
    return {pk for pk, token in current.items() if token == tokens[pk]}


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
    held: set[int] | None = None,
) -> list[Settled]:
    """Write attempt rows and item outcomes in one go; returns those whose lease still held.

    ``token``: the claim's lease token, or one per item (a worker process settles
    items of many claims together).
    ``drop_text`` forgets a finished item's text (the pipeline's ``store_text = false``).
    ``held``: the items this same transaction took with :func:`take`, or found leased to
    it with :func:`leases` (no lease to check here).
    """
    pks = {s.pk for s in settled} | {a["item_id"] for a in attempts}
    if not pks:
        return []
    if held is not None:
        held = held & pks
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

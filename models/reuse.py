"""A text is classified once per pipeline version: repeats take the decision of the first.

Moderation traffic repeats (spam waves, copy-paste posts). At intake every item gets
``text_hash``: 64 bits of BLAKE2b over the pipeline's version and the item's
normalised text (Unicode NFKC, runs of whitespace made one space, ends trimmed; case
is kept, since shouting can be what a policy judges). Then, in the transaction that
inserted them, :func:`hold_repeats` looks at the new items still pending:

- a text an earlier job of the same pipeline version decided within ``reuse_days``
  (status ``done``): the item takes that decision now, with zero calls;
- a text an earlier item of this job carries (the *source*, the job's first item with
  it): if the source is decided, the item takes its decision now; if it is still in
  flight, the item waits for it (status ``reuse_wait``, ``reuse_of`` = the source) and
  is never put on a tier queue.

When a source reaches a final decision, :func:`settle_dependents` (called inside the
source's settle transaction) gives its waiting repeats that decision: ``done`` or
``budget_capped``, the source's label, confidence, reason, tier and baseline, zero
cost, and one ledger row each (role ``reuse``, ``reuse_of`` = the source, no call).
A source that *failed* hands on: its first waiting repeat becomes an ordinary
pending item at tier 0 (the new source, returned for the caller to enqueue) and
the others wait on it. :func:`rescue` finds repeats whose source is already final
(a settle that did not call :func:`settle_dependents`): the sweeper's backstop.

Races: :func:`hold_repeats` locks the sources (``FOR UPDATE``) before reading their
status, and a settle locks the item it settles, so on Postgres either the settle
commits first (and the repeat sees a final source and takes its decision at once)
or the repeat's ``reuse_wait`` row commits first (and the settle finds it).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common.lifecycle import Outcome, Status, Verdict
from models import pgbulk
from models.attempt_rows import attempt_row
from models.repo import ATTEMPTS, ITEMS, NewItem, utcnow

WAIT = Status.REUSE_WAIT
ROLE = "reuse"
# final statuses a repeat takes from its source, and the verdict its ledger row records
DECISION_OF = {
    Status.DONE: Verdict.ACCEPT,
    Status.BUDGET_CAPPED: Verdict.CAPPED,
    Status.REVIEW: Verdict.REVIEW,
}
TAKEN = tuple(DECISION_OF)
# Pipeline keys that do not change how a text is classified: not part of the version.
UNVERSIONED = frozenset({"reuse", "reuse_days", "store_text", "daily_budget_usd", "limits"})


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def pipeline_version(stored: Mapping[str, Any]) -> bytes:
    """A digest of everything in the pipeline that shapes a decision."""
    kept = {k: v for k, v in stored.items() if k not in UNVERSIONED}
    return hashlib.blake2b(json.dumps(kept, sort_keys=True).encode(), digest_size=16).digest()


class Hasher:
    """``text_hash`` for one pipeline version (the version's hash state is made once)."""

    def __init__(self, version: bytes) -> None:
        self._base = hashlib.blake2b(version, digest_size=8)

    def __call__(self, text: str) -> int:
        h = self._base.copy()
        h.update(normalise(text).encode())
        return int.from_bytes(h.digest(), "big", signed=True)  # fits a BIGINT

    def stamp(self, items: Iterable[NewItem]) -> None:
        for it in items:
            it.text_hash = self(it.text)


@dataclass(slots=True)
class Held:
    """What :func:`hold_repeats` did with a chunk's new items."""

    waiting: set[int]  # now reuse_wait: not to be enqueued
    taken: set[int]  # decided at once from a decided source: not to be enqueued

    @property
    def skip(self) -> set[int]:
        return self.waiting | self.taken


@dataclass(frozen=True, slots=True)
class Released:
    """Items that became ordinary pending items at ``tier_index`` (their source failed)."""

    job_id: int
    tier_index: int
    ids: list[int]


_SOURCE_COLS = (
    ITEMS.c.id,
    ITEMS.c.status,
    ITEMS.c.label,
    ITEMS.c.confidence,
    ITEMS.c.reason,
    ITEMS.c.final_tier,
    ITEMS.c.tier_index,
    ITEMS.c.baseline_nanos,
)


def hold_repeats(
    session: Session,
    job_id: int,
    ids: Sequence[int],
    *,
    reuse_days: int = 0,
    drop_text: bool = False,
    now: datetime | None = None,
) -> Held:
    """Repeats among the new, still pending items ``ids``: decided now or set waiting."""
    held = Held(set(), set())
    if not ids:
        return held
    rows = session.execute(
        select(ITEMS.c.id, ITEMS.c.text_hash).where(
            ITEMS.c.id.in_(ids), ITEMS.c.status == Status.PENDING, ITEMS.c.text_hash.is_not(None)
        )
    ).all()
    if not rows:
        return held
    now = now or utcnow()
    source = _sources(session, job_id, {int(r.text_hash) for r in rows}, reuse_days, now)
    pairs = [  # (repeat, source)
        (int(r.id), source[int(r.text_hash)])
        for r in rows
        if int(r.text_hash) in source and source[int(r.text_hash)] != r.id
    ]
    if not pairs:
        return held
    sources = {
        int(s.id): s
        for s in session.execute(
            select(*_SOURCE_COLS)
            .where(ITEMS.c.id.in_({src for _, src in pairs}))
            .order_by(ITEMS.c.id)
            .with_for_update()
        )
    }
    take: list[tuple[int, int, int, Any]] = []  # (repeat, job, steps, source row)
    wait: list[dict[str, Any]] = []
    for pk, src in pairs:
        row = sources.get(src)
        if row is None or row.status == Status.FAILED:
            continue  # a source gone bad meanwhile: the repeat goes its own way
        if row.status in TAKEN:
            take.append((pk, job_id, 0, row))
            held.taken.add(pk)
        else:
            wait.append({"p_id": pk, "p_src": src, "p_now": now})
            held.waiting.add(pk)
    if wait:
        session.execute(
            ITEMS.update()
            .where(ITEMS.c.id == bindparam("p_id"))
            .values(status=WAIT, reuse_of=bindparam("p_src"), updated_at=bindparam("p_now")),
            wait,
        )
    _take(session, take, now, drop_text)
    return held


def _sources(
    session: Session, job_id: int, hashes: set[int], reuse_days: int, now: datetime
) -> dict[int, int]:
    """Per text hash, the item a repeat takes its decision from: the latest one decided
    in an earlier job within ``reuse_days``, else the job's own first with that text."""
    source: dict[int, int] = {}
    if reuse_days > 0:
        since = now - timedelta(days=reuse_days)
        source = {
            int(h): int(pk)
            for h, pk in session.execute(
                select(ITEMS.c.text_hash, func.max(ITEMS.c.id))
                .where(
                    ITEMS.c.text_hash.in_(hashes),
                    ITEMS.c.job_id != job_id,
                    ITEMS.c.status == Status.DONE,
                    ITEMS.c.finished_at >= since,
                )
                .group_by(ITEMS.c.text_hash)
            )
        }
    first = {
        int(h): int(pk)
        for h, pk in session.execute(
            select(ITEMS.c.text_hash, func.min(ITEMS.c.id))
            .where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.text_hash.in_(hashes - set(source)),
                ITEMS.c.reuse_of.is_(None),
                ITEMS.c.status.not_in((Status.FAILED, Status.BUDGET_CAPPED)),
            )
            .group_by(ITEMS.c.text_hash)
        )
    }
    return first | source


def settle_dependents(
    session: Session, final_pks: Iterable[int], *, drop_text: bool = False
) -> list[Released]:
    """Give the repeats waiting on ``final_pks`` their source's decision (same transaction).

    Call after the sources' rows are updated. Returns the items released because their
    source failed, for the caller to enqueue on their tier (the sweeper would too).
    """
    pks = set(final_pks)
    if not pks:
        return []
    waiting = session.execute(
        select(ITEMS.c.id, ITEMS.c.job_id, ITEMS.c.steps, ITEMS.c.reuse_of)
        .where(ITEMS.c.status == WAIT, pgbulk.among(session, ITEMS.c.reuse_of, pks))
        .order_by(ITEMS.c.id)
        .with_for_update()
    ).all()
    if not waiting:
        return []
    sources = {
        int(s.id): s
        for s in session.execute(
            select(*_SOURCE_COLS).where(ITEMS.c.id.in_({int(w.reuse_of) for w in waiting}))
        )
    }
    now = utcnow()
    take: list[tuple[int, int, int, Any]] = []
    failed: dict[int, list[Any]] = {}
    for w in waiting:
        src = sources.get(int(w.reuse_of))
        if src is None:
            continue
        if src.status in TAKEN:
            take.append((int(w.id), int(w.job_id), int(w.steps), src))
        elif src.status == Status.FAILED:
            failed.setdefault(int(src.id), []).append(w)
    _take(session, take, now, drop_text)
    return _hand_on(session, failed, now)


def rescue(session: Session, limit: int = 10_000) -> list[Released]:
    """Repeats left waiting on a source that is already final: settle them now."""
    final = session.scalars(
        select(ITEMS.c.reuse_of)
        .where(ITEMS.c.status == WAIT)
        .group_by(ITEMS.c.reuse_of)
        .limit(limit)
    ).all()
    done = session.scalars(
        select(ITEMS.c.id).where(
            ITEMS.c.id.in_([int(x) for x in final if x is not None]),
            ITEMS.c.status.in_((*TAKEN, Status.FAILED)),
        )
    ).all()
    return settle_dependents(session, done)


def _hand_on(session: Session, failed: Mapping[int, list[Any]], now: datetime) -> list[Released]:
    """A failed source's first repeat becomes pending at tier 0; the rest wait on it."""
    released: dict[int, list[int]] = {}
    moves: list[dict[str, Any]] = []
    fresh: list[dict[str, Any]] = []
    for waiting in failed.values():
        new, rest = waiting[0], waiting[1:]
        fresh.append({"p_id": int(new.id), "p_now": now})
        released.setdefault(int(new.job_id), []).append(int(new.id))
        moves += [{"p_id": int(w.id), "p_src": int(new.id), "p_now": now} for w in rest]
    if fresh:
        session.execute(
            ITEMS.update()
            .where(ITEMS.c.id == bindparam("p_id"))
            .values(
                status=Status.PENDING, tier_index=0, reuse_of=None, updated_at=bindparam("p_now")
            ),
            fresh,
        )
    if moves:
        session.execute(
            ITEMS.update()
            .where(ITEMS.c.id == bindparam("p_id"))
            .values(reuse_of=bindparam("p_src"), updated_at=bindparam("p_now")),
            moves,
        )
    return [Released(job, 0, ids) for job, ids in released.items()]


def _take(
    session: Session, take: Sequence[tuple[int, int, int, Any]], now: datetime, drop_text: bool
) -> None:
    """Repeats take their source's final decision: item rows and one ledger row each."""
    if not take:
        return
    items: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    for pk, job_id, steps, src in take:
        item = {
            "p_id": pk,
            "p_status": src.status,
            "p_label": src.label,
            "p_confidence": src.confidence,
            "p_reason": src.reason,
            "p_final_tier": src.final_tier,
            "p_tier_index": src.tier_index,
            "p_baseline_nanos": src.baseline_nanos,
            "p_reuse_of": int(src.id),
            "p_steps": steps + 1,
            "p_now": now,
        }
        items.append(item)
        attempts.append(
            attempt_row(
                job_id=job_id,
                item_id=pk,
                step=steps,
                tier_index=src.tier_index,
                tier=src.final_tier or "",
                role=ROLE,
                provider=ROLE,
                model=ROLE,
                outcome=Outcome.REUSED,
                decision=DECISION_OF[src.status],
                label=src.label,
                confidence=src.confidence,
                reuse_of=int(src.id),
            )
        )
    values: dict[str, Any] = {
        "status": bindparam("p_status"),
        "label": bindparam("p_label"),
        "confidence": bindparam("p_confidence"),
        "reason": bindparam("p_reason"),
        "final_tier": bindparam("p_final_tier"),
        "tier_index": bindparam("p_tier_index"),
        "baseline_nanos": bindparam("p_baseline_nanos"),
        "reuse_of": bindparam("p_reuse_of"),
        "steps": bindparam("p_steps"),
        "lease_token": None,
        "lease_until": None,
        "error": None,
        "updated_at": bindparam("p_now"),
        "finished_at": bindparam("p_now"),
    }
    if drop_text:
        values["text"] = None
    session.execute(ITEMS.update().where(ITEMS.c.id == bindparam("p_id")).values(values), items)
    _insert(session, ATTEMPTS, attempts)


def _insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Idempotent on (item, step), like every attempt write."""
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = make(table).on_conflict_do_nothing(index_elements=["item_id", "step"])
    session.execute(stmt, rows)

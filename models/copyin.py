"""New items straight into ``items`` with ``COPY`` (Postgres): the submit fast path.

A first submission cannot collide with rows already in the job, so its items need
no ``ON CONFLICT``: their ids are drawn from the sequence in one round trip, the
rows (already decided ones too: see :func:`prepare`) are written with one
``COPY … FROM STDIN``, and their attempt rows with another. If an id *is* already in
the job (a re-submission, or a repeat across chunks of one file), the unique index
says so: :func:`write` rolls back its savepoint, or raises :class:`Collision` so the
caller rolls back the chunk's transaction; either way nothing is written and the
caller takes the ``ON CONFLICT`` path (:mod:`models.bulk`) for that chunk.

The COPY text is built here rather than by the driver's per-value dumpers: a row is
a handful of fields, and all but a few repeat from row to row, so the repeating
tail is formatted once per distinct outcome and cached. Values are data, never SQL:
text format escapes the backslash, tab, newline and carriage return; ``\\N`` is NULL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from psycopg import errors as pg_errors
from sqlalchemy.orm import Session

from common.lifecycle import UNFINISHED
from models.copytext import ITEM_COLS, ITEM_TAIL, NOW, field, json_text, row_tail, row_text, tail_at
from models.repo import (
    ATTEMPTS,
    ITEMS,
    AddResult,
    NewItem,
    driver_connection,
    split_duplicates,
)

_STATUS = ITEM_COLS.index("status")
_COPY_ITEMS = f"COPY items ({', '.join(ITEM_COLS)}) FROM STDIN"


def supported(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def reserve_ids(session: Session, n: int) -> tuple[list[int], datetime]:
    """``n`` fresh item ids and the transaction's timestamp, in one round trip."""
    row = (
        session.connection()
        .exec_driver_sql(
            "SELECT array_agg(nextval('items_id_seq')), now() FROM generate_series(1, %(n)s)",
            {"n": n},
        )
        .one()
    )
    return list(row[0] or []), row[1]


Describe = Callable[[int], tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Decisions:
    """A chunk's decisions by kind: items of one kind leave with the same columns and
    the same attempt rows but for their ids, so each kind is formatted once.

    ``describe(n)`` gives item ``n``'s (the first of its kind) columns, as
    :func:`models.ledger.settled_values` gives them, and its attempt rows, whose first
    keys are ``job_id``, ``item_id``, ``step``.
    """

    kinds: Sequence[Hashable]  # one per item
    describe: Describe


Decide = Callable[[Sequence[int], Sequence[NewItem], datetime], Decisions]
_ATTEMPT_HEAD = ("job_id", "item_id", "step")


# A chunk of at most this many items goes in with one INSERT (items and attempt rows
# together) rather than two COPYs: one round trip instead of four, the short path of
# an item submitted on its own. Larger chunks are cheaper as COPY text.
SMALL_ROWS = 8


@dataclass(slots=True)
class Rows:
    """A small chunk's rows as values, for one ``INSERT``: items, then attempt rows."""

    items: list[tuple[object, ...]]
    attempt_names: tuple[str, ...]
    attempts: list[tuple[object, ...]]


@dataclass(slots=True)
class Prepared:
    """A chunk of new items ready to write, ids drawn and decisions made: as COPY text,
    or (at most :data:`SMALL_ROWS` items) as :class:`Rows`."""

    items: list[NewItem]  # without repeats, in input order
    duplicates: list[tuple[int, str, int]]
    ids: list[int]
    items_text: str
    attempts: tuple[tuple[str, ...], str] | None  # (columns, COPY text)
    rows: Rows | None = None

    @property
    def unfinished(self) -> bool:
        """Some item goes in unfinished (pending, or escalated to a later tier)."""
        if self.rows is None:
            raise ValueError("only a small chunk's rows are kept as values")
        return any(row[_STATUS] in UNFINISHED for row in self.rows.items)


@dataclass(slots=True)
class _Kind:
    """A kind's columns after ``meta`` (``NOW`` for the chunk's time), whether its text
    is dropped, and its attempt rows as (step, the values after ``step``); the COPY
    text of both is formatted once, on first use."""

    tail: tuple[object, ...]
    no_text: bool
    steps: tuple[tuple[int, tuple[object, ...]], ...]
    text: tuple[str, tuple[tuple[int, str], ...]] | None = None

    def formatted(self, now: datetime) -> tuple[str, tuple[tuple[int, str], ...]]:
        if self.text is None:
            steps = tuple((step, row_text(rest)) for step, rest in self.steps)
            self.text = (tail_at(self.tail, now), steps)
        return self.text


def prepare(
    session: Session,
    job_id: int,
    submission_id: int,
    batch: Sequence[NewItem],
    decide: Decide | None = None,
    drawn: tuple[Sequence[int], datetime] | None = None,
) -> Prepared:
    """Draw ids for a chunk and format its rows; ``session`` is used for the ids only.

    ``drawn`` (ids and the transaction's time, from :func:`models.repo.open_submission`)
    spares that round trip when it holds at least one id per line. The first occurrence
    of an id within the chunk wins, as in :func:`models.repo.add_items`.
    ``decide(ids, items, now)`` may decide the items (:class:`Decisions`): they then go
    in already decided, with their attempt rows. Without it they go in pending at the
    first tier. Every row carries the time the ids were drawn as ``created_at``.
    """
    unique, duplicates = split_duplicates(batch)
    if not unique:
        return Prepared([], duplicates, [], "", None)
    if drawn is not None and len(drawn[0]) >= len(unique):
        ids, now = list(drawn[0][: len(unique)]), drawn[1]
    else:
        ids, now = reserve_ids(session, len(unique))
    decisions = decide(ids, unique, now) if decide is not None else None
    if decisions is not None and len(decisions.kinds) != len(unique):
        raise ValueError("one kind per item")
    out, kinds = Prepared(unique, duplicates, ids, "", None), _Kinds(decisions)
    if len(unique) <= SMALL_ROWS:
        return _as_rows(out, (job_id, submission_id), now, kinds)
    return _as_copy(out, (job_id, submission_id), now, kinds)


class _Kinds:
    """Each kind's :class:`_Kind`, built from ``describe`` on first use; the attempt
    rows' columns (``names``) as seen so far."""

    def __init__(self, decisions: Decisions | None) -> None:
        self._decisions = decisions
        self._kinds: dict[Hashable, _Kind] = {}
        self._pending = _Kind(tuple(ITEM_TAIL.values()), False, ())
        self.names: tuple[str, ...] = ()

    def of(self, n: int) -> _Kind:
        """Item ``n``'s kind (pending at the first tier when nothing was decided)."""
        decisions = self._decisions
        if decisions is None:
            return self._pending
        key = decisions.kinds[n]
        one = self._kinds.get(key)
        if one is None:
            values, rows = decisions.describe(n)
            names = self.names = _attempt_names(rows, self.names)
            steps = tuple((r["step"], tuple(r[c] for c in names[3:])) for r in rows)
            no_text = values.get("text", "") is None
            one = self._kinds[key] = _Kind(row_tail(values), no_text, steps)
        return one


def _as_rows(out: Prepared, owner: tuple[int, int], now: datetime, kinds: _Kinds) -> Prepared:
    """A small chunk's rows as values (one INSERT); ``owner``: (job, submission)."""
    (job_id, submission_id), rows = owner, Rows([], (), [])
    for n, it in enumerate(out.items):
        pk, kind = out.ids[n], kinds.of(n)
        keep = None if kind.no_text else it.text
        values = tuple(now if v is NOW else v for v in kind.tail)
        rows.items.append(
            (pk, job_id, submission_id, it.key, it.line_no, keep, it.meta, it.text_hash, *values)
        )
        rows.attempts += [(job_id, pk, step, *rest) for step, rest in kind.steps]
    rows.attempt_names, out.rows = kinds.names, rows
    return out


def _as_copy(out: Prepared, owner: tuple[int, int], now: datetime, kinds: _Kinds) -> Prepared:
    """A chunk's rows as COPY text (items, and attempt rows if any)."""
    job_id, submission_id = owner
    head = f"{job_id}\t{submission_id}\t"
    parts: list[str] = []
    tries: list[str] = []
    for n, it in enumerate(out.items):
        pk, kind = out.ids[n], kinds.of(n)
        tail, steps = kind.formatted(now)
        text = "\\N" if kind.no_text else field(it.text)
        h = "\\N" if it.text_hash is None else it.text_hash
        parts.append(
            f"{pk}\t{head}{field(it.key)}\t{it.line_no}\t{text}\t"
            f"{field(json_text(it.meta))}\t{h}\t{tail}\n"
        )
        for step, rest in steps:
            tries.append(f"{job_id}\t{pk}\t{step}\t{rest}\n")
    out.items_text = "".join(parts)
    out.attempts = (kinds.names, "".join(tries)) if tries else None
    return out


def _attempt_names(rows: Sequence[Mapping[str, Any]], names: tuple[str, ...]) -> tuple[str, ...]:
    """The attempt rows' columns: the same for every row, led by :data:`_ATTEMPT_HEAD`."""
    for row in rows:
        keys = tuple(row)
        if keys[:3] != _ATTEMPT_HEAD or (names and keys != names):
            raise ValueError(f"attempt rows must share columns led by {_ATTEMPT_HEAD}")
        names = keys
    return names


class Collision(Exception):
    """A chunk written without a savepoint met an id the job has: its transaction is lost."""


def write(
    session: Session,
    prepared: Prepared,
    *,
    savepoint: bool = True,
    then: tuple[str, Mapping[str, Any]] | None = None,
) -> AddResult | None:
    """Write a prepared chunk (COPY, or one INSERT); None, and nothing written, if the
    job has one of its ids already (then :func:`models.bulk.add_items_fast` is the way in).

    ``savepoint=False`` spares two round trips when the caller can redo the whole
    transaction instead: an id the job has then raises :class:`Collision`, and the
    transaction must be rolled back. Use it where no id can collide (a job created
    by this transaction), or where the transaction holds nothing but this chunk.
    ``then`` (one statement, SQL and named parameters; no savepoint) is run after the
    rows: a small chunk's rows join it as one statement, COPY text goes first.
    """
    result = AddResult(prepared.ids, prepared.duplicates, 0)
    if savepoint and then is not None:
        raise ValueError("then: only without a savepoint")
    if not savepoint or not prepared.items:
        try:
            with driver_connection(session).cursor() as cur:
                _send(cur, prepared, then)
        except pg_errors.UniqueViolation as exc:
            raise Collision(str(exc)) from exc
        return result
    nested = session.begin_nested()
    raw = driver_connection(session)  # after begin_nested: asking for it emits SAVEPOINT
    try:
        with raw.cursor() as cur:
            _send(cur, prepared, None)
    except pg_errors.UniqueViolation:
        nested.rollback()
        return None
    nested.commit()
    return result


def _send(cur: Any, prepared: Prepared, then: tuple[str, Mapping[str, Any]] | None) -> None:
    if prepared.rows is not None:
        cur.execute(*_one_statement(prepared.rows, then))
        return
    if prepared.items:
        with cur.copy(_COPY_ITEMS) as copy:
            copy.write(prepared.items_text)
    if prepared.attempts is not None:
        names, text = prepared.attempts
        with cur.copy(f"COPY {ATTEMPTS.name} ({', '.join(names)}) FROM STDIN") as copy:
            copy.write(text)
    if then is not None:
        cur.execute(*then)


def _one_statement(
    rows: Rows, then: tuple[str, Mapping[str, Any]] | None
) -> tuple[str, dict[str, Any]]:
    """A small chunk's items and attempt rows, and ``then``, as one statement: the
    INSERTs are common table expressions ahead of ``then``'s own (attempts have no
    foreign key to wait for). Each table's rows are one JSON parameter: one message to
    send, and few enough parameters for the driver to cache the statement's parsing."""
    params: dict[str, Any] = {"_items": _json_rows(ITEM_COLS, rows.items)}
    if rows.attempts:
        params["_attempts"] = _json_rows(rows.attempt_names, rows.attempts)
    ctes = _insert_ctes(rows.attempt_names if rows.attempts else None)
    if then is None:
        return f"WITH {ctes} SELECT 1", params
    sql, more = then
    if params.keys() & more.keys():
        raise ValueError("then: parameter names _items and _attempts are the rows'")
    head, rest = sql.lstrip()[:5], sql.lstrip()[5:]
    joined = f"WITH {ctes}, {rest}" if head.upper() == "WITH " else f"WITH {ctes} {sql}"
    return joined, params | dict(more)


def _json_rows(names: Sequence[str], rows: Sequence[tuple[object, ...]]) -> str:
    return json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=_json_value)


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"no JSON form for {type(value).__name__}")


@lru_cache(maxsize=64)
def _insert_ctes(attempt_names: tuple[str, ...] | None) -> str:
    def insert(table: str, names: Sequence[str], param: str) -> str:
        cols = ", ".join(names)
        return (
            f"INSERT INTO {table} ({cols}) SELECT {cols} "
            f"FROM json_populate_recordset(NULL::{table}, %({param})s)"
        )

    ctes = f"new_items AS ({insert(ITEMS.name, ITEM_COLS, '_items')})"
    if attempt_names:
        ctes += f", new_attempts AS ({insert(ATTEMPTS.name, attempt_names, '_attempts')})"
    return ctes


def add_items_direct(
    session: Session,
    job_id: int,
    submission_id: int,
    batch: Sequence[NewItem],
    decide: Decide | None = None,
) -> AddResult | None:
    """:func:`prepare` and :func:`write` in one go."""
    return write(session, prepare(session, job_id, submission_id, batch, decide))

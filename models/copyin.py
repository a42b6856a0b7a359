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
from sqlalchemy import Table
from sqlalchemy.orm import Session

from models.repo import ATTEMPTS, ITEMS, AddResult, NewItem, split_duplicates

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def field(value: object) -> str:
    """One value in COPY text format."""
    if type(value) is str:  # the common case first; four scans beat one regex search
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_ESCAPES)
        return value
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):  # a str subclass
        return value.translate(_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no COPY text form for {type(value).__name__}")


def _fail(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# json.dumps builds its C encoder on every call; this one is built once. Same output:
# ASCII, ", " and ": " separators. (Parsed input cannot be circular: no markers.)
_ENCODER = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _fail, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)


def json_text(value: Any) -> str:
    if not value and type(value) is dict:  # most lines carry no metadata
        return "{}"
    return "".join(_ENCODER(value, 0)) if _ENCODER is not None else json.dumps(value)


@lru_cache(maxsize=4096)
def _tail(values: tuple[object, ...]) -> str:
    return "\t".join(map(field, values))


# Written per row; every column after ``meta`` is in the cached tail.
_ITEM_HEAD = ("id", "job_id", "submission_id", "item_key", "line_no", "text", "meta")


def _tail_defaults(table: Table, head: Sequence[str]) -> dict[str, Any]:
    """Every other column with what an INSERT would give it: its Python-side scalar
    default (``status='pending'``, ``model_calls=0``…), the chunk's transaction time
    for a ``now()`` server default, else NULL."""
    out: dict[str, Any] = {}
    for col in table.columns:
        default, server = col.default, col.server_default
        if col.name in head:
            continue
        if default is not None and getattr(default, "is_scalar", False):
            out[col.name] = default.arg  # type: ignore[attr-defined]
        elif server is not None:
            if "now" not in str(getattr(server, "arg", "")):
                raise RuntimeError(f"{table.name}.{col.name}: unexpected server default")
            out[col.name] = _NOW
        else:
            out[col.name] = None
    return out


_NOW = object()  # stands for the chunk's transaction timestamp
_ITEM_TAIL = _tail_defaults(ITEMS, _ITEM_HEAD)
_ITEM_COLS = (*_ITEM_HEAD, *_ITEM_TAIL)
_COPY_ITEMS = f"COPY items ({', '.join(_ITEM_COLS)}) FROM STDIN"


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
    :func:`models.repo.settled_values` gives them, and its attempt rows, whose first
    keys are ``job_id``, ``item_id``, ``step``.
    """

    kinds: Sequence[Hashable]  # one per item
    describe: Describe


Decide = Callable[[Sequence[int], Sequence[NewItem], datetime], Decisions]
_ATTEMPT_HEAD = ("job_id", "item_id", "step")


@dataclass(slots=True)
class Prepared:
    """A chunk of new items as COPY text, ready to write: ids drawn, decisions made."""

    items: list[NewItem]  # without repeats, in input order
    duplicates: list[tuple[int, str, int]]
    ids: list[int]
    items_text: str
    attempts: tuple[tuple[str, ...], str] | None  # (columns, COPY text)


# A kind, formatted: the row's tail after ``meta``, whether its text is dropped, and
# its attempt rows as (step, the columns after ``step``).
_Formatted = tuple[str, bool, tuple[tuple[int, str], ...]]


def prepare(
    session: Session,
    job_id: int,
    submission_id: int,
    batch: Sequence[NewItem],
    decide: Decide | None = None,
) -> Prepared:
    """Draw ids for a chunk and format its COPY text; ``session`` is used for the ids only.

    The first occurrence of an id within the chunk wins, as in :func:`models.repo.add_items`.
    ``decide(ids, items, now)`` may decide the items (:class:`Decisions`): they then go
    in already decided, with their attempt rows. Without it they go in pending at the
    first tier. Every row carries the time the ids were drawn as ``created_at``.
    """
    unique, duplicates = split_duplicates(batch)
    if not unique:
        return Prepared([], duplicates, [], "", None)
    ids, now = reserve_ids(session, len(unique))
    decisions = decide(ids, unique, now) if decide is not None else None
    if decisions is not None and len(decisions.kinds) != len(unique):
        raise ValueError("one kind per item")
    head = f"{job_id}\t{submission_id}\t"
    pending: _Formatted = (_row_tail({}, now), False, ())
    formatted: dict[Hashable, _Formatted] = {}
    names: tuple[str, ...] = ()
    parts: list[str] = []
    tries: list[str] = []
    for n, it in enumerate(unique):
        pk = ids[n]
        if decisions is None:
            tail, no_text, steps = pending
        else:
            kind = decisions.kinds[n]
            one = formatted.get(kind)
            if one is None:
                values, rows = decisions.describe(n)
                names = _attempt_names(rows, names)
                steps = tuple((r["step"], _tail(tuple(r[c] for c in names[3:]))) for r in rows)
                no_text = values.get("text", "") is None
                one = formatted[kind] = (_row_tail(values, now), no_text, steps)
            tail, no_text, steps = one
        text = "\\N" if no_text else field(it.text)
        parts.append(
            f"{pk}\t{head}{field(it.key)}\t{it.line_no}\t{text}\t"
            f"{field(json_text(it.meta))}\t{tail}\n"
        )
        for step, rest in steps:
            tries.append(f"{job_id}\t{pk}\t{step}\t{rest}\n")
    attempts = (names, "".join(tries)) if tries else None
    return Prepared(unique, duplicates, ids, "".join(parts), attempts)


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


def write(session: Session, prepared: Prepared, *, savepoint: bool = True) -> AddResult | None:
    """COPY a prepared chunk; None, and nothing written, if the job has one of its ids
    already (then :func:`models.bulk.add_items_fast` is the way in).

    ``savepoint=False`` spares two round trips when the caller can redo the whole
    transaction instead: an id the job has then raises :class:`Collision`, and the
    transaction must be rolled back. Use it where no id can collide (a job created
    by this transaction), or where the transaction holds nothing but this chunk.
    """
    result = AddResult(prepared.ids, prepared.duplicates, 0)
    if not prepared.items:
        return result
    if not savepoint:
        try:
            with _driver(session).cursor() as cur:
                _copy(cur, prepared)
        except pg_errors.UniqueViolation as exc:
            raise Collision(str(exc)) from exc
        return result
    nested = session.begin_nested()
    raw = _driver(session)  # after begin_nested: asking for the connection emits SAVEPOINT
    try:
        with raw.cursor() as cur:
            _copy(cur, prepared)
    except pg_errors.UniqueViolation:
        nested.rollback()
        return None
    nested.commit()
    return result


def _driver(session: Session) -> Any:
    return session.connection().connection.driver_connection  # psycopg.Connection


def _copy(cur: Any, prepared: Prepared) -> None:
    with cur.copy(_COPY_ITEMS) as copy:
        copy.write(prepared.items_text)
    if prepared.attempts is not None:
        names, text = prepared.attempts
        with cur.copy(f"COPY {ATTEMPTS.name} ({', '.join(names)}) FROM STDIN") as copy:
            copy.write(text)


def add_items_direct(
    session: Session,
    job_id: int,
    submission_id: int,
    batch: Sequence[NewItem],
    decide: Decide | None = None,
) -> AddResult | None:
    """:func:`prepare` and :func:`write` in one go."""
    return write(session, prepare(session, job_id, submission_id, batch, decide))


def _row_tail(values: Mapping[str, Any], now: datetime) -> str:
    merged = _ITEM_TAIL | dict(values)
    merged.pop("text", None)
    if len(merged) != len(_ITEM_TAIL):
        raise ValueError(f"not columns of items: {sorted(set(merged) - set(_ITEM_TAIL))}")
    return _tail_at(tuple(merged.values()), now)


@lru_cache(maxsize=4096)
def _tail_at(values: tuple[object, ...], now: datetime) -> str:
    return "\t".join(field(now if v is _NOW else v) for v in values)

"""One statement per batch on Postgres: rows passed as one array per column.

``executemany`` sends a statement per row (pipelined, but each is parsed, planned
and bound on its own, and SQLAlchemy builds a parameter dict for each); for a
1,000-item rules batch that was most of the worker's time. ``unnest`` of typed
arrays turns the batch into one INSERT … SELECT or one UPDATE … FROM.

Column names come from our own table definitions, never from input; values are
always bound parameters. SQLAlchemy's Python-side column defaults are not applied
here: a row carries every NOT NULL column without a server default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Table, Text, any_, bindparam, cast, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_TYPES: dict[tuple[str, str], str] = {}


def _array_type(table: Table, name: str) -> str:
    """``BIGINT[]``, ``VARCHAR(40)[]``, …: the column's Postgres type, as an array."""
    found = _TYPES.get((table.name, name))
    if found is None:
        found = _TYPES[(table.name, name)] = f"{table.c[name].type.compile(dialect=_DIALECT)}[]"
    return found


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = list(rows[0])
    if any(len(r) != len(columns) or r.keys() != rows[0].keys() for r in rows):
        raise ValueError("every row of a batch must have the same columns")
    return columns


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def array_literal(values: list[Any]) -> Any:
    """A column's values as one Postgres array literal (``{1,NULL,"a b"}``), built with
    ``str.join``: psycopg adapts a Python list element by element in Python, which was
    a quarter of a rules worker's CPU (``bench.run --only rules``). Values of any other
    type than int, str, float, bool, datetime or None go as the list, adapted as before.
    """
    kinds = {type(v) for v in values}
    kinds.discard(type(None))
    if kinds <= {int}:
        body = ",".join("NULL" if v is None else str(v) for v in values)
    elif all(issubclass(k, str) for k in kinds):
        body = ",".join("NULL" if v is None else _quoted(v) for v in values)
    elif kinds <= {bool}:
        body = ",".join("NULL" if v is None else ("t" if v else "f") for v in values)
    elif kinds <= {float, int}:  # ints alone were taken above
        body = ",".join("NULL" if v is None else repr(float(v)) for v in values)
    elif kinds == {datetime}:
        body = ",".join("NULL" if v is None else _quoted(v.isoformat()) for v in values)
    else:
        return values
    return "{" + body + "}"


def _params(rows: Sequence[Mapping[str, Any]], names: list[str]) -> list[Any]:
    return [array_literal([r[n] for r in rows]) for n in names]


def _cursor(session: Session) -> Any:
    raw: Any = session.connection().connection.driver_connection  # psycopg.Connection
    return raw.cursor()


def insert_rows(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, conflict: Sequence[str]
) -> None:
    """INSERT the rows, skipping any that collide on ``conflict`` (one statement)."""
    if not rows:
        return
    names = _columns(rows)
    arrays = ", ".join(f"%s::{_array_type(table, n)}" for n in names)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    )
    with _cursor(session) as cur:
        cur.execute(sql, _params(rows, names))


def upsert_rows(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str],
    where: str | None = None,
) -> None:
    """INSERT the rows; one that collides on ``conflict`` replaces the stored row's other
    columns (only where ``where``, SQL over the table's name, holds). One statement.

    The rows must not collide with each other.
    """
    if not rows:
        return
    names = _columns(rows)
    arrays = ", ".join(f"%s::{_array_type(table, n)}" for n in names)
    sets = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n not in conflict)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}"
        + (f" WHERE {where}" if where else "")
    )
    with _cursor(session) as cur:
        cur.execute(sql, _params(rows, names))


def update_rows(
    session: Session,
    table: Table,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    added: Sequence[str] = (),
) -> None:
    """UPDATE one row per entry, matched on ``key``; columns in ``added`` are added to.

    Every row has the same columns: ``key``, the columns to set, and ``added``.
    """
    if not rows:
        return
    names = _columns(rows)
    arrays = ", ".join(f"%s::{_array_type(table, n)}" for n in names)
    sets = ", ".join(
        f"{n} = t.{n} + v.{n}" if n in added else f"{n} = v.{n}" for n in names if n != key
    )
    sql = (
        f"UPDATE {table.name} AS t SET {sets}"
        f" FROM unnest({arrays}) AS v({', '.join(names)}) WHERE t.{key} = v.{key}"
    )
    with _cursor(session) as cur:
        cur.execute(sql, _params(rows, names))


def among(session: Session, column: Any, ids: Iterable[int]) -> ColumnElement[bool]:
    """``column IN ids``; on Postgres ``= ANY`` of one array literal. An IN of a 1,000-item
    batch rendered and parsed 1,000 parameters, 8.5 % of a rules worker's CPU
    (``bench.run --only rules``, door off); a claim's 100 ids, a tenth of that each."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(list(ids))  # type: ignore[no-any-return]
    array = bindparam("ids", array_literal(sorted(ids)), type_=Text, unique=True)
    return column == any_(cast(array, ARRAY(BigInteger)))  # type: ignore[no-any-return]


# The columns the claim and settle lookups pick rows by. Until a table has statistics
# for them, Postgres guesses that ``item_id = ANY(100 ids)`` matches half the table and
# scans all of it: a fresh database's first big job spent most of its Postgres time so,
# until autovacuum's first ANALYZE (a minute or more after the load).
_PLANNED_BY = (("attempts", "item_id"), ("items", "job_id"))


def analyze_if_unseen(session: Session) -> list[str]:
    """ANALYZE the ledger tables that have no planner statistics yet; returns their names.

    One catalog lookup when they all have some (the usual case); nothing on SQLite.
    """
    if session.get_bind().dialect.name != "postgresql":
        return []
    found = session.execute(
        text(
            "SELECT t.name FROM unnest(CAST(:tables AS text[]), CAST(:columns AS text[]))"
            " AS t(name, col) WHERE NOT EXISTS (SELECT 1 FROM pg_stats s"
            " WHERE s.schemaname = current_schema() AND s.tablename = t.name"
            " AND s.attname = t.col)"
        ),
        {"tables": [t for t, _ in _PLANNED_BY], "columns": [c for _, c in _PLANNED_BY]},
    )
    tables = sorted({name for (name,) in found})
    for name in tables:  # names from _PLANNED_BY above, never from input
        session.execute(text(f"ANALYZE {name}"))
    return tables

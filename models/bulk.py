"""COPY-class bulk insert of items for Postgres (SQLite keeps :func:`models.repo.add_items`).

``add_items_copy`` has exactly the semantics of :func:`models.repo.add_items` —
the first occurrence of an id inside a batch wins and the others are reported as
duplicates; an id the job already has from an earlier submission is counted as
existing; one seen earlier in *this* submission is a duplicate — but writes the
batch with ``COPY`` into a per-connection temporary table and then one
``INSERT … SELECT … ON CONFLICT (job_id, item_key) DO NOTHING RETURNING``,
about 2.5× faster than ``executemany`` on this machine (see ``bench/README.md``).

:func:`add_items_fast` picks the COPY path on Postgres and ``add_items`` elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from models.repo import (
    ITEMS,
    AddResult,
    NewItem,
    add_items,
    classify_not_inserted,
    split_duplicates,
)

TEMP_TABLE = "cascade_items_in_v2"  # v2: with text_hash (a pooled session may hold v1)
# Columns the items table fills from Python-side defaults (not server defaults): an
# INSERT … SELECT must write them itself. Read from the table so they never drift.
_FROM_INPUT = ("job_id", "submission_id", "item_key", "line_no", "text", "meta", "text_hash")


def _python_defaults(table: Table) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in table.columns:
        default = col.default
        if col.name in _FROM_INPUT or default is None or col.server_default is not None:
            continue
        if getattr(default, "is_scalar", False):
            out[col.name] = default.arg  # type: ignore[attr-defined]
    return out


_DEFAULTS = _python_defaults(ITEMS)
_CREATE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {TEMP_TABLE} ("
    "ord integer NOT NULL, item_key text NOT NULL, line_no integer NOT NULL, "
    "text text NOT NULL, meta text NOT NULL, text_hash bigint) ON COMMIT DELETE ROWS"
)
_COPY = f"COPY {TEMP_TABLE} (ord, item_key, line_no, text, meta, text_hash) FROM STDIN"
_DEFAULT_COLS = list(_DEFAULTS)
_INSERT = (
    "INSERT INTO items (job_id, submission_id, item_key, line_no, text, meta, text_hash"
    + "".join(f", {c}" for c in _DEFAULT_COLS)
    + ") SELECT %(job_id)s, %(submission_id)s, item_key, line_no, text, meta::json, text_hash"
    + "".join(f", %(d_{c})s" for c in _DEFAULT_COLS)
    + f" FROM {TEMP_TABLE} ORDER BY ord"
    " ON CONFLICT (job_id, item_key) DO NOTHING RETURNING id, item_key"
)


def add_items_copy(
    session: Session, job_id: int, submission_id: int, batch: Sequence[NewItem]
) -> AddResult:
    """:func:`models.repo.add_items` through COPY. Postgres (psycopg 3) only."""
    if session.get_bind().dialect.name != "postgresql":
        raise RuntimeError("add_items_copy needs Postgres; use models.repo.add_items")
    unique, duplicates = split_duplicates(batch)
    result = AddResult([], duplicates, 0)
    if not unique:
        return result
    raw: Any = session.connection().connection.driver_connection  # psycopg.Connection
    params: dict[str, Any] = {"job_id": job_id, "submission_id": submission_id}
    params |= {f"d_{c}": v for c, v in _DEFAULTS.items()}
    with raw.cursor() as cur:
        cur.execute(_CREATE)
        cur.execute(f"TRUNCATE {TEMP_TABLE}")  # a batch never sees a previous one's rows
        with cur.copy(_COPY) as copy:
            for n, it in enumerate(unique):
                copy.write_row((n, it.key, it.line_no, it.text, json.dumps(it.meta), it.text_hash))
        cur.execute(_INSERT, params)
        inserted = cur.fetchall()
    ids = {key: pk for pk, key in inserted}
    result.added = [ids[it.key] for it in unique if it.key in ids]  # input order
    missing = [it for it in unique if it.key not in ids]
    classify_not_inserted(session, job_id, submission_id, missing, result)
    return result


def add_items_fast(
    session: Session, job_id: int, submission_id: int, batch: Sequence[NewItem]
) -> AddResult:
    """COPY on Postgres, ``executemany`` on SQLite: the same result either way."""
    if session.get_bind().dialect.name == "postgresql":
        return add_items_copy(session, job_id, submission_id, batch)
    return add_items(session, job_id, submission_id, batch)

"""Reading a backfill's rows from someone else's database, read-only.

The source is a table or a query in a database named by URL, with an id column, a
text column and an updated-at column (the watermark); every other column is carried
through as metadata. The engine is separate from the ledger's and read-only: the
Postgres session runs with ``default_transaction_read_only=on``, SQLite with
``PRAGMA query_only``. Rows stream from a server-side cursor, so memory stays flat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, create_engine, event, make_url, pool, text


@dataclass(frozen=True, slots=True)
class DbSource:
    url: str
    table: str | None = None
    query: str | None = None
    id_column: str = "id"
    text_column: str = "text"
    updated_column: str = "updated_at"

    def __post_init__(self) -> None:
        if (self.table is None) == (self.query is None):
            raise ValueError("a database source needs exactly one of a table or a query")

    @property
    def key(self) -> str:
        """A stable name for watermarks and reports; never contains a password."""
        where = make_url(self.url).render_as_string(hide_password=True)
        if self.table is not None:
            return f"{where}#table={self.table}"
        digest = hashlib.sha256((self.query or "").encode()).hexdigest()[:12]
        return f"{where}#query={digest}"


@dataclass(frozen=True, slots=True)
class SourceRow:
    key: str
    text: Any  # whatever the text column holds; the caller judges it
    updated_at: datetime
    meta: dict[str, Any]


def _read_only_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed,
            poolclass=pool.NullPool,
            connect_args={"options": "-c default_transaction_read_only=on", "connect_timeout": 10},
        )
    engine = create_engine(parsed, poolclass=pool.NullPool)
    if parsed.get_backend_name() == "sqlite":

        def _query_only(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA query_only=ON")

        event.listen(engine, "connect", _query_only)
    return engine


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"the updated-at column must hold timestamps, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _plain(value: Any) -> Any:
    """A JSON-storable form of a column value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


_SQLITE_TIME = "%Y-%m-%d %H:%M:%f"  # how SQLite writes a time it read: UTC, milliseconds


class SourceReader:
    """Opens the source database once; :meth:`rows` and :meth:`max_updated` read it."""

    def __init__(self, source: DbSource) -> None:
        self.source = source
        self.engine = _read_only_engine(source.url)
        quote = self.engine.dialect.identifier_preparer.quote
        if source.table is not None:
            parts = source.table.split(".")
            self._from = ".".join(quote(p) for p in parts)
        else:
            self._from = f"({source.query}) AS backfill_source"
        self._id = quote(source.id_column)
        self._updated = quote(source.updated_column)
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            # SQLite keeps a timestamp as text in its writer's form (a 'T' or a space, a
            # 'Z' or an offset, fractions): text order is not time order. Compare, order
            # and take the newest by SQLite's own UTC reading; text it cannot read, and
            # other types, stay as they are (and are refused when read: ``_utc``).
            col = self._updated
            self._updated = (
                f"CASE WHEN typeof({col}) = 'text' "
                f"THEN coalesce(strftime('{_SQLITE_TIME}', {col}), {col}) ELSE {col} END"
            )

    def close(self) -> None:
        self.engine.dispose()

    def _time(self, name: str) -> str:
        """The bound time ``name`` as compared with the updated-at column."""
        return f"strftime('{_SQLITE_TIME}', :{name})" if self._sqlite else f":{name}"

    def _where(self, since: datetime | None, until: datetime | None) -> tuple[str, dict[str, Any]]:
        clauses, params = [], {}
        if since is not None:
            clauses.append(f"{self._updated} > {self._time('since')}")
            params["since"] = since.isoformat() if self._sqlite else since
        if until is not None:
            clauses.append(f"{self._updated} <= {self._time('until')}")
            params["until"] = until.isoformat() if self._sqlite else until
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def max_updated(self, since: datetime | None) -> datetime | None:
        """The newest updated-at after ``since``: this run reads up to it, no further."""
        where, params = self._where(since, None)
        with self.engine.connect() as conn:
            value = conn.execute(
                text(f"SELECT max({self._updated}) FROM {self._from}{where}"), params
            ).scalar()
        return None if value is None else _utc(value)

    def rows(
        self, since: datetime | None, until: datetime | None, chunk: int = 1_000
    ) -> Iterator[SourceRow]:
        """Rows with ``since < updated-at <= until``, oldest first."""
        where, params = self._where(since, until)
        sql = f"SELECT * FROM {self._from}{where} ORDER BY {self._updated}, {self._id}"
        s = self.source
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk).execute(
                text(sql), params
            )
            columns = list(result.keys())
            for missing in (s.id_column, s.text_column, s.updated_column):
                if missing not in columns:
                    raise ValueError(
                        f"the source has no column {missing!r} (it has {', '.join(columns)})"
                    )
            for row in result:
                values = dict(zip(columns, row, strict=True))
                key = values.pop(s.id_column)
                body = values.pop(s.text_column)
                updated = _utc(values.pop(s.updated_column))
                meta = {k: _plain(v) for k, v in values.items()}
                yield SourceRow(str(key), body, updated, meta)

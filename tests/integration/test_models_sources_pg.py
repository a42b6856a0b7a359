"""A backfill source on Postgres (models.sources): every column type a table may hold
becomes JSON-storable metadata, timestamps come back in UTC, and the reader's session
cannot write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import InternalError

from models.sources import DbSource, SourceReader

pytestmark = pytest.mark.postgres


def test_postgres_columns_become_plain_metadata_and_the_source_is_read_only(pg_url: str) -> None:
    owner = create_engine(pg_url, poolclass=pool.NullPool)
    with owner.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE posts (id bigint PRIMARY KEY, body text, price numeric(6, 2), "
                "ref uuid, born date, seen timestamp, tags text[], extra jsonb, raw bytea, "
                "span interval, ok boolean, updated_at timestamptz NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO posts VALUES (7, 'hello', 12.50, "
                "'12345678-1234-5678-1234-567812345678', '2026-02-03', "
                "'2026-02-03 04:05:06', ARRAY['a', 'b'], '{\"k\": [1, {\"n\": null}]}', "
                "'\\xdead', interval '90 minutes', true, '2026-03-01 14:00:00+02')"
            )
        )
    owner.dispose()

    reader = SourceReader(DbSource(pg_url, table="public.posts", text_column="body"))
    try:
        (row,) = reader.rows(None, None)
        newest = reader.max_updated(None)
        with reader.engine.connect() as conn, pytest.raises(InternalError, match="read-only"):
            conn.execute(text("DELETE FROM posts"))
    finally:
        reader.close()

    assert (row.key, row.text) == ("7", "hello")
    assert row.updated_at == newest == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert row.meta == {
        "price": "12.50",  # a Decimal keeps its digits as text, never a float
        "ref": "12345678-1234-5678-1234-567812345678",
        "born": "2026-02-03",
        "seen": "2026-02-03T04:05:06",
        "tags": ["a", "b"],
        "extra": {"k": [1, {"n": None}]},
        "raw": "dead",
        "span": "1:30:00",  # anything else: its text
        "ok": True,
    }

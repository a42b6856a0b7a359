"""Reading a backfill's rows from another database (models.sources), on a SQLite file:
which rows a window takes and in what order, what becomes metadata, the source's
name for watermarks, the errors a badly described source gets, and read-only access."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from models.sources import DbSource, SourceReader, SourceRow

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return T.replace(hour=hour, minute=minute)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A source database: posts with an id, a body, an author, a score, a blob and an
    updated-at written as SQLite text (naive, as most writers leave it: UTC)."""
    path = tmp_path / "source.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, body TEXT, author TEXT, score REAL, "
        "raw BLOB, updated_at TEXT)"
    )
    conn.executemany(
        "INSERT INTO posts VALUES (?, ?, ?, ?, ?, ?)",
        [
            (3, "third", "ann", 1.5, b"\x00\xff", "2026-03-01 11:00:00"),
            (1, "first", "bob", None, None, "2026-03-01 10:00:00"),
            (2, "second", "ann", 2.0, None, "2026-03-01 11:00:00"),  # same time as 3
            (4, "fourth", "cy", 0.0, None, "2026-03-01 13:30:00"),
        ],
    )
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.fixture
def posts(url: str) -> Iterator[SourceReader]:
    reader = SourceReader(DbSource(url, table="posts", text_column="body"))
    yield reader
    reader.close()


def test_rows_come_oldest_first_ties_by_id_with_the_other_columns_as_metadata(
    posts: SourceReader,
) -> None:
    rows = list(posts.rows(None, None))

    assert rows == [
        SourceRow("1", "first", at(10), {"author": "bob", "score": None, "raw": None}),
        SourceRow("2", "second", at(11), {"author": "ann", "score": 2.0, "raw": None}),
        SourceRow("3", "third", at(11), {"author": "ann", "score": 1.5, "raw": "00ff"}),
        SourceRow("4", "fourth", at(13, 30), {"author": "cy", "score": 0.0, "raw": None}),
    ]
    assert all(r.updated_at.tzinfo is UTC for r in rows)  # naive text is read as UTC


@pytest.mark.parametrize(
    ("since", "until", "keys"),
    [
        (at(10), None, ["2", "3", "4"]),  # since is exclusive: the watermark's row was read
        (None, at(11), ["1", "2", "3"]),  # until is inclusive: up to the run's newest
        (at(10), at(11), ["2", "3"]),
        (at(13, 30), None, []),
        (None, at(9), []),
    ],
)
def test_a_window_takes_rows_after_since_up_to_until(
    posts: SourceReader, since: datetime | None, until: datetime | None, keys: list[str]
) -> None:
    assert [r.key for r in posts.rows(since, until, chunk=2)] == keys


def test_max_updated_is_the_newest_after_since_or_none(posts: SourceReader) -> None:
    assert posts.max_updated(None) == at(13, 30)
    assert posts.max_updated(at(11)) == at(13, 30)
    assert posts.max_updated(at(13, 30)) is None  # nothing new: the run reads nothing


def test_a_query_source_with_its_own_column_names(url: str) -> None:
    source = DbSource(
        url,
        query="SELECT id AS post_id, body, updated_at AS changed FROM posts WHERE author = 'ann'",
        id_column="post_id",
        text_column="body",
        updated_column="changed",
    )
    reader = SourceReader(source)
    try:
        rows = list(reader.rows(None, None))
        newest = reader.max_updated(None)
    finally:
        reader.close()

    assert [(r.key, r.text, r.meta) for r in rows] == [("2", "second", {}), ("3", "third", {})]
    assert newest == at(11)


def test_a_table_named_with_its_schema_is_quoted_part_by_part(url: str) -> None:
    reader = SourceReader(DbSource(url, table="main.posts", text_column="body"))
    try:
        assert [r.key for r in reader.rows(at(11), None)] == ["4"]
    finally:
        reader.close()


def test_a_source_without_the_named_columns_says_which_it_has(url: str) -> None:
    reader = SourceReader(DbSource(url, table="posts"))  # text_column "text": not there
    try:
        with pytest.raises(ValueError) as err:
            list(reader.rows(None, None))
    finally:
        reader.close()
    assert str(err.value) == (
        "the source has no column 'text' (it has id, body, author, score, raw, updated_at)"
    )


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2026-03-01T14:00:00+02:00", at(12)),  # an offset is converted to UTC
        ("2026-03-01T12:00:00", at(12)),
        ("2026-03-01 12:00:00.250000", at(12).replace(microsecond=250_000)),
    ],
)
def test_updated_at_text_in_any_iso_form_is_read_as_utc(
    tmp_path: Path, stored: str, expected: datetime
) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER, text TEXT, updated_at TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'x', ?)", (stored,))
    conn.commit()
    conn.close()
    reader = SourceReader(DbSource(f"sqlite:///{path}", table="t"))
    try:
        (row,) = reader.rows(None, None)
    finally:
        reader.close()
    assert row.updated_at == expected and row.updated_at.utcoffset() is not None


def test_an_updated_at_that_is_not_a_timestamp_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER, text TEXT, updated_at INTEGER)")
    conn.execute("INSERT INTO t VALUES (1, 'x', 1767225600)")
    conn.commit()
    conn.close()
    reader = SourceReader(DbSource(f"sqlite:///{path}", table="t"))
    try:
        with pytest.raises(ValueError, match=r"must hold timestamps, got 1767225600$"):
            list(reader.rows(None, None))
        with pytest.raises(ValueError, match="must hold timestamps"):
            reader.max_updated(None)
    finally:
        reader.close()


def test_the_source_is_opened_read_only(posts: SourceReader, url: str) -> None:
    with posts.engine.connect() as conn, pytest.raises(OperationalError, match="readonly"):
        conn.execute(text("DELETE FROM posts"))
    # the rows are all still there
    assert len(list(posts.rows(None, None))) == 4


@pytest.mark.parametrize(
    ("table", "query"), [(None, None), ("posts", "SELECT * FROM posts")], ids=["none", "both"]
)
def test_a_source_needs_exactly_one_of_a_table_or_a_query(
    table: str | None, query: str | None
) -> None:
    with pytest.raises(ValueError, match="exactly one of a table or a query"):
        DbSource("sqlite:///x.db", table=table, query=query)


def test_the_source_key_names_the_place_never_the_password() -> None:
    url = "postgresql+psycopg://reader:s3cret@db.example:5432/forum"
    by_table = DbSource(url, table="public.posts")
    by_query = DbSource(url, query="SELECT * FROM posts")

    assert (
        by_table.key == "postgresql+psycopg://reader:***@db.example:5432/forum#table=public.posts"
    )
    assert by_query.key.startswith("postgresql+psycopg://reader:***@db.example:5432/forum#query=")
    assert "s3cret" not in by_table.key + by_query.key
    # a query is named by a digest: stable, and another query is another source
    digest = by_query.key.rsplit("=", 1)[1]
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert DbSource(url, query="SELECT * FROM posts").key == by_query.key
    assert DbSource(url, query="SELECT id FROM posts").key != by_query.key


def test_iso_timestamps_with_a_t_or_an_offset_are_windowed_as_times(tmp_path: Path) -> None:
    """A SQLite source keeps timestamps as text in whatever form its writer chose: with a
    ``T`` (Python's isoformat, JavaScript's toISOString), a ``Z`` or an offset. Two
    watermarked runs read every row once, in time order, whatever the form."""
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER, text TEXT, updated_at TEXT)")
    conn.executemany(
        "INSERT INTO t VALUES (?, 'x', ?)",
        [
            (1, "2026-03-01T10:00:00"),
            (2, "2026-03-01T12:00:00.500"),
            (3, "2026-03-01T15:00:00+02:00"),  # 13:00 UTC
            (4, "2026-03-01T12:30:00Z"),
            (5, "2026-03-01 11:00:00"),
        ],
    )
    conn.commit()
    reader = SourceReader(DbSource(f"sqlite:///{path}", table="t"))
    try:
        # the first run reads up to the newest row
        until = reader.max_updated(None)
        assert until == at(13)
        first = [r.key for r in reader.rows(None, until)]
        # a row arrives; the next run reads from the watermark on
        conn.execute("INSERT INTO t VALUES (6, 'x', '2026-03-01T14:00:00')")
        conn.commit()
        newer = reader.max_updated(until)
        second = [r.key for r in reader.rows(until, newer)]
        nothing = reader.max_updated(newer)
    finally:
        reader.close()
        conn.close()

    assert first == ["1", "5", "2", "4", "3"]
    assert (newer, second, nothing) == (at(14), ["6"], None)

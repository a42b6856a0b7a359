"""Engines and sessions (models.db) on a SQLite file, and the row-shape guard of the
Postgres bulk writer (models.pgbulk), which refuses a bad batch before any SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from models import pgbulk
from models.core import ATTEMPTS, ITEMS
from models.db import as_utc, make_engine, make_sessionmaker
from models.schema import Base
from models.tables import Job


def test_a_sqlite_engine_is_set_up_for_one_writer_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
            # a second connection of the pool gets the same settings
            with engine.connect() as other:
                again = other.execute(text("PRAGMA foreign_keys")).scalar()
    finally:
        engine.dispose()
    # WAL: readers never wait for the writer; NORMAL (1) is safe under WAL; a busy
    # database is waited on for 30 s rather than failing at once
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1,
                       "busy_timeout": 30000}  # fmt: skip
    assert again == 1


def test_objects_stay_readable_after_their_session_committed_and_closed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        Base.metadata.create_all(engine)
        with make_sessionmaker(engine).begin() as s:
            job = Job(name="j", pipeline_name="p", pipeline={"name": "p"})
            s.add(job)
        # not expired on commit: read without a session (a worker hands rows on)
        assert (job.name, job.status, job.id) == ("j", "running", 1)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 3, 1, 12), datetime(2026, 3, 1, 12, tzinfo=UTC)),  # SQLite: naive UTC
        (datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ],
)
def test_timestamps_read_back_are_timezone_aware(value: datetime, expected: datetime) -> None:
    got = as_utc(value)
    assert got == expected and got.tzinfo is not None


def test_an_aware_timestamp_keeps_its_offset() -> None:
    plus2 = datetime(2026, 3, 1, 14, tzinfo=timezone(timedelta(hours=2)))

    assert as_utc(plus2) is plus2
    assert as_utc(plus2) == datetime(2026, 3, 1, 12, tzinfo=UTC)


class NoDatabase:
    """A session that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


@pytest.mark.parametrize(
    "rows",
    [
        [{"id": 1, "status": "done"}, {"id": 2}],  # a column missing
        [{"id": 1}, {"id": 2, "status": "done"}],  # a column too many
        [{"id": 1, "status": "done"}, {"id": 2, "label": "x"}],  # another column
    ],
)
def test_a_bulk_batch_of_mixed_shapes_is_refused_before_any_sql(rows: list[dict[str, Any]]) -> None:
    session: Any = NoDatabase()
    message = "every row of a batch must have the same columns"
    with pytest.raises(ValueError, match=message):
        pgbulk.insert_rows(session, ITEMS, rows, conflict=("id",))
    with pytest.raises(ValueError, match=message):
        pgbulk.upsert_rows(session, ITEMS, rows, conflict=("id",))
    with pytest.raises(ValueError, match=message):
        pgbulk.update_rows(session, ITEMS, "id", rows)


def test_an_empty_bulk_batch_sends_nothing() -> None:
    session: Any = NoDatabase()
    pgbulk.insert_rows(session, ATTEMPTS, [], conflict=("item_id", "step"))
    pgbulk.upsert_rows(session, ATTEMPTS, [], conflict=("item_id", "step"))
    pgbulk.update_rows(session, ITEMS, "id", [], added=("cost_nanos",))

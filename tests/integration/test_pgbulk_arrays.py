"""Columns sent to Postgres as array literals (models.pgbulk): every value comes back
as it went, whatever the text holds, and other types still go as lists."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import psycopg
import pytest

from models import pgbulk

pytestmark = pytest.mark.postgres


class Kind(StrEnum):
    OK = "ok"


@pytest.fixture
def cur(pg_url: str) -> Iterator[Any]:
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn, conn.cursor() as c:
        yield c


@pytest.mark.parametrize(
    ("values", "pg_type"),
    [
        ([1, None, -7, 2**62], "BIGINT[]"),
        ([True, False, None], "BOOLEAN[]"),
        ([0.97, None, 1e-9, 3], "DOUBLE PRECISION[]"),
        (
            ["plain", None, "", 'quote " and \\ back', "{braces},commas", "NULL", "  sp  ",
             "naïve ünïcode ✓", "new\nline\ttab", Kind.OK],
            "TEXT[]",
        ),
        (
            [datetime(2026, 12, 7, 22, 30, 1, 123456, tzinfo=UTC), None,
             datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))],
            "TIMESTAMPTZ[]",
        ),
        ([None, None], "BIGINT[]"),
    ],
)  # fmt: skip
def test_a_column_comes_back_as_it_went(cur: Any, values: list[Any], pg_type: str) -> None:
    literal = pgbulk.array_literal(list(values))
    assert isinstance(literal, str)  # the literal, not the list
    cur.execute(f"SELECT %s::{pg_type}", [literal])
    (got,) = cur.fetchone()
    assert got == [float(v) if pg_type.startswith("DOUBLE") and v is not None else v
                   for v in values]  # fmt: skip


def test_other_types_go_as_the_list(cur: Any) -> None:
    values = [b"raw", None]
    assert pgbulk.array_literal(values) is values
    cur.execute("SELECT %s::BYTEA[]", [values])
    assert cur.fetchone() == ([b"raw", None],)

"""COPY text for the submit fast path: values as data, and meta as json.dumps writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from models.copyin import field, json_text


@pytest.mark.parametrize(
    "value",
    [{}, {"a": 'é😀\n\t"\\'}, {"n": [1, 2.5, -0.0, 1e300, True, False, None]}, {"x": {"y": {}}}],
)
def test_meta_json_is_what_json_dumps_writes(value: dict[str, Any]) -> None:
    assert json_text(value) == json.dumps(value)


def test_meta_json_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        json_text({"s": {1}})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "\\N"),
        (True, "t"),
        (False, "f"),
        (12, "12"),
        (0.5, "0.5"),
        ("plain", "plain"),
        ("tab\there\nnew\rline \\N back\\slash", "tab\\there\\nnew\\rline \\\\N back\\\\slash"),
        # each special alone is found (they are looked for one by one)
        ("a\tb", "a\\tb"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("a\\b", "a\\\\b"),
        (type("Sub", (str,), {})("a\tb"), "a\\tb"),  # a str subclass takes the slow way
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05+00:00"),
    ],
)
def test_copy_fields_escape_everything_copy_would_read_as_syntax(value: object, text: str) -> None:
    assert field(value) == text


def test_a_value_copy_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError, match="no COPY text form for bytes"):
        field(b"raw")


def test_a_small_chunk_and_what_follows_it_are_one_statement() -> None:
    from models import copyin

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    item = (
        7,
        1,
        2,
        "k",
        1,
        'a "quoted"\ttext',
        {"n": [1]},
        *([now] * (len(copyin.ITEM_COLS) - 7)),
    )
    rows = copyin.Rows([item], ("job_id", "item_id", "step"), [(1, 7, 0)])
    # Given a WITH statement to follow: its expressions join the rows'
    sql, params = copyin._one_statement(rows, ("WITH a AS (SELECT 1) UPDATE t", {"x": 1}))
    assert sql.startswith("WITH new_items AS (INSERT INTO items (id, job_id")
    assert "new_attempts AS (INSERT INTO attempts (job_id, item_id, step)" in sql
    assert sql.endswith(", a AS (SELECT 1) UPDATE t") and sql.count("WITH") == 1
    assert params["x"] == 1
    # the rows are data in JSON parameters, never in the SQL
    items = json.loads(params["_items"])
    assert items[0]["text"] == 'a "quoted"\ttext' and items[0]["meta"] == {"n": [1]}
    assert items[0]["created_at"] == now.isoformat() and "quoted" not in sql
    assert json.loads(params["_attempts"]) == [{"job_id": 1, "item_id": 7, "step": 0}]
    # a plain statement goes after them; none at all, a SELECT does
    assert copyin._one_statement(rows, ("UPDATE t", {}))[0].endswith(") UPDATE t")
    alone, only = copyin._one_statement(copyin.Rows([item], (), []), None)
    assert alone.endswith(") SELECT 1") and "attempts" not in alone and set(only) == {"_items"}
    with pytest.raises(ValueError, match="_items"):
        copyin._one_statement(rows, ("UPDATE t", {"_items": 1}))

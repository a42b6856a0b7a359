"""COPY text for the submit fast path: values as data, and meta as json.dumps writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from common.lifecycle import Verdict
from models import copyin
from models.attempt_rows import attempt_row
from models.copyin import field, json_text
from models.copytext import row_tail
from models.ledger import Settled, settled_values
from models.repo import NewItem


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


# -- preparing a chunk without a database (ids drawn already) --------------------------
class NoDatabase:
    """A session that must not be used: the ids were drawn with the submission."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def lines(n: int) -> list[Any]:
    return [NewItem(k + 1, f"k{k}", f"text\t{k}", {"n": k}) for k in range(n)]


def accept_all(drop_text: bool) -> Any:
    """A ``decide`` that accepts every item at the rules tier, as the door would."""

    def decide(ids: Any, items: Any, now: datetime) -> copyin.Decisions:
        def describe(n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            s = Settled(ids[n], Verdict.ACCEPT, 0, "rules", 1, 0, 0, 0, False, 10, "spam", 1.0)
            row = attempt_row(
                job_id=1, item_id=ids[n], step=0, tier_index=0, tier="rules", role="rules",
                provider="rules", model="rules", outcome="rule_match", decision="accept",
            )  # fmt: skip
            return settled_values(s, now, drop_text), [row]

        return copyin.Decisions(["spam"] * len(items), describe)

    return decide


def test_a_small_chunk_is_kept_as_values_with_the_drawn_ids() -> None:
    batch = [*lines(3), lines(1)[0]]  # the first line's id again: a duplicate
    prepared = copyin.prepare(NoDatabase(), 1, 2, batch, drawn=([70, 71, 72, 73], NOW))

    assert prepared.ids == [70, 71, 72] and prepared.duplicates == [(1, "k0", 1)]
    assert prepared.rows is not None and prepared.items_text == ""
    assert [r[:5] for r in prepared.rows.items] == [
        (70, 1, 2, "k0", 1), (71, 1, 2, "k1", 2), (72, 1, 2, "k2", 3),
    ]  # fmt: skip
    assert prepared.rows.attempts == []
    assert prepared.unfinished  # pending at the first tier


def test_a_small_decided_chunk_is_finished_and_forgets_texts_when_told() -> None:
    prepared = copyin.prepare(
        NoDatabase(),
        1,
        2,
        lines(2),
        accept_all(drop_text=True),
        drawn=([5, 6], NOW),
    )

    assert prepared.rows is not None and not prepared.unfinished
    status = copyin.ITEM_COLS.index("status")
    text = copyin.ITEM_COLS.index("text")
    assert [(r[status], r[text]) for r in prepared.rows.items] == [("done", None)] * 2
    assert prepared.rows.attempt_names[:3] == ("job_id", "item_id", "step")
    assert [r[:3] for r in prepared.rows.attempts] == [(1, 5, 0), (1, 6, 0)]


def test_a_large_chunk_is_copy_text_one_line_per_item() -> None:
    n = copyin.SMALL_ROWS + 1
    ids = list(range(100, 100 + n + 5))  # more drawn than needed: the first n are used
    prepared = copyin.prepare(NoDatabase(), 1, 2, lines(n), accept_all(False), drawn=(ids, NOW))

    assert prepared.rows is None and prepared.ids == ids[:n]
    rows = prepared.items_text.splitlines()
    assert len(rows) == n
    # id, job, submission, key, line, text (its tab escaped), meta, no text hash, then the tail
    assert rows[0].startswith('100\t1\t2\tk0\t1\ttext\\t0\t{"n": 0}\t\\N\tdone\t')
    assert prepared.attempts is not None
    names, attempts = prepared.attempts
    assert names[:3] == ("job_id", "item_id", "step") and len(attempts.splitlines()) == n
    with pytest.raises(ValueError, match="only a small chunk's rows are kept as values"):
        _ = prepared.unfinished


def test_a_decision_per_item_and_attempt_rows_of_one_shape_are_required() -> None:
    def short(ids: Any, items: Any, now: datetime) -> copyin.Decisions:
        return copyin.Decisions(["x"], lambda n: ({}, []))

    with pytest.raises(ValueError, match=r"^one kind per item$"):
        copyin.prepare(NoDatabase(), 1, 2, lines(2), short, drawn=([1, 2], NOW))

    def headless(ids: Any, items: Any, now: datetime) -> copyin.Decisions:
        return copyin.Decisions(["x", "x"], lambda n: ({}, [{"item_id": ids[n], "step": 0}]))

    with pytest.raises(ValueError, match="attempt rows must share columns led by"):
        copyin.prepare(NoDatabase(), 1, 2, lines(2), headless, drawn=([1, 2], NOW))


def test_item_columns_must_be_columns_of_items() -> None:
    with pytest.raises(ValueError, match=r"not columns of items: \['colour'\]"):
        row_tail({"status": "done", "colour": "red"})


def test_what_follows_a_chunk_runs_only_without_a_savepoint() -> None:
    prepared = copyin.prepare(NoDatabase(), 1, 2, lines(1), drawn=([1], NOW))
    with pytest.raises(ValueError, match="then: only without a savepoint"):
        copyin.write(NoDatabase(), prepared, savepoint=True, then=("SELECT 1", {}))

"""The COPY path (models.bulk) against real Postgres: the same results as repo.add_items,
case by case, and the same rows in the table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, select

from migrations.runner import upgrade
from models import copyin, repo
from models.bulk import add_items_copy, add_items_fast
from models.copyin import add_items_direct
from models.db import make_engine, make_sessionmaker
from models.repo import ITEMS, AddResult, NewItem

AddFn = Callable[[Any, int, int, Sequence[NewItem]], AddResult]


def item(line: int, key: str, text: str = "hello", **meta: Any) -> NewItem:
    return NewItem(line, key, text, meta)


# (name, [batches of the first submission], [batches of a second submission],
#  expected (added count, duplicates, existing) per batch in order)
CASES: list[tuple[str, list[list[NewItem]], list[list[NewItem]], list[tuple[int, Any, int]]]] = [
    # a fresh batch: everything is added, in input order
    ("fresh", [[item(1, "a"), item(2, "b"), item(3, "c")]], [], [(3, [], 0)]),
    # an id twice inside one batch: the first occurrence wins, the second is a duplicate
    (
        "dup_in_batch",
        [[item(1, "a"), item(2, "b"), item(3, "a"), item(4, "a")]],
        [],
        [(2, [(3, "a", 1), (4, "a", 1)], 0)],
    ),
    # an id seen in an earlier batch of the same submission: a duplicate naming its line
    (
        "dup_across_batches",
        [[item(1, "a"), item(2, "b")], [item(3, "b"), item(4, "c")]],
        [],
        [(2, [], 0), (1, [(3, "b", 2)], 0)],
    ),
    # the same file submitted again (a second submission): existing, not duplicates
    (
        "resubmit",
        [[item(1, "a"), item(2, "b")]],
        [[item(1, "a"), item(2, "b"), item(3, "c")]],
        [(2, [], 0), (1, [], 2)],
    ),
    # the same line flushed twice within a submission (a retried flush) is existing
    ("same_line_again", [[item(1, "a")], [item(1, "a")]], [], [(1, [], 0), (0, [], 1)]),
    # an empty batch writes nothing
    ("empty", [[]], [], [(0, [], 0)]),
    # text and metadata that need escaping in COPY's text format survive byte for byte
    (
        "escaping",
        [
            [
                item(1, "tab\tkey", "line\nbreak\\back\tslash \u00e9\U0001f600", x="a\\b", n=[1]),
                item(2, "q'uote", '"quoted" \r\n', nested={"k": None}),
            ]
        ],
        [],
        [(2, [], 0)],
    ),
]


@pytest.fixture
def pg(pg_url: str) -> Iterator[Engine]:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def _run(
    engine: Engine, fn: AddFn, first: list[list[NewItem]], second: list[list[NewItem]]
) -> tuple[list[tuple[int, Any, int]], list[tuple[Any, ...]]]:
    sessions = make_sessionmaker(engine)
    results: list[tuple[int, Any, int]] = []
    with sessions.begin() as s:
        job_id, _ = repo.open_job(s, f"job-{fn.__name__}", {"name": "p"})
    for batches in (first, second):
        if not batches:
            continue
        with sessions.begin() as s:
            sub = repo.start_submission(s, job_id, "file.jsonl")
        for batch in batches:
            with sessions.begin() as s:
                res = fn(s, job_id, sub, batch)
                # ids come back in input order and are the rows just written
                keys = dict(
                    s.execute(
                        select(ITEMS.c.id, ITEMS.c.item_key).where(ITEMS.c.id.in_(res.added))
                    ).all()
                )
                assert [keys[i] for i in res.added] == [
                    k for k in dict.fromkeys(it.key for it in batch) if k in keys.values()
                ]
            results.append((len(res.added), res.duplicates, res.existing))
    with sessions.begin() as s:
        rows = s.execute(
            select(
                ITEMS.c.item_key,
                ITEMS.c.line_no,
                ITEMS.c.text,
                ITEMS.c.meta,
                ITEMS.c.status,
                ITEMS.c.tier_index,
                ITEMS.c.steps,
                ITEMS.c.cost_nanos,
                ITEMS.c.fallback_used,
                ITEMS.c.deferrals,
            )
            .where(ITEMS.c.job_id == job_id)
            .order_by(ITEMS.c.id)
        ).all()
    return results, [tuple(r) for r in rows]


pytestmark = pytest.mark.postgres


def add_direct_or_copy(s: Any, job_id: int, sub: int, batch: Sequence[NewItem]) -> AddResult:
    """What `cascade submit` does on Postgres: COPY straight in, else the ON CONFLICT path."""
    return add_items_direct(s, job_id, sub, batch) or add_items_copy(s, job_id, sub, batch)


@pytest.mark.parametrize(("name", "first", "second", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("small_rows", [0, 1_000], ids=["copy", "insert"])
def test_copy_path_matches_executemany(
    pg: Engine,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    first: list[list[NewItem]],
    second: list[list[NewItem]],
    expected: list[tuple[int, Any, int]],
    small_rows: int,
) -> None:
    # Given the same submissions through every path (separate jobs); the direct path
    # as COPY text, or (small chunks) as one INSERT
    monkeypatch.setattr(copyin, "SMALL_ROWS", small_rows)
    got_copy, rows_copy = _run(pg, add_items_copy, first, second)
    got_many, rows_many = _run(pg, repo.add_items, first, second)
    got_direct, rows_direct = _run(pg, add_direct_or_copy, first, second)
    # Then they report the same and write the same rows
    assert got_copy == expected
    assert got_many == expected
    assert got_direct == expected
    assert rows_copy == rows_many
    assert rows_direct == rows_many


@pytest.mark.parametrize("small_rows", [0, 1_000], ids=["copy", "insert"])
def test_direct_copy_writes_nothing_when_an_id_exists(
    pg: Engine, monkeypatch: pytest.MonkeyPatch, small_rows: int
) -> None:
    monkeypatch.setattr(copyin, "SMALL_ROWS", small_rows)
    sessions = make_sessionmaker(pg)
    with sessions.begin() as s:
        job_id, _ = repo.open_job(s, "direct", {"name": "p"})
        sub = repo.start_submission(s, job_id, "file.jsonl")
        assert add_items_direct(s, job_id, sub, [item(1, "a"), item(2, "b")]) is not None
    with sessions.begin() as s:
        # b exists: the whole chunk is refused, and the transaction is still usable
        assert add_items_direct(s, job_id, sub, [item(3, "c"), item(4, "b")]) is None
        assert add_items_copy(s, job_id, sub, [item(3, "c"), item(4, "b")]).added
    with sessions.begin() as s:
        keys = s.scalars(select(ITEMS.c.item_key).where(ITEMS.c.job_id == job_id)).all()
    assert sorted(keys) == ["a", "b", "c"]


def test_fast_path_uses_executemany_on_sqlite(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        got, rows = _run(engine, add_items_fast, [[item(1, "a"), item(2, "a")]], [])
        assert got == [(1, [(2, "a", 1)], 0)]
        assert [r[0] for r in rows] == ["a"]
    finally:
        engine.dispose()


def test_copy_path_refuses_sqlite(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with make_sessionmaker(engine).begin() as s, pytest.raises(RuntimeError, match="Postgres"):
            add_items_copy(s, 1, 1, [item(1, "a")])
    finally:
        engine.dispose()


def test_copy_path_large_batch(pg: Engine) -> None:
    batch = [item(n, f"k{n}", f"text {n}", n=n) for n in range(1, 5001)]
    got, rows = _run(pg, add_items_copy, [batch], [])
    assert got == [(5000, [], 0)]
    assert [r[0] for r in rows] == [f"k{n}" for n in range(1, 5001)]

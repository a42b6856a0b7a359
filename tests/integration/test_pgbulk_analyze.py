"""Planner statistics for a fresh database (models.pgbulk.analyze_if_unseen): without
them Postgres scans the whole attempts table for a claim's 100 items; once the tables
have some, nothing more is done."""

from __future__ import annotations

from sqlalchemy import Engine, text

from common.lifecycle import Outcome
from models import pgbulk, repo
from models.attempt_rows import attempt_row
from models.db import make_sessionmaker
from models.repo import ATTEMPTS, NewItem
from tests.integration.conftest import is_postgres

N = 5_000
LOOKUP = text("EXPLAIN SELECT * FROM attempts WHERE item_id = ANY(:ids) AND step < 1000000")


def _fill(engine: Engine) -> list[int]:
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "analyze", {"name": "p"})
        sub = repo.start_submission(s, job_id, "x.jsonl")
        ids = repo.add_items(s, job_id, sub, [NewItem(i, f"k{i}", f"t{i}", {}) for i in range(N)])
        rows = [
            attempt_row(job_id=job_id, item_id=pk, step=0, tier_index=0, tier="rules",
                        role="rules", provider="local", model="rules", outcome=Outcome.OK)
            for pk in ids.added
        ]  # fmt: skip
        if is_postgres(str(engine.url)):
            pgbulk.insert_rows(s, ATTEMPTS, rows, conflict=("item_id", "step"))
        else:
            s.execute(ATTEMPTS.insert(), rows)
    return ids.added


def _plan(engine: Engine, ids: list[int]) -> str:
    with engine.connect() as c:
        return "\n".join(r[0] for r in c.execute(LOOKUP, {"ids": ids[:100]}))


def test_tables_without_statistics_are_analyzed_once(engine: Engine) -> None:
    ids = _fill(engine)
    sessions = make_sessionmaker(engine)
    if not is_postgres(str(engine.url)):
        with sessions.begin() as s:
            assert pgbulk.analyze_if_unseen(s) == []  # SQLite: nothing to do
        return
    assert "Seq Scan on attempts" in _plan(engine, ids)  # the guess: half the table
    with sessions.begin() as s:
        assert pgbulk.analyze_if_unseen(s) == ["attempts", "items"]
    assert "Seq Scan" not in _plan(engine, ids)
    with sessions.begin() as s:
        assert pgbulk.analyze_if_unseen(s) == []  # statistics now: one lookup, no ANALYZE

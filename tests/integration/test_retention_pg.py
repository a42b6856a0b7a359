"""Retention on Postgres: purge blanks old texts and metadata, keeps every ledger figure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from migrations.runner import upgrade
from models import repo
from models.db import make_engine, make_sessionmaker
from models.repo import NewItem
from models.retention import purge

pytestmark = pytest.mark.postgres


def test_purge_keeps_the_ledger(pg_url: str) -> None:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as s:
            job_id, _ = repo.open_job(s, "old", {"name": "p", "tiers": []})
            sub = repo.start_submission(s, job_id, "file.jsonl")
            ids = repo.add_items(
                s, job_id, sub, [NewItem(n, f"k{n}", f"secret text {n}", {"u": n}) for n in (1, 2)]
            ).added
            repo.add_rejected(s, job_id, sub, "file.jsonl", [(3, "empty_text", '{"id": 3}')])
            old = datetime.now(UTC) - timedelta(days=40)
            s.execute(
                text(
                    "UPDATE items SET status='done', label='a', cost_nanos=7, finished_at=:t "
                    "WHERE id = :i"
                ),
                {"t": old, "i": ids[0]},
            )
            s.execute(text("UPDATE rejected_lines SET created_at = :t"), {"t": old})
        with sessions.begin() as s:
            purged = purge(s, datetime.now(UTC) - timedelta(days=30))
        assert purged == (1, 1)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT item_key, text, meta, label, cost_nanos FROM items ORDER BY id")
            ).all()
            raw = conn.execute(text("SELECT raw, reason FROM rejected_lines")).one()
        # the old item lost its text and metadata, kept its label and cost
        assert rows[0] == ("k1", None, {}, "a", 7)
        # the recent, unfinished one is untouched
        assert rows[1][1] == "secret text 2" and rows[1][2] == {"u": 2}
        assert raw == ("", "empty_text")
    finally:
        engine.dispose()

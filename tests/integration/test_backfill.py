"""Backfills from a Postgres table with a watermark, through batch-mode tiers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cascade.fakeapi import FakeServer
from tests.integration.test_batches import (  # noqa: F401  (fixtures)
    MODERATION,
    ROOT,
    Workers,
    batch_pipeline,
    broker,
    cli,
    fake,
    pytestmark,
    set_batches,
    workers,
)


def _posts(n: int, offset: int = 0) -> list[dict[str, str]]:
    rows = []
    for line in (ROOT / "examples" / "posts.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("text"):
            rows.append(row)
    return rows[offset : offset + n]


def _add_rows(url: str, rows: list[dict[str, str]], at: datetime, first_id: int) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS forum_posts (id bigint PRIMARY KEY, body text, "
                "author text, updated_at timestamptz NOT NULL)"
            )
        )
        conn.execute(
            text("INSERT INTO forum_posts VALUES (:id, :body, :author, :at)"),
            [
                {"id": first_id + i, "body": r["text"], "author": f"user{i}", "at": at}
                for i, r in enumerate(rows)
            ],
        )
    engine.dispose()


@pytest.mark.timeout(300)
def test_backfill_from_a_table_takes_only_what_is_new(
    workers: Workers,  # noqa: F811
    pg_url: str,
    fake: FakeServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    set_batches(fake, delay_s=0.3)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    _add_rows(pg_url, _posts(30), start, 1)
    args = [
        "backfill",
        "--pipeline",
        str(batch_pipeline(tmp_path)),  # the moderation example, polls every 0.5 s
        "--source",
        pg_url,
        "--table",
        "forum_posts",
        "--text-column",
        "body",
        "--mode",
        "batch",
        "--wait",
    ]
    # When the backfill runs for the first time
    first = cli(workers.env, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "30 new items" in first.stdout
    assert "at batch price" in first.stdout
    print(first.stdout)
    # And new rows arrive, and it runs again
    _add_rows(pg_url, _posts(12, offset=30), start + timedelta(days=1), 1000)
    second = cli(workers.env, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "12 new items" in second.stdout
    # And once more, with nothing new
    third = cli(workers.env, *args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "nothing new" in third.stdout
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        # Then each row was processed exactly once, metadata carried through
        keys = conn.execute(text("SELECT item_key FROM items")).scalars().all()
        assert len(keys) == len(set(keys)) == 42
        assert conn.execute(text("SELECT count(DISTINCT job_id) FROM items")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM items WHERE status <> 'done'")).scalar() == 0
        meta = conn.execute(text("SELECT meta FROM items WHERE item_key = '1000'")).scalar()
        assert meta["author"] == "user0"
        mark = conn.execute(text("SELECT watermark FROM backfill_watermarks")).scalar()
        assert mark == start + timedelta(days=1)
        runs = conn.execute(text("SELECT status, items_added FROM backfill_runs ORDER BY id")).all()
        assert [tuple(r) for r in runs] == [("done", 30), ("done", 12), ("empty", 0)]
        assert not conn.execute(
            text("SELECT count(*) FROM attempts WHERE role='primary' AND NOT is_batch")
        ).scalar()
    engine.dispose()
    # And --list shows the runs
    config = tmp_path / "backfills.toml"
    config.write_text(
        f'[[backfill]]\nname = "nightly-forum"\nat = "02:30"\npipeline = "{MODERATION}"\n'
        f'source = "{pg_url}"\ntable = "forum_posts"\ntext_column = "body"\nmode = "batch"\n'
    )
    listed = cli(workers.env | {"CASCADE_BACKFILLS_FILE": str(config)}, "backfill", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "nightly-forum" in listed.stdout and "02:30" in listed.stdout
    assert "empty" in listed.stdout and "done" in listed.stdout

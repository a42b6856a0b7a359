"""Retention: texts can be forgotten while the ledger, and so every report, stays whole."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import PIPELINE, TICKETS, run

pytestmark = pytest.mark.e2e


def _texts(db: Path) -> list[str | None]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT text FROM items")]


def test_store_text_false_never_keeps_a_finished_items_text(
    env: dict[str, str], tmp_path: Path
) -> None:
    pipeline = tmp_path / "no_text.toml"
    pipeline.write_text(PIPELINE.read_text().replace("[limits]", "store_text = false\n\n[limits]"))
    done = run(env, "submit", str(TICKETS), "--pipeline", str(pipeline), "--wait")
    assert done.returncode == 0, done.stderr
    texts = _texts(tmp_path / "cascade.db")
    assert len(texts) == 300
    assert texts == [None] * 300


def test_purge_blanks_old_texts_and_keeps_the_report(env: dict[str, str], tmp_path: Path) -> None:
    # Given a finished job
    args = ("submit", str(TICKETS), "--pipeline", str(PIPELINE), "--wait", "--job-name", "old")
    assert run(env, *args).returncode == 0
    before = json.loads(run(env, "report", "--job", "old", "--format", "json").stdout)
    assert all(_texts(tmp_path / "cascade.db"))
    time.sleep(1.1)
    # When texts older than a second are purged
    purged = run(env, "purge", "--older-than", "1s")
    assert purged.returncode == 0, purged.stderr
    assert "purged the text of 300 items and 3 rejected lines" in purged.stdout
    # Then no text is left, and the report is exactly what it was
    assert _texts(tmp_path / "cascade.db") == [None] * 300
    after = json.loads(run(env, "report", "--job", "old", "--format", "json").stdout)
    assert after == before

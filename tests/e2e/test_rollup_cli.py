"""`cascade rollup` on the embedded database, and the embedded report refreshing it."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.e2e.conftest import run


def _ledger(env: dict[str, str]) -> str:
    """One job, one item, one accepting rules step on 2026-01-01; returns the file."""
    path = env["CASCADE_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO jobs (id, name, pipeline_name, pipeline, status) "
                   "VALUES (1, 'j', 'p', '{}', 'done')")  # fmt: skip
        db.execute("INSERT INTO submissions (id, job_id, source, lines_read, items_added, "
                   "items_existing, lines_rejected) VALUES (1, 1, 's', 1, 1, 0, 0)")  # fmt: skip
        db.execute("INSERT INTO items (id, job_id, submission_id, item_key, line_no, meta, "
                   "status, tier_index, cost_nanos, baseline_nanos, latency_ms, steps, "
                   "model_calls, fallback_used, deferrals) "
                   "VALUES (1, 1, 1, 'k', 1, '{}', 'done', 0, 0, 7, 0, 1, 0, 0, 0)")  # fmt: skip
        db.execute("INSERT INTO attempts (job_id, item_id, step, tier_index, tier, role, "
                   "provider, model, outcome, decision, hedged, input_tokens, output_tokens, "
                   "cache_write_tokens, cache_read_tokens, is_batch, cost_nanos, latency_ms, "
                   "created_at) VALUES (1, 1, 1, 0, 'rules', 'rules', 'rules', 'rules', "
                   "'rule_match', 'accept', 0, 0, 0, 0, 0, 0, 0, 1, "
                   "'2026-01-01 00:00:00')")  # fmt: skip
    return path


def test_rollup_command_moves_the_watermark(env: dict[str, str]) -> None:
    # Given a fresh embedded database (the command migrates it) with one finished item
    first = run(env, "rollup", "--grace", "0")
    assert first.returncode == 0, first.stderr
    assert "watermark 0 -> 0 (0 batches)" in first.stdout
    path = _ledger(env)

    # When the rollup runs with no grace period
    done = run(env, "rollup", "--grace", "0")

    # Then the row is in the rollup and the view still reads it
    assert done.returncode == 0, done.stderr
    assert "watermark 0 -> 1 (1 batch); 0 newer attempts" in done.stdout
    with sqlite3.connect(path) as db:
        assert db.execute(
            "SELECT items, accepted, baseline_nanos FROM rollup_daily"
        ).fetchall() == [(1, 1, 7)]
        assert db.execute("SELECT pipeline, tier, items FROM report_daily").fetchall() == [
            ("p", "rules", 1)
        ]


def test_embedded_report_refreshes_the_rollup_first(env: dict[str, str]) -> None:
    assert run(env, "migrate").returncode == 0
    path = _ledger(env)

    report = run(env, "report", "--since", "2026-01-01", "--format", "json")

    assert report.returncode == 0, report.stderr
    daily = json.loads(report.stdout)["daily"]
    assert [
        (d["day"], d["pipeline"], d["tier"], d["items"], d["baseline_cost_usd"]) for d in daily
    ] == [("2026-01-01", "p", "rules", 1, "0.000000007")]
    with sqlite3.connect(path) as db:  # no beat embedded: the report rolled up first
        assert db.execute("SELECT last_id FROM rollup_mark").fetchall() == [(1,)]


def test_beat_refreshes_the_rollup_every_five_minutes_on_the_fallback_queue() -> None:
    import tasks.jobs  # noqa: F401  (registers the tasks)
    from tasks.app import app
    from tasks.queues import FALLBACK_QUEUE

    entry = app.conf.beat_schedule["rollup"]
    assert entry["task"] == "cascade.rollup"
    assert entry["schedule"] == 300.0
    assert entry["options"] == {"queue": FALLBACK_QUEUE}
    assert "cascade.rollup" in app.tasks


def test_the_rollup_task_moves_the_watermark(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.settings import get_settings
    from tasks.jobs import rollup
    from tasks.runtime import reset_runtime

    assert run(env, "migrate").returncode == 0
    path = _ledger(env)  # its one attempt is from 2026-01-01: past any grace period
    monkeypatch.setenv("CASCADE_DATABASE_URL", env["CASCADE_DATABASE_URL"])
    get_settings.cache_clear()
    reset_runtime()
    try:
        assert rollup() == 1  # the task body, as the beat runs it
        assert rollup() == 1  # and again: nothing new, nothing counted twice
    finally:
        get_settings.cache_clear()
        reset_runtime()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT items, accepted FROM rollup_daily").fetchall() == [(1, 1)]

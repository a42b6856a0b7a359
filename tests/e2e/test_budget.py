"""Budgets: a job never spends past its cap; capped items keep a lower tier's answer,
unstarted ones wait, and `cascade resume --budget` continues them."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.conftest import PIPELINE, TICKETS, run

pytestmark = pytest.mark.e2e


def _db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "cascade.db")


def test_budget_caps_spend_then_resume_finishes(env: dict[str, str], tmp_path: Path) -> None:
    # Given a job whose budget covers only part of its model calls ($0.0127 of ~$0.128)
    budget = "0.0127"
    done = run(
        env,
        "submit",
        str(TICKETS),
        "--pipeline",
        str(PIPELINE),
        "--wait",
        "--job-name",
        "capped",
        "--budget",
        budget,
    )
    assert done.returncode == 0, done.stderr
    with _db(tmp_path) as db:
        status, message, spent, cap = db.execute(
            "SELECT status, message, spent_nanos, budget_nanos FROM jobs WHERE name='capped'"
        ).fetchone()
        counts = dict(db.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall())
        capped = db.execute(
            "SELECT label, confidence, final_tier, error FROM items WHERE status='budget_capped'"
        ).fetchall()
        cost = db.execute("SELECT sum(cost_nanos) FROM attempts").fetchone()[0]
    # Then it paused with the reason, and never spent more than the cap
    assert status == "paused"
    assert "budget reached" in message
    assert cap == 12_700_000
    assert spent == cost <= cap
    # And items that had a lower tier's answer kept it, capped, for review
    assert counts.get("budget_capped", 0) + counts.get("paused_budget", 0) > 0
    for label, confidence, tier, error in capped:
        assert label is not None and confidence is not None
        assert tier in ("rules", "small")
        assert "budget reached" in error
    # And the report shows the budget, the spend, and the capped and paused counts
    report = json.loads(run(env, "report", "--job", "capped", "--format", "json").stdout)
    assert report["budget_usd"] == "0.012700000"
    assert Decimal(report["spent_usd"]) == Decimal(spent) / 10**9
    assert report["items_budget_capped"] == counts.get("budget_capped", 0)
    assert report["items_paused_budget"] == counts.get("paused_budget", 0)
    assert report["items_unfinished"] == counts.get("paused_budget", 0)
    assert "budget reached" in report["message"]
    # When it is resumed with a bigger budget
    resumed = run(env, "resume", "capped", "--budget", "5")
    assert resumed.returncode == 0, resumed.stderr
    # Then the waiting items finish; capped ones stay as they were
    with _db(tmp_path) as db:
        status = db.execute("SELECT status FROM jobs WHERE name='capped'").fetchone()[0]
        after = dict(db.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall())
    assert status == "done"
    assert "paused_budget" not in after
    assert after.get("budget_capped", 0) == counts.get("budget_capped", 0)
    assert sum(after.values()) == 300


def test_a_bad_budget_is_refused(env: dict[str, str]) -> None:
    bad = run(env, "submit", str(TICKETS), "--pipeline", str(PIPELINE), "--budget", "lots")
    assert bad.returncode == 2
    assert "not an amount in USD" in bad.stderr

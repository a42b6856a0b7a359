"""A text is classified once per pipeline version: repeats make no model calls."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import PIPELINE, run

pytestmark = pytest.mark.e2e

TEXTS = [
    "My invoice shows a charge I do not recognise, please refund it",
    "The app crashes every time I open the settings page",
    "How do I change the email address on my account?",
    "My parcel has not arrived after two weeks",
    "I love the new dark mode, great work",
    "Can you tell me more about your company history?",
    "I was billed twice for the same subscription this month",
    "Error 500 when uploading a file larger than 10 MB",
]


def pipeline(tmp_path: Path, name: str, head: str) -> Path:
    path = tmp_path / name
    path.write_text(head + "\n" + PIPELINE.read_text())
    return path


def items(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "\n".join(json.dumps({"id": f"i{n}", "text": t}) for n, t in enumerate(texts)) + "\n"
    )
    return path


def calls(fake: FakeServer) -> int:
    return sum(s["calls"] for s in fake.stats()["by_model"].values())


def test_repeats_take_the_decision_of_the_first_and_make_no_calls(
    env: dict[str, str], fake: FakeServer, tmp_path: Path
) -> None:
    # Given the distinct texts classified once with reuse off: the calls they need
    off = pipeline(tmp_path, "off.toml", "reuse = false")
    once = run(
        env, "submit", str(items(tmp_path / "a.jsonl", TEXTS)), "--pipeline", str(off),
        "--wait", "--job-name", "distinct",
    )  # fmt: skip
    assert once.returncode == 0, once.stderr
    distinct_calls = calls(fake)
    assert distinct_calls >= len(TEXTS) - 2  # most go past the rules tier
    fake.reset()

    # When a file repeating each text four times (spaces varied) goes in with reuse on
    repeated = [t if n % 2 else f"  {t.replace(' ', '  ')} " for n in range(4) for t in TEXTS]
    done = run(
        env, "submit", str(items(tmp_path / "b.jsonl", repeated)), "--pipeline", str(PIPELINE),
        "--wait", "--job-name", "repeats",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    # Then the fake saw exactly the calls for the distinct texts
    assert calls(fake) == distinct_calls
    db = sqlite3.connect(env["CASCADE_DATABASE_URL"].removeprefix("sqlite:///"))
    job = db.execute("SELECT id FROM jobs WHERE name = 'repeats'").fetchone()[0]
    rows = db.execute(
        "SELECT i.status, i.label, i.cost_nanos, i.model_calls, s.label, s.status "
        "FROM items AS i JOIN items AS s ON s.id = i.reuse_of WHERE i.job_id = ?",
        (job,),
    ).fetchall()
    # And every repeat of a model-tier text is done with its source's label, at no cost
    assert rows, "no item was reused"
    assert all(r[0] == "done" and r[1] == r[4] and r[2] == 0 and r[3] == 0 for r in rows)
    ledger = db.execute(
        "SELECT COUNT(*), SUM(cost_nanos), COUNT(reuse_of) FROM attempts "
        "WHERE job_id = ? AND role = 'reuse'",
        (job,),
    ).fetchone()
    assert ledger == (len(rows), 0, len(rows))
    status = dict(db.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())
    assert "reuse_wait" not in status
    report = json.loads(run(env, "report", "--job", "repeats", "--format", "json").stdout)
    assert report["status"] == "done"
    assert report["reuse"]["items"] == len(rows)
    assert report["model_calls"] == distinct_calls

    # And a later job with reuse_days takes every decided text from it: no calls at all
    fake.reset()
    days = pipeline(tmp_path, "days.toml", "reuse_days = 7")
    again = run(
        env, "submit", str(items(tmp_path / "c.jsonl", TEXTS)), "--pipeline", str(days),
        "--wait", "--job-name", "later",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    later = json.loads(run(env, "report", "--job", "later", "--format", "json").stdout)
    assert later["status"] == "done"
    # only a pipeline of the same version counts: reuse_days is not part of the version
    assert calls(fake) == 0

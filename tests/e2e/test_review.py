"""The human review round trip end to end (SQLite, the fake Messages API, the CLI):
items go to review, the job is done for the machine, a reviewer's file comes back as
gold, and the report, tune (both modes) and train-local read it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import PIPELINE, TICKETS, run

pytestmark = pytest.mark.e2e


def _tickets(tmp_path: Path, n: int = 80) -> Path:
    good, seen = [], set()
    for line in TICKETS.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("text") and row.get("id") not in seen:
            seen.add(row["id"])
            good.append(line)
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(good[:n]) + "\n")
    return path


def _pipeline(tmp_path: Path) -> Path:
    """support_triage.toml: small shadows everything and sends refusals to review; the
    last tier sends answers below 0.9 to review; so do tiers that disagree."""
    src = PIPELINE.read_text()
    src = src.replace(
        "max_tokens = 200", 'max_tokens = 200\nshadow_rate = 1.0\non_refusal = "review"'
    )
    src = src.replace("min_confidence = 0.0", "min_confidence = 0.0\nreview_below = 0.9", 1)
    src = src.replace('name = "support-triage"', 'name = "mod"\nreview_on_disagreement = true', 1)
    path = tmp_path / "moderated.toml"
    path.write_text(src)
    return path


def _items(env: dict[str, str]) -> dict[str, Any]:
    engine = create_engine(env["CASCADE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT item_key, status, label, final_tier FROM items"))
            return {r.item_key: r for r in rows}
    finally:
        engine.dispose()


def _ok(env: dict[str, str], *args: str) -> str:
    done = run(env, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.timeout(300)  # eleven CLI runs, each a fresh Python process
def test_review_round_trip(env: dict[str, str], fake: FakeServer, tmp_path: Path) -> None:
    # Given the small model refuses posts about passwords, and the last tier is unsure of some
    fake.set_faults("claude-haiku-5-5", refuse_pattern="(?i)password")
    pipeline = _pipeline(tmp_path)
    _ok(env, "submit", str(_tickets(tmp_path)), "--pipeline", str(pipeline), "--wait",
        "--job-name", "mod")  # fmt: skip
    items = _items(env)
    waiting = {k for k, r in items.items() if r.status == "review"}
    # Then the job is done for the machine while items wait for a person, and it says so
    report = json.loads(_ok(env, "report", "--job", "mod", "-f", "json"))
    assert report["status"] == "done"
    assert report["items_review"] == len(waiting) > 0
    assert report["items_unfinished"] == 0
    assert any(items[k].final_tier == "small" for k in waiting)  # a refusal sent it
    assert any(items[k].final_tier == "large" for k in waiting)  # unsure last tier
    assert "in review" in _ok(env, "report", "--job", "mod")
    # And no item was settled over a disagreement: the small tier's escalated answer or its
    # shadow sample, where it has one, is the final label of every item done by the machine
    engine = create_engine(env["CASCADE_DATABASE_URL"])
    with engine.connect() as conn:
        others = conn.execute(
            text(
                "SELECT i.item_key, a.label FROM attempts a JOIN items i ON i.id = a.item_id"
                " WHERE i.status = 'done' AND a.label IS NOT NULL AND a.outcome = 'ok' AND"
                " ((a.tier_index = 1 AND a.decision = 'escalate') OR"
                " (a.tier_index = 2 AND a.role = 'shadow'))"
            )
        ).all()
    engine.dispose()
    assert others
    assert all(items[key].label == label for key, label in others)

    # When the queue is exported, a reviewer labels every item "other" but one, and imports it
    listed = _ok(env, "review", "list", "--job", "mod")
    assert sorted(waiting)[0] in listed
    queue = tmp_path / "queue.jsonl"
    _ok(env, "review", "export", "--job", "mod", "--out", str(queue))
    rows = [json.loads(line) for line in queue.read_text().splitlines()]
    assert {r["item_id"] for r in rows} == waiting
    for i, r in enumerate(rows):
        r |= {"label": "billing" if i == 0 else "other", "note": "checked"}
    rows[0]["reviewer"] = "bo"
    queue.write_text("".join(json.dumps(r) + "\n" for r in rows))
    said = _ok(env, "review", "import", str(queue), "--job", "mod", "--reviewer", "ana")
    assert f"{len(rows)} verdicts imported" in said

    # Then each verdict is the item's final label, the items are done, the report counts none
    after = _items(env)
    for r in rows:
        got = after[r["item_id"]]
        assert (got.status, got.label, got.final_tier) == ("done", r["label"], "review")
    report = json.loads(_ok(env, "report", "--job", "mod", "-f", "json"))
    assert report["items_review"] == 0
    assert report["reviews"]["reviewed"] == len(rows) and report["reviews"]["waiting"] == 0
    assert {t["tier"] for t in report["reviews"]["tiers"]} >= {"large"}
    assert "agree with reviewers" in _ok(env, "report", "--job", "mod")
    # And a second import replaces, never duplicates
    again = _ok(env, "review", "import", str(queue), "--job", "mod", "--reviewer", "ana")
    assert f"0 verdicts imported, {len(rows)} replaced" in again
    # And each tier's accuracy against the reviewers is reported
    stats = _ok(env, "review", "stats", "--job", "mod")
    assert f"0 waiting for review, {len(rows)} reviewed" in stats
    assert "tier 2 large:" in stats

    # And the verdicts are gold: tune --target-accuracy and train-local --source gold read them
    assert "quality = accuracy" in _ok(env, "tune", "--job", "mod", "--target-accuracy", "0.5")
    model_dir = tmp_path / "local"
    trained = _ok(env, "train-local", "--pipeline", str(pipeline), "--from-job", "mod",
                  "--source", "gold", "--out", str(model_dir))  # fmt: skip
    assert f"{len(rows)} examples" in trained
    # And the guarantee mode writes per-label thresholds, nothing accepted where uncertified
    tuned = _ok(env, "tune", "--job", "mod", "--max-error", "0.05", "--per-label",
                "--write", "--pipeline", str(pipeline))  # fmt: skip
    assert "NOT certified" in tuned and "more judged samples" in tuned
    small = tomllib.loads(pipeline.read_text())["tiers"][1]["accept"]
    assert set(small["min_confidence_by_label"].values()) == {"never"}
    assert "# the model's self-reported confidence" in pipeline.read_text()  # comments kept

"""Failures end to end: retries are bounded, the fallback task serves what the primary
could not, and an item nothing can serve ends failed with its reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import PIPELINE, TICKETS, run

pytestmark = pytest.mark.e2e


def _sample(tmp_path: Path, n: int = 60) -> Path:
    good = []
    for line in TICKETS.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("text") and row["id"] not in {json.loads(g)["id"] for g in good}:
            good.append(line)
    path = tmp_path / "sample.jsonl"
    path.write_text("\n".join(good[:n]) + "\n")
    return path


def _submit(env: dict[str, str], path: Path, name: str) -> dict[str, object]:
    env = env | {"CASCADE_RETRY_BASE_S": "0.01", "CASCADE_MAX_CALL_ATTEMPTS": "3"}
    done = run(env, "submit", str(path), "--pipeline", str(PIPELINE), "--wait", "--job-name", name)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(run(env, "report", "--job", name, "-f", "json").stdout)
    return report


def test_overloaded_primary_is_retried_then_served_by_the_fallback(
    env: dict[str, str], fake: FakeServer, tmp_path: Path
) -> None:
    # Given the small tier's primary answers 529 overloaded to every call
    fake.set_faults("claude-haiku-5-5", error_status=529)
    # When a job runs
    report = _submit(env, _sample(tmp_path), "overloaded")
    stats = fake.stats()["by_model"]
    tiers = {t["tier"]: t for t in report["tiers"]}  # type: ignore[attr-defined]
    # Then every item finished, none failed
    assert report["status"] == "done"
    assert report["items_failed"] == 0
    # And each item that reached the small tier cost exactly 3 tries of the primary
    entered = tiers["small"]["entered"]
    assert entered > 0
    assert stats["claude-haiku-5-5"]["calls"] == 3 * entered
    assert stats["claude-haiku-5-5"]["ok"] == 0
    # And the fallback model served each of them once
    assert stats["claude-haiku-4-5"]["calls"] == entered
    assert tiers["small"]["fallbacks"] == entered


def test_item_nothing_can_serve_ends_failed_with_every_reason(
    env: dict[str, str], fake: FakeServer, tmp_path: Path
) -> None:
    # Given the small tier's primary is retired (404) and its fallback refuses every item
    fake.set_faults("claude-haiku-5-5", error_status=404)
    fake.set_faults("claude-haiku-4-5", refuse_pattern=".")
    report = _submit(env, _sample(tmp_path), "dead")
    stats = fake.stats()["by_model"]
    # Then permanent errors are not retried
    assert stats["claude-haiku-5-5"]["calls"] == stats["claude-haiku-4-5"]["calls"]
    # And the job still completes, with the items the small tier saw failed, never accepted
    assert report["status"] == "done"
    assert report["items_failed"] == stats["claude-haiku-5-5"]["calls"] > 0
    outcomes = [
        json.loads(line) for line in run(env, "outcomes", "--job", "dead").stdout.splitlines()
    ]
    failed = [o for o in outcomes if o["status"] == "failed"]
    assert len(failed) == report["items_failed"]
    for o in failed:
        assert o["label"] is None
        assert "anthropic:claude-haiku-5-5" in o["error"]
        assert "anthropic:claude-haiku-4-5" in o["error"]
        assert "refused" in o["error"]
        assert "not_found" in o["error"] or "404" in o["error"]


def test_chaos_drill_diverts_every_call_to_the_fallback(
    env: dict[str, str], fake: FakeServer, tmp_path: Path
) -> None:
    # Given a drill disabling the small tier's primary fleet-wide
    drill = run(env, "chaos", "disable", "claude-haiku-5-5", "--for", "10m", "--reason", "drill")
    assert drill.returncode == 0, drill.stderr
    # When a job runs
    report = _submit(env, _sample(tmp_path), "drilled")
    stats = fake.stats()["by_model"]
    tiers = {t["tier"]: t for t in report["tiers"]}  # type: ignore[attr-defined]
    # Then the primary was never called and the fallback carried all its traffic
    assert "claude-haiku-5-5" not in stats
    assert stats["claude-haiku-4-5"]["calls"] == tiers["small"]["entered"] > 0
    assert report["status"] == "done"
    assert report["items_failed"] == 0
    # And once cleared, the primary takes the traffic again
    assert "cleared 1 drill" in run(env, "chaos", "clear").stdout
    _submit(env, _sample(tmp_path), "after-drill")
    assert fake.stats()["by_model"]["claude-haiku-5-5"]["calls"] > 0
    listed = run(env, "chaos", "list").stdout
    assert "anthropic:claude-haiku-5-5" in listed


def test_chaos_rejects_a_bad_duration(env: dict[str, str]) -> None:
    bad = run(env, "chaos", "disable", "claude-haiku-5-5", "--for", "soon")
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr

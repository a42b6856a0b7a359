"""The fleet rate limiter is wired into model calls: a job cannot outpace its limit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import PIPELINE, TICKETS, run

pytestmark = pytest.mark.e2e


def test_calls_are_paced_by_the_configured_limit(
    env: dict[str, str], fake: FakeServer, tmp_path: Path
) -> None:
    # Given 12 tickets no rule matches, and 120 requests/min (2/s) on the small model
    rows = [json.loads(line) for line in TICKETS.read_text().splitlines()[:300]]
    hard = [r for r in rows if len(r["text"]) > 120][:12]
    path = tmp_path / "hard.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hard))
    limits = {"anthropic:claude-haiku-5-5": {"requests_per_min": 120, "burst_s": 1}}
    env = env | {"CASCADE_RATE_LIMITS": json.dumps(limits)}
    # When they run
    started = time.monotonic()
    done = run(env, "submit", str(path), "--pipeline", str(PIPELINE), "--wait")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # Then the small model got its 12 calls no faster than 2 per second (after a burst of 2)
    assert fake.stats()["by_model"]["claude-haiku-5-5"]["calls"] == 12
    assert elapsed >= (12 - 2) / 2

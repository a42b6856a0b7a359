"""End to end: the `cascade` CLI in a subprocess, embedded runtime, fake Messages API."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import PIPELINE, SECRET, TICKETS, run
from workers.pricing import PriceTable

pytestmark = pytest.mark.e2e


def test_submit_wait_report_matches_fake_server_and_prices(
    env: dict[str, str], fake: FakeServer, tmp_path: Path
) -> None:
    # Given the bundled example (300 good tickets, 3 bad lines)
    # When it is submitted and waited for
    done = run(
        env, "submit", str(TICKETS), "--pipeline", str(PIPELINE), "--wait", "--job-name", "e2e"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(run(env, "report", "--job", "e2e", "--format", "json").stdout)
    stats = fake.stats()["by_model"]
    # Then the job is done with every good line settled and every bad line counted
    assert report["status"] == "done"
    assert report["items_total"] == 300
    assert report["items_done"] == 300
    assert report["lines_rejected"] == 3
    # And its calls and tokens are exactly what the fake server saw
    assert report["model_calls"] == sum(s["calls"] for s in stats.values())
    assert report["input_tokens"] == sum(s["input_tokens"] for s in stats.values())
    assert report["output_tokens"] == sum(s["output_tokens"] for s in stats.values())
    by_tier = {t["tier"]: t for t in report["tiers"]}
    assert by_tier["small"]["calls"] == stats["claude-haiku-5-5"]["calls"]
    assert by_tier["large"]["calls"] == stats["claude-sonnet-5-5"]["calls"]
    # And the cost is what the pricing table says those tokens cost, to the nano-dollar
    # (every prompt here is short, so the per-token rates are linear in the totals;
    # the shared prefix is cached, written for 5 minutes and read after)
    prices = PriceTable.load()
    expected = sum(
        (
            prices.price(m).input * s["input_tokens"]
            + prices.price(m).output * s["output_tokens"]
            + prices.price(m).cache_write_5m * s["cache_write_tokens"]
            + prices.price(m).cache_read * s["cache_read_tokens"]
        )
        / Decimal(10**6)
        for m, s in stats.items()
    )
    assert Decimal(report["cost_usd"]) == expected
    assert Decimal(report["baseline_cost_usd"]) > Decimal(report["cost_usd"])
    assert 0 < report["savings_pct"] < 100
    # And the funnel adds up
    assert by_tier["rules"]["entered"] == 300
    assert by_tier["small"]["entered"] == by_tier["rules"]["escalated"]
    assert by_tier["large"]["entered"] == by_tier["small"]["escalated"]
    assert sum(t["accepted"] for t in report["tiers"]) == 300

    # The outcomes export: one line per item, in both formats
    jsonl = run(env, "outcomes", "--job", "e2e", "--format", "jsonl").stdout.splitlines()
    assert len(jsonl) == 300
    first = json.loads(jsonl[0])
    assert set(first) >= {
        "id",
        "label",
        "tier",
        "confidence",
        "cost_usd",
        "latency_ms",
        "status",
        "metadata",
    }
    assert "channel" in first["metadata"]
    rows = list(
        csv.DictReader(io.StringIO(run(env, "outcomes", "--job", "1", "--format", "csv").stdout))
    )
    assert len(rows) == 300

    # The key never appears in any output or in the database
    status = run(env, "status", "e2e")
    assert "done" in status.stdout
    everything = done.stdout + done.stderr + status.stdout + status.stderr
    assert SECRET not in everything
    assert SECRET.encode() not in (tmp_path / "cascade.db").read_bytes()
    for wal in tmp_path.glob("cascade.db-*"):
        assert SECRET.encode() not in wal.read_bytes()


def test_resubmit_same_file_into_same_job_adds_nothing(env: dict[str, str]) -> None:
    args = ("submit", str(TICKETS), "--pipeline", str(PIPELINE), "--wait", "--job-name", "twice")
    assert run(env, *args).returncode == 0
    again = run(env, *args)
    assert again.returncode == 0, again.stderr
    assert "0 new items, 300 already in the job, 3 lines rejected" in again.stdout
    report = json.loads(run(env, "report", "--job", "twice", "--format", "json").stdout)
    assert report["items_total"] == 300
    assert report["lines_rejected"] == 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # an unknown key and an out-of-range threshold: both reported with their paths
        (
            'name = "x"\nlabels = ["a", "b"]\ninstructions = "i"\nbogus = 1\n'
            '[[tiers]]\nname = "m"\nkind = "claude"\nmodel = "claude-haiku-5-5"\n'
            "[tiers.accept]\nmin_confidence = 2\n",
            ["bogus: unknown key", "tiers[0].accept.min_confidence"],
        ),
        # not TOML at all
        ("name = ", ["not valid TOML"]),
    ],
)
def test_invalid_pipeline_stops_with_one_message_and_writes_nothing(
    env: dict[str, str], tmp_path: Path, content: str, expected: list[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(content)
    result = run(env, "submit", str(TICKETS), "--pipeline", str(bad))
    assert result.returncode == 2
    for text in expected:
        assert text in result.stderr
    assert not (tmp_path / "cascade.db").exists()


def test_unreadable_input_stops_with_a_clear_message(env: dict[str, str], tmp_path: Path) -> None:
    result = run(env, "submit", str(tmp_path / "missing.jsonl"), "--pipeline", str(PIPELINE))
    assert result.returncode == 2
    assert "missing.jsonl" in result.stderr
    report = run(env, "jobs")
    assert "missing" not in report.stdout


def test_unknown_job_says_how_to_find_one(env: dict[str, str]) -> None:
    result = run(env, "status", "nope")
    assert result.returncode == 2
    assert "cascade jobs" in result.stderr


def test_migrate_then_worker_needs_a_broker(env: dict[str, str], tmp_path: Path) -> None:
    migrated = run(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "database at revision" in migrated.stdout
    assert (tmp_path / "cascade.db").exists()
    worker = run(env, "worker")
    assert worker.returncode == 2
    assert "CASCADE_BROKER_URL=redis://" in worker.stderr

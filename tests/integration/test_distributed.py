"""The distributed runtime for real: Postgres, a Redis broker, a prefork Celery worker
in a subprocess, and the fake Messages API on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from cascade.fakeapi import FakeServer
from cascade.fakeapi.brain import classify
from migrations.runner import upgrade
from tasks.queues import queue_keys
from tests.services import require_service, service_redis_url
from workers.pipeline import RulesTier, load_pipeline
from workers.rules import CompiledRules

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PIPELINE = ROOT / "examples" / "support_triage.toml"
REDIS_DB = 7
REDIS_URL = service_redis_url(REDIS_DB)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def broker() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    require_service("redis", lambda: client.ping())
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=5, jitter_ms=5, seed=3) as server:
        yield server


def _env(pg_url: str, broker: str, fake_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
    env |= {
        "CASCADE_DATABASE_URL": pg_url,
        "CASCADE_BROKER_URL": broker,
        "ANTHROPIC_BASE_URL": fake_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-key-never-logged-0123456789",
        "CASCADE_LOG_FORMAT": "json",
    }
    return env


@pytest.fixture
def worker_env(pg_url: str, broker: str, fake: FakeServer) -> Iterator[dict[str, str]]:
    upgrade(pg_url)
    env = _env(pg_url, broker, fake.start())
    queues = "tier.rules,tier.small,tier.large,cascade.fallback"
    proc = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "tasks.app",
            "worker",
            "-Q",
            queues,
            "-c",
            "2",
            "-n",
            "itest@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield env
    finally:
        proc.terminate()
        try:
            logs, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            logs, _ = proc.communicate()
        env["_WORKER_LOGS"] = logs


def _expected(tickets: Path) -> dict[str, tuple[str, str]]:
    """item id -> (tier, label) as the cascade must decide them with the fake models."""
    pipe = load_pipeline(PIPELINE)
    rules_tier = pipe.tiers[0]
    assert isinstance(rules_tier, RulesTier)
    rules = CompiledRules(rules_tier)
    small_min = pipe.tiers[1].accept.min_confidence
    out = {}
    for line in tickets.read_text().splitlines():
        row = json.loads(line)
        hit = rules.match(row["text"])
        if hit:
            out[row["id"]] = ("rules", hit.label)
            continue
        verdict = classify("claude-haiku-5-5", row["text"], pipe.labels)
        from workers.answers import is_hedged

        if verdict.confidence >= small_min and not is_hedged(verdict.reason):
            out[row["id"]] = ("small", verdict.label)
        else:
            out[row["id"]] = (
                "large",
                classify("claude-sonnet-5-5", row["text"], pipe.labels).label,
            )
    return out


def _sample(tmp_path: Path, n: int) -> Path:
    lines = [
        line
        for line in (ROOT / "examples" / "tickets.jsonl").read_text().splitlines()
        if line.startswith("{") and '"text": ""' not in line
    ]
    seen: set[str] = set()
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["id"] not in seen:
            seen.add(row["id"])
            keep.append(line)
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(keep[:n]) + "\n")
    return path


def _drain(url: str, timeout: float = 30) -> None:
    """Wait until the worker has taken and acknowledged every message (queues and unacked empty)."""
    client = redis.Redis.from_url(url)
    queues = ("tier.rules", "tier.small", "tier.large", "cascade.fallback")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not any(client.llen(k) for q in queues for k in queue_keys(q)) and not client.hlen(
                "unacked"
            ):
                return
            time.sleep(0.1)
        raise AssertionError("the worker did not drain its queues in time")
    finally:
        client.close()


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "cascade"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_three_tier_job_on_postgres_and_redis(
    worker_env: dict[str, str], pg_url: str, fake: FakeServer, tmp_path: Path
) -> None:
    # Given 120 tickets and the decisions the fake models imply for each
    tickets = _sample(tmp_path, 120)
    expected = _expected(tickets)
    # When they are submitted to the distributed runtime and waited for
    done = _cli(
        worker_env,
        "submit",
        str(tickets),
        "--pipeline",
        str(PIPELINE),
        "--wait",
        "--job-name",
        "itest",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Then every item is settled at the tier and with the label the cascade implies
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT ri.item_id, ri.tier, ri.label, ri.status FROM report_items ri "
                "JOIN jobs j ON j.id = ri.job_id WHERE j.name = 'itest'"
            )
        ).all()
        got = {r.item_id: (r.tier, r.label) for r in rows}
        assert {r.status for r in rows} == {"done"}
        assert got == expected
        # And the ledger agrees with what the fake server saw: one call per model visit
        stats = fake.stats()["by_model"]
        calls = dict(
            conn.execute(
                text(
                    "SELECT model, count(*) FROM attempts"
                    " WHERE role NOT IN ('rules', 'reuse') GROUP BY model"
                )
            ).all()
        )
        assert calls == {m: s["calls"] for m, s in stats.items()}
        tokens = conn.execute(
            text("SELECT sum(input_tokens), sum(output_tokens) FROM attempts")
        ).one()
        assert tokens[0] == sum(s["input_tokens"] for s in stats.values())
        assert tokens[1] == sum(s["output_tokens"] for s in stats.values())
        assert conn.execute(text("SELECT status FROM jobs WHERE name='itest'")).scalar() == "done"
    engine.dispose()
    tiers = {t for t, _ in expected.values()}
    assert tiers == {"rules", "small", "large"}, "the sample must exercise all three tiers"


def test_resubmit_adds_nothing_and_redelivery_does_no_double_work(
    worker_env: dict[str, str], pg_url: str, fake: FakeServer, tmp_path: Path
) -> None:
    tickets = _sample(tmp_path, 40)
    first = _cli(
        worker_env,
        "submit",
        str(tickets),
        "--pipeline",
        str(PIPELINE),
        "--wait",
        "--job-name",
        "again",
    )
    assert first.returncode == 0, first.stderr
    calls_before = fake.stats()["requests"]
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        attempts_before = conn.execute(text("SELECT count(*) FROM attempts")).scalar()
        ids = [r[0] for r in conn.execute(text("SELECT id FROM items ORDER BY id")).all()]
    # When the same file is submitted into the same job again
    second = _cli(
        worker_env,
        "submit",
        str(tickets),
        "--pipeline",
        str(PIPELINE),
        "--wait",
        "--job-name",
        "again",
    )
    assert second.returncode == 0, second.stderr
    assert "0 new items, 40 already in the job" in second.stdout
    # And the first tier's message is delivered again for items already settled
    from celery import Celery

    publisher = Celery(broker=worker_env["CASCADE_BROKER_URL"])
    with engine.connect() as conn:
        job_id = conn.execute(text("SELECT id FROM jobs WHERE name='again'")).scalar()
    for tier_index, queue in ((0, "tier.rules"), (1, "tier.small"), (2, "tier.large")):
        publisher.send_task("cascade.run_tier", args=(job_id, tier_index, ids), queue=queue)
    publisher.send_task("cascade.run_fallback", args=(job_id, 1, ids), queue="cascade.fallback")
    _drain(worker_env["CASCADE_BROKER_URL"])
    # Then no item, attempt or model call was added
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 40
        assert conn.execute(text("SELECT count(*) FROM attempts")).scalar() == attempts_before
    assert fake.stats()["requests"] == calls_before
    engine.dispose()

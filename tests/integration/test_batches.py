"""Batch-mode tiers for real: Postgres, a Redis broker, prefork Celery workers in a
subprocess, and the fake Messages API's Message Batches endpoints on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from cascade.fakeapi import FakeServer
from cascade.fakeapi.batches import BATCHES_KEY, BatchConfig
from cascade.fakeapi.brain import classify
from migrations.runner import upgrade
from tests.services import require_service, service_redis_url
from workers.answers import is_hedged
from workers.pipeline import RulesTier, load_pipeline
from workers.pricing import PriceTable
from workers.providers.base import Usage
from workers.rules import CompiledRules

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODERATION = ROOT / "examples" / "moderation.toml"
REDIS_URL = service_redis_url(13)
QUEUES = "tier.rules,tier.small,tier.large,cascade.fallback"

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def batch_pipeline(tmp_path: Path, poll_seconds: float = 0.5) -> Path:
    """examples/moderation.toml with both model tiers in batch mode and quick polls."""
    src = MODERATION.read_text()
    out = src.replace(
        'kind = "claude"\n', f'kind = "claude"\nmode = "batch"\npoll_seconds = {poll_seconds}\n'
    )
    assert out.count('mode = "batch"') == 2
    path = tmp_path / "moderation-batch.toml"
    path.write_text(out)
    policy = MODERATION.parent / "moderation_policy.md"  # its instructions_file, beside it
    (tmp_path / policy.name).write_text(policy.read_text())
    return path


def sample_posts(tmp_path: Path, n: int) -> Path:
    rows, seen = [], set()
    for line in (ROOT / "examples" / "posts.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("text") and row.get("id") not in seen:
            seen.add(row["id"])
            rows.append(line)
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(rows[:n]) + "\n")
    return path


def expected_tiers(posts: list[dict[str, Any]]) -> dict[str, str]:
    """item id -> the tier the moderation cascade settles it at with the fake models."""
    pipe = load_pipeline(MODERATION)
    rules_tier = pipe.tiers[0]
    assert isinstance(rules_tier, RulesTier)
    rules = CompiledRules(rules_tier)
    small = pipe.tiers[1]
    out = {}
    for row in posts:
        if rules.match(row["text"]):
            out[str(row["id"])] = "rules"
            continue
        v = classify("claude-haiku-5-5", row["text"], pipe.labels)
        ok = v.confidence >= small.accept.min_confidence and not is_hedged(v.reason)
        out[str(row["id"])] = "small" if ok else "large"
    return out


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
    with FakeServer(latency_ms=2, jitter_ms=2, seed=5) as server:
        yield server


def set_batches(fake: FakeServer, **config: Any) -> None:
    fake.app[BATCHES_KEY].config = BatchConfig.from_mapping(config)


def fake_batch_count(fake: FakeServer) -> int:
    return len(fake.app[BATCHES_KEY].batches)


class Workers:
    """A prefork Celery worker in its own process group, so it can be killed outright."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.logs = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(str(BIN / "celery"), "-A", "tasks.app", "worker", "-Q", QUEUES, "-c", "2"),
                *("-n", f"batches-{time.monotonic_ns()}@%h", "--without-mingle"),
                "--without-gossip",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its children: nothing gets to clean up."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=20)
        self.logs += out
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate()
        self.logs += out
        self.proc = None


def cli_env(pg_url: str, broker: str, fake_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
    return env | {
        "CASCADE_DATABASE_URL": pg_url,
        "CASCADE_BROKER_URL": broker,
        "ANTHROPIC_BASE_URL": fake_url,
        "ANTHROPIC_API_KEY": "sk-ant-test-key-never-logged-0123456789",
        "CASCADE_LOG_FORMAT": "json",
    }


@pytest.fixture
def workers(pg_url: str, broker: str, fake: FakeServer) -> Iterator[Workers]:
    upgrade(pg_url)
    w = Workers(cli_env(pg_url, broker, fake.start()))
    w.start()
    try:
        yield w
    finally:
        w.stop()


def cli(env: dict[str, str], *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "cascade"), *args],
        cwd=ROOT,
        env=env | {"COLUMNS": "200"},  # no wrapped lines to assert on
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(check: Any, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def check_batch_prices(engine: Engine) -> tuple[int, int]:
    """Every batch call costs exactly the batch price of its tokens; returns (cost, realtime)."""
    prices = PriceTable.load(None)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT model, input_tokens, output_tokens, cache_write_tokens, "
                "cache_read_tokens, cost_nanos FROM attempts WHERE is_batch AND outcome = 'ok'"
            )
        ).all()
    assert rows
    realtime = 0
    for model, i, o, w, r, cost in rows:
        # batch tiers write the cached prefix for an hour
        usage = Usage(i, o, cache_write_tokens=w, cache_read_tokens=r, cache_write_1h_tokens=w)
        assert cost == prices.cost_nanos(model, usage, batch=True)
        realtime += prices.cost_nanos(model, usage)
    total = sum(r.cost_nanos for r in rows)
    assert abs(2 * total - realtime) <= len(rows)  # half price, up to per-call rounding
    return total, realtime


def test_two_batch_tiers_escalate_like_realtime_at_half_price(
    workers: Workers, pg_url: str, fake: FakeServer, tmp_path: Path
) -> None:
    # Given 60 posts, a moderation pipeline whose model tiers run as Message Batches
    set_batches(fake, delay_s=0.5)
    posts = sample_posts(tmp_path, 60)
    expected = expected_tiers([json.loads(x) for x in posts.read_text().splitlines()])
    # When they are submitted and waited for
    done = cli(
        workers.env, "submit", str(posts), "--pipeline", str(batch_pipeline(tmp_path)), "--wait"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Then every item settled at the tier the realtime cascade would have chosen
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT item_key, final_tier FROM items")).all())
        assert {s for (s,) in conn.execute(text("SELECT DISTINCT status FROM items"))} == {"done"}
        # And every model call went through a batch, one batch row per tier visit
        assert not conn.execute(
            text(
                "SELECT count(*) FROM attempts"
                " WHERE role NOT IN ('rules', 'reuse') AND NOT is_batch"
            )
        ).scalar()
        tiers = dict(
            conn.execute(text("SELECT tier, count(*) FROM message_batches GROUP BY tier")).all()
        )
        assert set(tiers) == {"small", "large"}
        assert not conn.execute(
            text("SELECT count(*) FROM message_batches WHERE status <> 'collected'")
        ).scalar()
    assert got == expected
    assert {"rules", "small", "large"} <= set(got.values())
    assert fake_batch_count(fake) == sum(tiers.values())
    # And the calls cost half the realtime price of the same tokens
    check_batch_prices(engine)
    engine.dispose()


def test_errored_and_expired_requests_take_the_fallback_path(
    workers: Workers, pg_url: str, fake: FakeServer, tmp_path: Path
) -> None:
    # Given batches in which some requests come back errored and some expired
    set_batches(fake, delay_s=0.2, errored_pattern=r"(?i)\bthe\b", expired_pattern=r"(?i)\band\b")
    posts = sample_posts(tmp_path, 40)
    done = cli(
        workers.env, "submit", str(posts), "--pipeline", str(batch_pipeline(tmp_path)), "--wait"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        # Then none is lost: every item is done, served by the realtime fallback models
        assert conn.execute(text("SELECT count(*) FROM items WHERE status <> 'done'")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 40
        failed = conn.execute(
            text(
                "SELECT count(*) FROM attempts WHERE is_batch AND outcome = 'transient' "
                "AND decision = 'fallback'"
            )
        ).scalar()
        assert failed
        expired = conn.execute(
            text("SELECT count(*) FROM attempts WHERE is_batch AND error = 'expired'")
        ).scalar()
        assert expired
        served = conn.execute(
            text("SELECT count(*) FROM attempts WHERE role = 'fallback' AND decision = 'accept'")
        ).scalar()
        assert served
        counts = conn.execute(text("SELECT counts FROM message_batches")).scalars().all()
    assert sum(c.get("errored", 0) for c in counts) and sum(c.get("expired", 0) for c in counts)
    engine.dispose()


def test_resume_after_every_worker_was_killed_between_submit_and_collect(
    workers: Workers, pg_url: str, fake: FakeServer, tmp_path: Path
) -> None:
    # Given batches that take a few seconds, and a job submitted without waiting
    set_batches(fake, delay_s=4)
    posts = sample_posts(tmp_path, 50)
    sent = cli(workers.env, "submit", str(posts), "--pipeline", str(batch_pipeline(tmp_path, 1)))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    engine = create_engine(pg_url)
    wait_for(
        lambda: scalar(engine, "SELECT count(*) FROM message_batches WHERE status='in_progress'"),
        what="a submitted batch",
    )
    # When every worker is killed while its batches are still running
    workers.kill()
    submitted = fake_batch_count(fake)
    time.sleep(4.5)
    # And the workers come back, and the beat's recovery task runs
    workers.start()
    from celery import Celery

    publisher = Celery(broker=workers.env["CASCADE_BROKER_URL"])
    publisher.send_task(
        "cascade.poll_open_batches", kwargs={"overdue_s": 0}, queue="cascade.fallback"
    )
    # Then the stored batch ids are polled and collected, and the job finishes
    wait_for(
        lambda: scalar(engine, "SELECT status FROM jobs") == "done", timeout=120, what="job done"
    )
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items WHERE status='done'")).scalar() == 50
        rows = conn.execute(text("SELECT batch_id, status FROM message_batches")).all()
        per_item = conn.execute(
            text(
                "SELECT max(c) FROM (SELECT count(*) c FROM attempts WHERE is_batch "
                "GROUP BY item_id, tier_index) t"
            )
        ).scalar()
    # And nothing was submitted twice, nothing lost
    assert per_item == 1
    assert {s for _, s in rows} == {"collected"}
    assert len({b for b, _ in rows}) == len(rows) == fake_batch_count(fake)
    assert fake_batch_count(fake) >= submitted
    engine.dispose()


def review_pipeline(tmp_path: Path) -> Path:
    """Rules that guess "spam" unsure, then a last tier in batch mode; the pipeline sends
    disagreements, refusals and unsure last-tier answers to a person."""
    path = tmp_path / "review-batch.toml"
    path.write_text(
        """
name = "review-batch"
labels = ["safe", "spam", "harassment", "hate", "self_harm", "sexual", "violence"]
instructions = "Moderate the post."
review_on_disagreement = true

[[tiers]]
name = "rules"
kind = "rules"
[tiers.accept]
min_confidence = 0.9
[[tiers.rules]]
pattern = '(?i)\\bstupid\\b'
label = "spam"
confidence = 0.5

[[tiers]]
name = "large"
kind = "claude"
model = "claude-sonnet-5-5"
mode = "batch"
poll_seconds = 0.5
on_refusal = "review"
[tiers.accept]
min_confidence = 0.0
review_below = 0.9
"""
    )
    return path


def test_a_batch_last_tier_sends_disagreements_refusals_and_unsure_answers_to_review(
    workers: Workers, pg_url: str, fake: FakeServer, tmp_path: Path
) -> None:
    # Given posts the rules call "spam" (unsure, so they escalate with that answer) that
    # the large model calls "harassment", posts it refuses, and posts with no rule match
    set_batches(fake, delay_s=0.2)
    fake.set_faults("claude-sonnet-5-5", refuse_pattern="(?i)password")
    labels = ["safe", "spam", "harassment", "hate", "self_harm", "sexual", "violence"]
    sonnet = "claude-sonnet-5-5"
    said = [f"you are a stupid person number {i}" for i in range(40)]
    # sure answers only: an unsure one would go to review whether or not tiers disagree
    sure = [t for t in said if classify(sonnet, t, labels).confidence >= 0.9][:4]
    assert len(sure) == 4
    assert {classify(sonnet, t, labels).label for t in sure} == {"harassment"}
    texts = {
        **{f"d{i}": t for i, t in enumerate(sure)},
        **{f"r{i}": f"what is my password again, try {i}" for i in range(3)},
        **{f"n{i}": f"a calm post about the weather, day {i}" for i in range(12)},
    }
    unsure = {
        k for k in texts if k[0] == "n" and classify(sonnet, texts[k], labels).confidence < 0.9
    }
    assert unsure and len(unsure) < 12  # both kinds of plain post are present
    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in texts.items()))
    # When they are submitted to the pipeline and waited for
    done = cli(workers.env, "submit", str(posts), "--pipeline", str(review_pipeline(tmp_path)),
               "--wait")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        got = {
            r.item_key: r for r in conn.execute(text("SELECT item_key, status, label FROM items"))
        }
        batch_calls = conn.execute(text("SELECT count(*) FROM attempts WHERE is_batch")).scalar()
    engine.dispose()
    assert batch_calls == len(texts)  # every item reached the batch tier
    # Then, as on the realtime path, every contradicted, refused or unsure item waits for
    # a person, and only the rest is done by the machine
    review = {k for k in texts if k[0] in "dr"} | unsure
    assert {k for k, r in got.items() if r.status == "review"} == review
    assert {k for k, r in got.items() if r.status == "done"} == set(texts) - review

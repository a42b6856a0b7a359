"""A batch tier in one process, on both databases, against the fake Message Batches
endpoints on 127.0.0.1: submit, poll while it runs, collect once it ends, stale polls,
a batch the API refuses, and the recovery of lost polls and stalled submits.

Celery is not involved: the poll a submit schedules is recorded instead of sent
(``poll_batch.apply_async`` replaced), and follow-ups are collected (``send`` replaced)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from cascade.fakeapi import FakeServer
from cascade.fakeapi.batches import BATCHES_KEY, BatchConfig
from common.lifecycle import BatchStatus, JobStatus, Phase, Status
from models import batches_repo, repo
from models.db import make_sessionmaker
from models.repo import ATTEMPTS, ITEMS, JOBS, NewItem
from models.tables_batches import MessageBatch
from tasks import batches
from tasks.flow import process
from tasks.messages import Message
from tasks.runtime import Runtime
from tasks.settle import claim
from tests.integration.conftest import collecting_runtime
from workers.batch import PollPlan
from workers.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = load_pipeline(ROOT / "examples" / "support_triage.toml")
SMALL = 1
POLL_S = 0.5
TEXTS = [
    "I was charged twice for my subscription this month",
    "The app crashes every time I open the settings page",
    "Please change the email address on my account",
]
KEY = "sk-ant-test-key-never-logged-0123456789"


def batch_pipeline() -> dict[str, Any]:
    """support-triage with its small tier in batch mode."""
    pipeline = PIPELINE.model_dump(mode="json")
    pipeline["tiers"][SMALL] |= {"mode": "batch", "poll_seconds": POLL_S}
    return pipeline


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=1, jitter_ms=1, seed=3) as server:
        yield server


class Polls:
    """What ``poll_batch.apply_async`` was asked to schedule."""

    def __init__(self) -> None:
        self.scheduled: list[dict[str, Any]] = []

    def __call__(self, args: tuple[int, str], **kw: Any) -> None:
        self.scheduled.append({"args": tuple(args), **kw})


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> Polls:
    recorder = Polls()
    monkeypatch.setattr(batches.poll_batch, "apply_async", recorder)
    return recorder


def make_runtime(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeServer,
    *,
    key: str | None = KEY,
    **settings: Any,
) -> tuple[Runtime, list[Message]]:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.start())
    if key is None:
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    else:
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    return collecting_runtime(engine, monkeypatch, **settings)


@pytest.fixture
def runtime(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, fake: FakeServer
) -> Iterator[tuple[Runtime, list[Message]]]:
    rt, sent = make_runtime(engine, monkeypatch, fake)
    yield rt, sent
    rt.close()


def make_job(engine: Engine, texts: list[str]) -> tuple[int, list[int]]:
    """A running job whose items wait at the (batch) small tier."""
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "batches", batch_pipeline())
        sub = repo.start_submission(s, job_id, "x.jsonl")
        ids = repo.add_items(s, job_id, sub, [NewItem(i, f"k{i}", t, {}) for i, t in
                                                enumerate(texts)]).added  # fmt: skip
        s.execute(ITEMS.update().where(ITEMS.c.id.in_(ids)).values(tier_index=SMALL))
        repo.job_submitted(s, job_id)
    return job_id, ids


def set_batches(fake: FakeServer, **config: Any) -> None:
    fake.app[BATCHES_KEY].config = BatchConfig.from_mapping(config)


def batch_rows(engine: Engine, job_id: int) -> list[MessageBatch]:
    with make_sessionmaker(engine)() as s:
        return batches_repo.job_batches(s, job_id)


def items(engine: Engine, ids: list[int]) -> dict[int, Any]:
    with engine.connect() as c:
        return {r.id: r for r in c.execute(select(ITEMS).where(ITEMS.c.id.in_(ids)))}


def submit(rt: Runtime, engine: Engine, texts: list[str]) -> tuple[int, list[int], MessageBatch]:
    job_id, ids = make_job(engine, texts)
    assert process(rt, Message(Phase.TIER, job_id, SMALL, ids)) == []
    [row] = batch_rows(engine, job_id)
    return job_id, ids, row


# -- submit, poll, collect -------------------------------------------------------------------
def test_a_submitted_batch_is_stored_and_its_first_poll_scheduled(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]], polls: Polls
) -> None:
    rt, _ = runtime
    set_batches(fake, delay_s=3600)
    _, ids, row = submit(rt, engine, TEXTS)

    assert row.status == BatchStatus.IN_PROGRESS
    assert row.batch_id is not None and row.batch_id in fake.app[BATCHES_KEY].batches
    assert (row.tier, row.model, row.request_count) == ("small", "claude-haiku-5-5", 3)
    assert sorted(pk for pk, _ in row.items) == sorted(ids)
    assert polls.scheduled == [
        {"args": (row.id, row.poll_token), "countdown": POLL_S, "queue": "tier.small"}
    ]
    # the items stay leased while the API works: a copy of the message submits nothing
    assert {r.status for r in items(engine, ids).values()} == {Status.RUNNING}
    assert process(rt, Message(Phase.TIER, row.job_id, SMALL, ids)) == []
    assert len(batch_rows(engine, row.job_id)) == 1


def test_a_running_batch_is_polled_again_later_each_time_later(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]], polls: Polls
) -> None:
    rt, _ = runtime
    set_batches(fake, delay_s=3600)
    _, _, row = submit(rt, engine, TEXTS[:1])
    assert row.poll_token is not None
    plan = PollPlan(POLL_S)

    assert batches.poll_once(rt, row.id, row.poll_token) == BatchStatus.IN_PROGRESS
    assert batches.poll_once(rt, row.id, row.poll_token) == BatchStatus.IN_PROGRESS

    assert [p["countdown"] for p in polls.scheduled] == [plan.delay(0), plan.delay(1),
                                                         plan.delay(2)]  # fmt: skip
    assert [p["args"] for p in polls.scheduled] == [(row.id, row.poll_token)] * 3
    [after] = batch_rows(engine, row.job_id)
    assert (after.status, after.poll_count) == (BatchStatus.IN_PROGRESS, 2)
    assert after.counts is not None and after.counts["processing"] == 1


def test_an_ended_batch_is_collected_and_its_items_settled_at_batch_price(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]], polls: Polls
) -> None:
    rt, sent = runtime
    set_batches(fake, delay_s=0)
    job_id, ids, row = submit(rt, engine, TEXTS)
    assert row.poll_token is not None

    assert batches.poll_once(rt, row.id, row.poll_token) == BatchStatus.COLLECTED

    [after] = batch_rows(engine, job_id)
    assert after.status == BatchStatus.COLLECTED
    rows = items(engine, ids)
    # every item left the small tier: accepted there, or on to the large tier
    assert all(
        r.status == Status.DONE or (r.status == Status.PENDING and r.tier_index == 2)
        for r in rows.values()
    )
    escalated = sorted(pk for pk, r in rows.items() if r.status == Status.PENDING)
    assert sorted(i for m in sent for i in m.ids) == escalated
    assert {(m.phase, m.tier_index) for m in sent} <= {(Phase.TIER, 2)}
    with engine.connect() as c:
        calls = c.execute(
            select(ATTEMPTS.c.item_id, ATTEMPTS.c.is_batch, ATTEMPTS.c.outcome).where(
                ATTEMPTS.c.tier == "small"
            )
        ).all()
    assert sorted(c.item_id for c in calls) == sorted(ids)
    assert {(c.is_batch, c.outcome) for c in calls} == {(True, "ok")}
    # the poll chain ends: once collected, a late copy of the poll is stale
    assert batches.poll_once(rt, row.id, row.poll_token) == "stale"
    assert len(polls.scheduled) == 1  # only the submit's first poll


@pytest.mark.parametrize("which", ["unknown row", "other token"])
def test_a_poll_that_is_not_the_batches_current_one_is_stale(
    engine: Engine,
    fake: FakeServer,
    runtime: tuple[Runtime, list[Message]],
    polls: Polls,
    which: str,
) -> None:
    rt, _ = runtime
    set_batches(fake, delay_s=0)
    job_id, ids, row = submit(rt, engine, TEXTS[:1])
    row_id, token = (row.id + 1000, row.poll_token) if which == "unknown row" else (row.id, "x")
    assert batches.poll_once(rt, row_id, str(token)) == "stale"
    [after] = batch_rows(engine, job_id)
    assert (after.status, after.poll_count) == (BatchStatus.IN_PROGRESS, 0)
    assert items(engine, ids)[ids[0]].status == Status.RUNNING


def test_a_batch_the_api_refuses_sends_its_items_down_the_failure_path(
    engine: Engine,
    fake: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    polls: Polls,
) -> None:
    """No API key: the submit fails as a realtime call would (auth stops the job)."""
    rt, sent = make_runtime(engine, monkeypatch, fake, key=None)
    try:
        job_id, ids = make_job(engine, TEXTS[:2])
        assert process(rt, Message(Phase.TIER, job_id, SMALL, ids)) == []
    finally:
        rt.close()
    [row] = batch_rows(engine, job_id)
    assert row.status == BatchStatus.FAILED
    assert row.error == "auth: no API key: set ANTHROPIC_API_KEY (or run offline with --offline)"
    assert polls.scheduled == []
    assert {r.status for r in items(engine, ids).values()} == {Status.PAUSED}
    with engine.connect() as c:
        job = c.execute(select(JOBS).where(JOBS.c.id == job_id)).one()
    assert job.status == JobStatus.FAILED  # an auth failure: no later try can pass
    assert "no API key" in job.message
    assert sent == []


# -- recovery ----------------------------------------------------------------------------------
def test_an_overdue_poll_is_taken_over_and_the_old_chain_goes_stale(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]], polls: Polls
) -> None:
    rt, _ = runtime
    set_batches(fake, delay_s=3600)
    _, _, row = submit(rt, engine, TEXTS[:1])
    old = row.poll_token
    assert old is not None

    assert batches.recover_once(rt, overdue_s=3600) == 0  # not overdue yet
    assert batches.recover_once(rt, overdue_s=-3600) == 1  # its poll is an hour late

    new = polls.scheduled[-1]
    assert new["queue"] == "tier.small"
    assert new["args"][0] == row.id and new["args"][1] != old
    assert batches.poll_once(rt, row.id, old) == "stale"
    assert batches.poll_once(rt, row.id, new["args"][1]) == BatchStatus.IN_PROGRESS


def test_a_submit_that_never_stored_its_batch_id_is_abandoned_and_its_items_released(
    engine: Engine, runtime: tuple[Runtime, list[Message]], polls: Polls
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, TEXTS)
    msg = Message(Phase.TIER, job_id, SMALL, ids)
    got = claim(rt, msg, lease_s=3600)
    # the worker wrote the batch row, then died before the API answered
    with make_sessionmaker(engine).begin() as s:
        [row_id] = batches_repo.add_batches(
            s, job_id=job_id, tier_index=SMALL, tier="small", provider="anthropic",
            model="claude-haiku-5-5", mechanism="tool", token=got.token,
            groups=[[(c.pk, c.steps) for c in got.items]],
        )  # fmt: skip

    assert batches.recover_once(rt, stalled_s=3600) == 0  # a submit may take a while
    assert batches.recover_once(rt, stalled_s=-1) == 1

    [row] = batch_rows(engine, job_id)
    assert (row.id, row.status, row.error) == (
        row_id,
        BatchStatus.ABANDONED,
        "the submit never completed",
    )
    assert {(r.status, r.lease_token) for r in items(engine, ids).values()} == {
        (Status.PENDING, None)
    }
    assert [(m.phase, m.tier_index, sorted(m.ids)) for m in sent] == [
        (Phase.TIER, SMALL, sorted(ids))
    ]
    assert polls.scheduled == []
    assert batches.recover_once(rt, stalled_s=-1) == 0  # once


def test_a_batch_tier_submits_when_realtime_calls_are_rate_limited(
    engine: Engine,
    fake: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    polls: Polls,
) -> None:
    """Rate limits pace realtime calls; the Message Batches API is still reachable."""
    limits = {"anthropic:claude-haiku-5-5": {"requests_per_min": 600.0}}
    rt, _ = make_runtime(engine, monkeypatch, fake, rate_limits=limits)
    set_batches(fake, delay_s=0)
    try:
        _, ids, row = submit(rt, engine, TEXTS[:2])
        assert row.status == BatchStatus.IN_PROGRESS
        assert row.poll_token is not None
        assert batches.poll_once(rt, row.id, row.poll_token) == BatchStatus.COLLECTED
    finally:
        rt.close()
    assert Status.RUNNING not in {r.status for r in items(engine, ids).values()}


def test_a_batch_tier_on_a_provider_without_batches_hands_its_items_to_the_fallback_chain(
    engine: Engine, runtime: tuple[Runtime, list[Message]], polls: Polls
) -> None:
    rt, sent = runtime
    pipeline = batch_pipeline()
    pipeline["tiers"][SMALL]["provider"] = "bedrock"
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "bedrock-batches", pipeline)
        sub = repo.start_submission(s, job_id, "x.jsonl")
        ids = repo.add_items(s, job_id, sub, [NewItem(1, "k1", TEXTS[0], {})]).added
        s.execute(ITEMS.update().where(ITEMS.c.id.in_(ids)).values(tier_index=SMALL))
        repo.job_submitted(s, job_id)

    assert process(rt, Message(Phase.TIER, job_id, SMALL, ids)) == []

    [row] = batch_rows(engine, job_id)
    assert row.status == BatchStatus.FAILED
    assert row.error is not None and "not available on bedrock" in row.error
    item = items(engine, ids)[ids[0]]
    assert item.status == Status.FALLBACK
    assert "not available on bedrock" in item.error
    # the failure path is the realtime one: the fallback queue, published after the commit
    assert [(m.phase, m.tier_index, m.ids) for m in sent] == [(Phase.FALLBACK, SMALL, ids)]
    assert polls.scheduled == []

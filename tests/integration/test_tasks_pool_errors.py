"""The worker pool's and the doorbell's unhappy paths, in one process on both databases:
a bug in a visit sends the item on with the reason (once, never a lost item), the
budget holds items at admission without a call, a message whose items are taken
already admits nothing, and a broker that stays down leaves its items marked for the
very next sweep instead of the ten-minute idle rule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, select

from cascade.fakeapi import FakeServer
from common.lifecycle import JobStatus, Phase, Status
from models import repo
from models.db import make_sessionmaker
from models.repo import ATTEMPTS, ITEMS, JOBS, NewItem
from tasks import pool as pool_module
from tasks import publish as pub
from tasks.messages import Message
from tasks.pool import Admitted, pool_of
from tasks.runtime import Runtime
from tests.integration.conftest import collecting_runtime
from workers.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = load_pipeline(ROOT / "examples" / "support_triage.toml")
SMALL = 1
TEXTS = ["I was charged twice this month", "The app crashes when I open settings"]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=1, jitter_ms=1, seed=2) as server:
        yield server


@pytest.fixture
def runtime(
    engine: Engine, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runtime, list[Message]]]:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.start())
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged-0123456789")
    rt, sent = collecting_runtime(engine, monkeypatch, flush_ms=5)
    yield rt, sent
    rt.close()


def make_job(engine: Engine, *, status: str = Status.PENDING, budget: int | None = None
             ) -> tuple[int, list[int]]:  # fmt: skip
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "pool", PIPELINE.model_dump(mode="json"))
        sub = repo.start_submission(s, job_id, "x.jsonl")
        items = [NewItem(i, f"k{i}", t, {}) for i, t in enumerate(TEXTS)]
        ids = repo.add_items(s, job_id, sub, items).added
        s.execute(ITEMS.update().where(ITEMS.c.id.in_(ids)).values(tier_index=SMALL, status=status))
        repo.set_budget(s, job_id, budget)
        repo.job_submitted(s, job_id)
    return job_id, ids


def rows_when(engine: Engine, ids: list[int], done: Any, timeout: float = 20) -> dict[int, Any]:
    """The items' rows once ``done(row)`` holds for each (the pool settles off-thread)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as c:
            rows = {r.id: r for r in c.execute(select(ITEMS).where(ITEMS.c.id.in_(ids)))}
        if all(done(r) for r in rows.values()):
            return rows
        assert time.monotonic() < deadline, {r.id: r.status for r in rows.values()}
        time.sleep(0.05)


def served(fake: FakeServer) -> int:
    return sum(m["calls"] for m in fake.stats()["by_model"].values())


@pytest.mark.parametrize(
    ("phase", "start", "patched", "end"),
    [
        # a tier visit that breaks hands the item to its fallback chain ...
        (Phase.TIER, Status.PENDING, "serve", Status.FALLBACK),
        # ... and a fallback chain that breaks dead-letters it: no loop between the two
        (Phase.FALLBACK, Status.FALLBACK, "serve_fallback", Status.FAILED),
    ],
)
def test_a_bug_in_a_visit_sends_the_item_on_with_the_reason(
    engine: Engine,
    runtime: tuple[Runtime, list[Message]],
    monkeypatch: pytest.MonkeyPatch,
    phase: Phase,
    start: str,
    patched: str,
    end: str,
) -> None:
    rt, sent = runtime

    async def broken(*_: Any) -> Any:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(pool_module, patched, broken)
    job_id, ids = make_job(engine, status=start)
    with structlog.testing.capture_logs() as logs:
        assert pool_of(rt).admit(Message(phase, job_id, SMALL, ids)) == Admitted(2, [])
        rows = rows_when(engine, ids, lambda r: r.status == end)
        pool_of(rt).close(10)

    why = "internal error: ZeroDivisionError: division by zero"
    assert {r.error for r in rows.values()} == {why}
    crashed = [e for e in logs if e["event"] == "cascade.item.internal_error"]
    assert sorted(e["item"] for e in crashed) == sorted(ids)  # once per item
    assert {(e["log_level"], e["job_id"]) for e in crashed} == {("error", job_id)}
    if end == Status.FALLBACK:
        assert sorted(i for m in sent for i in m.ids) == sorted(ids)
        assert {(m.phase, m.tier_index) for m in sent} == {(Phase.FALLBACK, SMALL)}
    else:
        assert sent == []


def test_items_the_budget_cannot_pay_for_are_held_at_admission_without_a_call(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, budget=0)
    pool = pool_of(rt)

    assert pool.admit(Message(Phase.TIER, job_id, SMALL, ids)) == Admitted(2, [])

    rows = rows_when(engine, ids, lambda r: r.status == Status.PAUSED_BUDGET)
    assert all("budget reached before tier 'small'" in r.error for r in rows.values())
    with engine.connect() as c:
        job = c.execute(select(JOBS).where(JOBS.c.id == job_id)).one()
        attempts = c.execute(select(ATTEMPTS)).all()
    assert job.status == JobStatus.PAUSED
    assert (attempts, served(fake), sent) == ([], 0, [])
    pool.close(10)
    assert pool.busy() == 0


def test_a_message_whose_items_are_taken_admits_nothing(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(engine, status=Status.DONE)
    pool = pool_of(rt)
    assert pool.admit(Message(Phase.TIER, job_id, SMALL, ids)) == Admitted(0, [])
    assert (pool.busy(), pool.calls_on_wire(), served(fake)) == (0, 0, 0)
    assert pool_of(rt) is pool  # one pool per process


def test_what_the_broker_would_not_take_is_swept_at_the_next_pass(
    engine: Engine, runtime: tuple[Runtime, list[Message]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine)

    def down(rt: Runtime, msg: Message) -> None:
        raise ConnectionError("broker restarting")

    monkeypatch.setattr(pub, "send", down)
    slept: list[float] = []
    with structlog.testing.capture_logs() as logs:
        assert pub.publish(rt, [Message(Phase.TIER, job_id, SMALL, ids)], sleep=slept.append) == 2
    assert slept == list(pub.PUBLISH_DELAYS_S)
    failed = [e for e in logs if e["event"] == "cascade.publish.failed"]
    assert [(e["job_id"], e["items"]) for e in failed] == [(job_id, 2)]

    # The broker is back; items only just touched would wait the idle rule (600 s) ...
    monkeypatch.setattr(pub, "send", lambda rt, msg: sent.append(msg))
    # ... but these were marked: the very next sweep sends them again, ahead of the backlog
    assert pub.sweep_once(rt, 600, depths=None) == 2
    assert [(m.phase, m.tier_index, sorted(m.ids), m.urgent) for m in sent] == [
        (Phase.TIER, SMALL, sorted(ids), True)
    ]


def test_a_job_that_does_not_exist_is_named_in_the_error(
    runtime: tuple[Runtime, list[Message]],
) -> None:
    rt, _ = runtime
    with pytest.raises(LookupError, match="job 987654 does not exist"):
        rt.engine_for(987654)

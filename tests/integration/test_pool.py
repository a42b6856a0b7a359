"""The worker pool and the call journal, in one process, on both databases.

An item settles when its own call returns (not when its message's slowest does);
every call is a ledger row before it leaves; a visit cut off by a dead worker is
continued, its answer reused and its cut-off call kept as ``unknown``; a worker that
lost an item's lease sends nothing more for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from cascade.fakeapi.server import FakeServer
from common.lifecycle import Outcome, Phase, Status
from common.settings import Settings
from models import ledger, repo
from models.db import make_sessionmaker
from models.repo import ATTEMPTS, ITEMS, NewItem
from tasks import publish as pub
from tasks.messages import Message
from tasks.pool import BACK_AFTER_S, pool_of
from tasks.runtime import Runtime
from tasks.spool import Spool, spool_dir
from tests.integration.conftest import collecting_runtime
from workers.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = load_pipeline(ROOT / "examples" / "support_triage.toml")
SMALL = 1  # the pipeline's small-model tier
TEXTS = [
    "I was charged twice for my subscription this month",
    "The app crashes every time I open the settings page",
    "Where is my parcel? The tracking number shows nothing",
    "Please change the email address on my account",
    "Your support team was wonderful, thank you",
    "My invoice has the wrong company name on it",
]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=400, jitter_ms=380, seed=11) as server:
        yield server


@pytest.fixture
def runtime(
    engine: Engine, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runtime, list[Message]]]:
    """A worker process's runtime on the test database; follow-ups are collected, not sent."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.start())
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged-0123456789")
    rt, sent = collecting_runtime(engine, monkeypatch, flush_ms=5)
    yield rt, sent
    rt.close()


def small_tier_job(engine: Engine, texts: list[str]) -> tuple[int, list[int]]:
    """A job whose items all wait at the small tier."""
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        job_id, _ = repo.open_job(s, "pool", PIPELINE.model_dump(mode="json"))
        sub = repo.start_submission(s, job_id, "x.jsonl")
        items = [NewItem(i, f"k{i}", t, {}) for i, t in enumerate(texts)]
        ids = repo.add_items(s, job_id, sub, items).added
        s.execute(ITEMS.update().where(ITEMS.c.id.in_(ids)).values(tier_index=SMALL))
        repo.job_submitted(s, job_id)
    return job_id, ids


def wait_settled(engine: Engine, ids: list[int], timeout: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as c:
            rows = c.execute(select(ITEMS).where(ITEMS.c.id.in_(ids)).order_by(ITEMS.c.id)).all()
        if all(
            r.status not in (Status.PENDING, Status.RUNNING) or r.tier_index > SMALL for r in rows
        ):
            return rows
        assert time.monotonic() < deadline, [(r.id, r.status) for r in rows]
        time.sleep(0.05)


def served(fake: FakeServer) -> int:
    """Requests the fake API answered."""
    return sum(m["calls"] for m in fake.stats()["by_model"].values())


def attempts(engine: Engine, ids: list[int]) -> list[Any]:
    with engine.connect() as c:
        return c.execute(
            select(ATTEMPTS)
            .where(ATTEMPTS.c.item_id.in_(ids))
            .order_by(ATTEMPTS.c.item_id, ATTEMPTS.c.step)
        ).all()


def test_each_item_settles_when_its_own_call_returns(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = small_tier_job(engine, TEXTS * 4)
    # When one message of 24 items is admitted (calls of 20 to 780 ms)
    t0 = time.monotonic()
    assert pool_of(rt).admit(Message(Phase.TIER, job_id, SMALL, ids)).taken == len(ids)
    admitted_s = time.monotonic() - t0
    rows = wait_settled(engine, ids)
    # Then admission returned at once, without waiting for the calls ...
    assert admitted_s < 0.4, admitted_s
    # ... and items settled one by one as their calls returned, not all at the end
    settled_at = sorted(r.updated_at for r in rows)
    spread = (settled_at[-1] - settled_at[0]).total_seconds()
    assert spread > 0.3, settled_at
    # every call is one row, decided; the escalated went on (in messages under 24)
    calls = attempts(engine, ids)
    assert len(calls) == served(fake) == len(ids)
    assert all(a.outcome == Outcome.OK and a.decision is not None for a in calls)
    escalated = [r.id for r in rows if r.status == Status.PENDING]
    assert sorted(pk for m in sent for pk in m.ids) == sorted(escalated)
    assert all(m.phase == Phase.TIER and m.tier_index == SMALL + 1 for m in sent)


def test_a_cut_off_visit_is_continued_not_redone(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = small_tier_job(engine, TEXTS[:2])
    answered, cut = ids
    # Given a worker claimed both items and died: one answer had come back and was
    # journaled, the other call was in flight
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        dead = ledger.claim(s, job_id, SMALL, ids, phase=Phase.TIER, token="dead", lease_s=600)
        assert len(dead) == 2
        rows = [
            _row(job_id, answered, outcome=Outcome.OK, label="billing", confidence=0.97,
                 input_tokens=300, output_tokens=40, cost_nanos=5_000, request_id="req-1"),
            _row(job_id, cut, outcome=Outcome.IN_FLIGHT, cost_nanos=4_000),
        ]  # fmt: skip
        assert ledger.journal(s, rows, {answered: "dead", cut: "dead"}) == set()
        s.execute(
            ITEMS.update().where(ITEMS.c.id.in_(ids)).values(lease_until=text("'2000-01-01'"))
        )
    # When the items are claimed again (their lease ran out)
    assert pool_of(rt).admit(Message(Phase.TIER, job_id, SMALL, ids)).taken == 2
    rows = {r.id: r for r in wait_settled(engine, ids)}
    calls = attempts(engine, ids)
    # Then the recorded answer decided its item, with no new call
    mine = [a for a in calls if a.item_id == answered]
    assert [(a.step, a.outcome, a.decision) for a in mine] == [(0, "ok", "accept")]
    assert rows[answered].status == Status.DONE and rows[answered].label == "billing"
    assert "recorded" in rows[answered].reason
    assert rows[answered].cost_nanos == 5_000 and rows[answered].model_calls == 1
    # And the cut-off call stays in the ledger as unknown, before the new call
    theirs = [a for a in calls if a.item_id == cut]
    assert [(a.step, a.outcome) for a in theirs] == [(0, "unknown"), (1, "ok")]
    assert theirs[0].cost_nanos == 4_000 and theirs[1].decision is not None
    assert rows[cut].model_calls == 2
    assert rows[cut].cost_nanos == 4_000 + theirs[1].cost_nanos
    assert rows[cut].steps == 2
    assert served(fake) == 1


def test_a_dead_workers_spool_gives_back_its_reply_and_drops_its_unsent_call(
    engine: Engine, fake: FakeServer, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = small_tier_job(engine, TEXTS[:3])
    answered, unsent, on_wire = ids
    # Given a worker claimed three items, wrote each call as in flight and was killed:
    # the first call's reply was in its spool, not yet in the ledger; the second call
    # never left (killed between its row and its request); the third was on the wire
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        ledger.claim(s, job_id, SMALL, ids, phase=Phase.TIER, token="dead", lease_s=600)
        rows = [_row(job_id, pk, outcome=Outcome.IN_FLIGHT, cost_nanos=4_000) for pk in ids]
        assert ledger.journal(s, rows, dict.fromkeys(ids, "dead")) == set()
        s.execute(
            ITEMS.update().where(ITEMS.c.id.in_(ids)).values(lease_until=text("'2000-01-01'"))
        )
    dead = Spool(spool_dir(rt.settings.spool_dir, rt.settings.database_url))
    for pk in ids:
        dead.intent(pk, 0)
    dead.sent(answered, 0)
    dead.sent(on_wire, 0)
    dead.returned(
        _row(job_id, answered, outcome=Outcome.OK, label="billing", confidence=0.97,
             input_tokens=300, output_tokens=40, cost_nanos=5_000, request_id="req-1")
    )  # fmt: skip
    segment = dead.path
    dead.close(clean=False)
    # When a pool starts in another process (it replays the spool) and claims them again
    assert pool_of(rt).admit(Message(Phase.TIER, job_id, SMALL, ids)).taken == 3
    rows = {r.id: r for r in wait_settled(engine, ids)}
    calls = attempts(engine, ids)
    # Then the spooled answer decided its item: no second call, billed once
    mine = [(a.step, a.outcome, a.decision, a.request_id) for a in calls if a.item_id == answered]
    assert mine == [(0, "ok", "accept", "req-1")]
    assert rows[answered].label == "billing" and rows[answered].cost_nanos == 5_000
    # the call that never left is not in the ledger: its item made one call
    assert [(a.step, a.outcome) for a in calls if a.item_id == unsent] == [(0, "ok")]
    assert rows[unsent].model_calls == 1
    # the call that left stays, as a call of unknown outcome, before its item's new call
    assert [(a.step, a.outcome) for a in calls if a.item_id == on_wire] == [
        (0, "unknown"),
        (1, "ok"),
    ]
    assert served(fake) == 2
    assert not segment.exists()  # replayed once, then gone


def test_a_lost_lease_stops_the_journal(engine: Engine) -> None:
    job_id, ids = small_tier_job(engine, TEXTS[:2])
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        ledger.claim(s, job_id, SMALL, ids, phase=Phase.TIER, token="ours", lease_s=600)
        # another worker holds the second item now
        s.execute(ITEMS.update().where(ITEMS.c.id == ids[1]).values(lease_token="theirs"))
        owners = {ids[0]: "ours", ids[1]: "ours"}
        sending = [_row(job_id, pk, outcome=Outcome.IN_FLIGHT) for pk in ids]
        assert ledger.journal(s, sending, owners) == {ids[1]}
        back = _row(job_id, ids[1], outcome=Outcome.OK, label="billing", request_id="r9")
        assert ledger.journal(s, [back], owners) == {ids[1]}
    rows = [(a.item_id, a.step, a.outcome) for a in attempts(engine, ids)]
    # the call we may still send is journaled; none is sent for the item we lost; a
    # reply that came back for it anyway is kept apart (it was billed)
    assert rows == [(ids[0], 0, "in_flight"), (ids[1], ledger.ORPHAN_STEP_BASE, "ok")]


def test_a_heartbeat_renews_only_the_leases_it_holds(engine: Engine) -> None:
    job_id, ids = small_tier_job(engine, TEXTS[:3])
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        ledger.claim(s, job_id, SMALL, ids[:2], phase=Phase.TIER, token="a", lease_s=1)
        ledger.claim(s, job_id, SMALL, ids[2:], phase=Phase.TIER, token="b", lease_s=1)
    with sessions.begin() as s:
        assert ledger.extend_leases(s, ["a"], 600) == 2
    with engine.connect() as c:
        until = {r.id: r.lease_until for r in c.execute(select(ITEMS.c.id, ITEMS.c.lease_until))}
    assert until[ids[0]] == until[ids[1]] and until[ids[0]] > until[ids[2]]


@pytest.mark.postgres
def test_one_sweeper_at_a_time(pg_url: str) -> None:
    from migrations.runner import upgrade
    from models.db import make_engine

    upgrade(pg_url)
    eng = make_engine(pg_url)
    sessions = make_sessionmaker(eng)
    try:
        with sessions.begin() as first:
            assert ledger.try_sweep_lock(first)
            with sessions.begin() as second:
                assert not ledger.try_sweep_lock(second)
        with sessions.begin() as third:  # released with the first transaction
            assert ledger.try_sweep_lock(third)
    finally:
        eng.dispose()


def _row(job_id: int, pk: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": job_id, "item_id": pk, "step": 0, "tier_index": SMALL, "tier": "small",
        "role": "primary", "provider": "anthropic", "model": "claude-haiku-5-5",
        "outcome": Outcome.OK, "decision": None, "label": None, "confidence": None,
        "hedged": False, "input_tokens": 0, "output_tokens": 0, "cache_write_tokens": 0,
        "cache_read_tokens": 0, "is_batch": False, "cost_nanos": 0, "latency_ms": 0,
        "http_status": None, "error": None, "request_id": None,
    }  # fmt: skip
    return row | values


def _waited(engine: Engine, ids: list[int], seconds: float, **values: Any) -> None:
    """Items last touched ``seconds`` ago (with ``values`` set too)."""
    with make_sessionmaker(engine).begin() as s:
        s.execute(
            ITEMS.update()
            .where(ITEMS.c.id.in_(ids))
            .values(updated_at=repo.utcnow() - timedelta(seconds=seconds), **values)
        )


def test_items_at_an_empty_queue_are_resent_within_seconds(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    """A broker that restarted empty took the messages of items waiting at a tier: the
    sweep re-sends them once they have waited ``QUIET_S`` at a tier whose queue is empty,
    not after the idle sweep's ten minutes; at a queue still holding messages it waits."""
    rt, sent = runtime
    job_id, ids = small_tier_job(engine, TEXTS)
    queue = pub.queue_for(rt, Message(Phase.TIER, job_id, SMALL, []))
    quiet_for = pub.QUIET_S + 5
    _waited(engine, ids, quiet_for)

    # The queue still holds a message: they are carried; only the idle rule applies.
    assert pub.sweep_once(rt, 600, depths=lambda qs: dict.fromkeys(qs, 1)) == 0
    assert sent == []
    # The broker is empty (restarted): all of them go back on their tier's queue.
    asked: list[list[str]] = []
    assert pub.sweep_once(rt, 600, depths=lambda qs: asked.append(qs) or {}) == len(ids)
    assert asked == [[queue]]
    assert sorted(i for m in sent for i in m.ids) == sorted(ids)
    assert {(m.phase, m.job_id, m.tier_index) for m in sent} == {(Phase.TIER, job_id, SMALL)}
    assert all(m.urgent for m in sent)  # ahead of the queue's backlog (test_priority.py)
    # ... once: the sweep touched them, so the next pass waits QUIET_S again.
    assert pub.sweep_once(rt, 600, depths=lambda qs: {}) == 0
    # No broker to ask: nothing is re-sent before the idle rule.
    _waited(engine, ids, quiet_for)

    def down(queues: list[str]) -> dict[str, int]:
        raise ConnectionError("broker restarting")

    assert pub.sweep_once(rt, 600, depths=down) == 0


def test_items_waiting_for_their_fallback_at_an_empty_queue_are_resent_unless_deferred(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    """A fallback message lost with the broker (the soak's Redis restart left one item in
    'fallback' for the idle sweep's ten minutes) is re-sent after ``QUIET_S`` too; an
    item deferred on purpose waits for its countdown, as before."""
    rt, sent = runtime
    job_id, ids = small_tier_job(engine, TEXTS)
    lost, deferred = ids[:-1], ids[-1:]
    quiet_for = pub.QUIET_S + 5
    _waited(engine, ids, quiet_for, status=Status.FALLBACK)
    _waited(engine, deferred, quiet_for, deferrals=1)

    asked: list[list[str]] = []
    assert pub.sweep_once(rt, 600, depths=lambda qs: asked.append(qs) or {}) == len(lost)
    assert asked == [[pub.queue_for(rt, Message(Phase.FALLBACK, job_id, SMALL, []))]]
    assert sorted(i for m in sent for i in m.ids) == sorted(lost)
    assert {(m.phase, m.tier_index) for m in sent} == {(Phase.FALLBACK, SMALL)}
    # A fallback queue that still holds a message carries them: nothing more goes.
    _waited(engine, ids, quiet_for)
    assert pub.sweep_once(rt, 600, depths=lambda qs: dict.fromkeys(qs, 1)) == 0


@pytest.fixture
def retired_fallback(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runtime, list[Message]]]:
    """A runtime whose small tier's fallback model is retired (404: a permanent failure)."""
    with FakeServer(seed=3, faults={"claude-haiku-4-5": {"error_status": 404}}) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.start())
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged-0123456789")
        url = engine.url.render_as_string(hide_password=False)
        settings = Settings(
            database_url=url, broker_url="memory://localhost/", sweep_every_s=0, flush_ms=5
        )
        sent: list[Message] = []
        monkeypatch.setattr(pub, "send", lambda rt, msg: sent.append(msg))
        rt = Runtime(settings)
        yield rt, sent
        rt.close()


def test_the_chain_defers_by_the_recorded_failure_kind_not_its_text(
    engine: Engine, retired_fallback: tuple[Runtime, list[Message]]
) -> None:
    """The primary's failure kind is a field: a chain whose own link fails for good still
    defers an item whose primary failed in a way that may pass (transient), and gives up
    on one whose primary's answer was the problem; the text of ``error`` is not read."""
    rt, _ = retired_fallback
    job_id, ids = small_tier_job(engine, TEXTS[:2])
    passing, answer = ids
    with make_sessionmaker(engine).begin() as s:
        for pk, kind in ((passing, Outcome.TRANSIENT), (answer, None)):
            s.execute(
                ITEMS.update()
                .where(ITEMS.c.id == pk)
                .values(status=Status.FALLBACK, error="it could not serve", error_kind=kind)
            )
    assert pool_of(rt).admit(Message(Phase.FALLBACK, job_id, SMALL, ids)).taken == 2
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as c:
            rows = {
                r.id: r
                for r in c.execute(
                    select(ITEMS.c.id, ITEMS.c.status, ITEMS.c.deferrals).where(ITEMS.c.id.in_(ids))
                )
            }
        if all(r.status != Status.FALLBACK_RUNNING for r in rows.values()):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)
    assert (rows[passing].status, rows[passing].deferrals) == (Status.FALLBACK, 1)
    assert rows[answer].status == Status.FAILED


def _pool_runtime(
    engine: Engine, fake: FakeServer, monkeypatch: pytest.MonkeyPatch, **knobs: Any
) -> Runtime:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.start())
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged-0123456789")
    url = engine.url.render_as_string(hide_password=False)
    monkeypatch.setattr(pub, "send", lambda rt, msg: None)
    return Runtime(
        Settings(
            database_url=url,
            broker_url="memory://localhost/",
            sweep_every_s=0,
            flush_ms=5,
            concurrency=4,
            admit_factor=1,
            **knobs,
        )
    )


def test_a_pool_full_of_items_waiting_on_a_rate_limit_gives_a_message_back(
    engine: Engine, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items waiting for their rate-limit turn hold no call slot: a process full of them
    gives the next message back to its queue (to take other queues' work) rather than
    block on it; a process full of calls on the wire waits for room instead."""
    # one request a minute, after a burst of one: the pool's 4 items wait on the limiter
    limits = {"anthropic:claude-haiku-5-5": {"requests_per_min": 1.0}}
    # (the items still waiting at the end are dropped after the 3 s lease)
    rt = _pool_runtime(engine, fake, monkeypatch, rate_limits=limits, lease_seconds=3)
    try:
        job_id, ids = small_tier_job(engine, TEXTS)
        pool = pool_of(rt)
        assert pool.admit(Message(Phase.TIER, job_id, SMALL, ids[:4])).taken == 4
        t0 = time.monotonic()
        got = pool.admit(Message(Phase.TIER, job_id, SMALL, ids[4:]))
        assert (got.taken, got.back) == (0, ids[4:])
        assert time.monotonic() - t0 >= BACK_AFTER_S * 0.9  # it waited for room first
        with engine.connect() as c:  # untouched: still waiting at the tier for a message
            rows = c.execute(select(ITEMS.c.status).where(ITEMS.c.id.in_(ids[4:]))).all()
        assert {r.status for r in rows} == {Status.PENDING}
    finally:
        rt.close()


def test_a_pool_full_of_calls_on_the_wire_waits_for_room(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeServer(latency_ms=600, seed=5) as slow:
        rt = _pool_runtime(engine, slow, monkeypatch)
        try:
            job_id, ids = small_tier_job(engine, TEXTS)
            pool = pool_of(rt)
            assert pool.admit(Message(Phase.TIER, job_id, SMALL, ids[:4])).taken == 4
            deadline = time.monotonic() + 20  # the first call writes the cache, then 3 go
            while pool.calls_on_wire() < 3:
                assert time.monotonic() < deadline, pool.calls_on_wire()
                time.sleep(0.01)
            got = pool.admit(Message(Phase.TIER, job_id, SMALL, ids[4:]))
            assert (got.taken, got.back) == (2, [])
            wait_settled(engine, ids)
        finally:
            rt.close()

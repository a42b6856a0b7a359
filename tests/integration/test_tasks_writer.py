"""The ledger thread of a worker process (:class:`tasks.writer.Writer`), on both
databases, with a stand-in for the pool whose items it records: settled items and
their follow-ups, a lost lease, the call journal's answers to the loop, a write that
fails, breaker transitions stored, follow-ups grouped per tier, and leases renewed on
the writer's own (injected) clock.

``Writer.stop`` drains everything queued before it returns, so each test asserts on
the ledger and on the messages handed to the broker (``tasks.publish.send`` replaced)
after it, without waiting on time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, select

from common.lifecycle import JobStatus, Outcome, Phase, Status
from models import ledger, repo
from models.attempt_rows import attempt_row
from models.db import make_sessionmaker
from models.repo import ATTEMPTS, ITEMS, JOBS, NewItem
from models.tables_resilience import BreakerEvent
from tasks.messages import Message
from tasks.rows import step_row
from tasks.runtime import Runtime, worker_name
from tasks.spool import SEGMENT_S, Segment, Spool, recover
from tasks.writer import Writer
from tests.integration.conftest import collecting_runtime
from workers.breaker import Transition
from workers.decision import Accept, Decision, Defer, Escalate, Fallback
from workers.pipeline import load_pipeline
from workers.records import ItemResult, Step
from workers.retry import LeaseLost

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = load_pipeline(ROOT / "examples" / "support_triage.toml")
SMALL = 1


class Holder:
    """The pool as the writer sees it: which items it holds under which token."""

    def __init__(self, owned: dict[int, str] | None = None) -> None:
        self.owned = dict(owned or {})
        self.settled_pks: list[int] = []

    def tokens(self) -> list[str]:
        return sorted(set(self.owned.values()))

    def owners(self, pks: set[int]) -> dict[int, str]:
        return {pk: self.owned[pk] for pk in pks if pk in self.owned}

    def settled(self, pks: list[int]) -> None:
        self.settled_pks += pks
        for pk in pks:
            self.owned.pop(pk, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def runtime(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runtime, list[Message]]]:
    rt, sent = collecting_runtime(
        engine,
        monkeypatch,
        flush_ms=20,
        batch_size=2,
        lease_seconds=600,
        defer_base_s=5,
        defer_cap_s=100,
    )
    yield rt, sent
    rt.close()


def make_job(engine: Engine, n: int, **values: Any) -> tuple[int, list[int]]:
    """A running job whose ``n`` items wait at the small tier (with ``values`` set)."""
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "writer", PIPELINE.model_dump(mode="json"))
        sub = repo.start_submission(s, job_id, "x.jsonl")
        ids = repo.add_items(s, job_id, sub, [NewItem(i, f"k{i}", f"t{i}", {}) for i in range(n)])
        s.execute(
            ITEMS.update().where(ITEMS.c.id.in_(ids.added)).values(tier_index=SMALL, **values)
        )
        repo.job_submitted(s, job_id)
    return job_id, ids.added


def claim(engine: Engine, job_id: int, ids: list[int], token: str, *, phase: Phase = Phase.TIER,
          lease_s: int = 600) -> None:  # fmt: skip
    with make_sessionmaker(engine).begin() as s:
        got = ledger.claim(s, job_id, SMALL, ids, phase=phase, token=token, lease_s=lease_s)
        assert [c.pk for c in got] == ids


def items(engine: Engine, ids: list[int]) -> dict[int, Any]:
    with engine.connect() as c:
        return {r.id: r for r in c.execute(select(ITEMS).where(ITEMS.c.id.in_(ids)))}


def job_status(engine: Engine, job_id: int) -> str:
    with engine.connect() as c:
        return str(c.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar_one())


def in_flight(job_id: int, pk: int, step: int = 0) -> dict[str, Any]:
    return attempt_row(
        job_id=job_id,
        item_id=pk,
        step=step,
        tier_index=SMALL,
        tier="small",
        role="primary",
        provider="anthropic",
        model="claude-haiku-5-5",
        outcome=Outcome.IN_FLIGHT,
    )


def settle_all(
    rt: Runtime,
    holder: Holder,
    entries: list[tuple[Message, str, Decision]],
    clock: Clock | None = None,
) -> None:
    """Hand ``(message, token, decision)`` per item to a writer, then stop it."""
    writer = Writer(rt, holder, clock=clock or Clock())
    for msg, token, decision in entries:
        for pk in msg.ids:
            writer.settle(msg, "small", token, ItemResult(pk, decision))
    writer.start()
    writer.stop(10)


def by_route(sent: list[Message]) -> list[tuple[Phase, int, list[int], float]]:
    return sorted((m.phase, m.tier_index, m.ids, m.countdown) for m in sent)


# -- settling ----------------------------------------------------------------------------
def test_settled_items_are_written_and_sent_on_by_their_verdicts(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, 4)
    up, done, failed = ids[:1], ids[1:2], ids[2:3]
    claim(engine, job_id, ids[:3], "t")
    deferred = ids[3:]
    with make_sessionmaker(engine).begin() as s:
        s.execute(ITEMS.update().where(ITEMS.c.id.in_(deferred)).values(status=Status.FALLBACK))
    claim(engine, job_id, deferred, "f", phase=Phase.FALLBACK)
    holder = Holder(dict.fromkeys(ids[:3], "t") | dict.fromkeys(deferred, "f"))

    settle_all(
        rt,
        holder,
        [
            (Message(Phase.TIER, job_id, SMALL, up), "t", Escalate("confidence 0.4 < 0.8")),
            (Message(Phase.TIER, job_id, SMALL, done), "t", Accept("billing", 0.9, "charged")),
            (Message(Phase.TIER, job_id, SMALL, failed), "t", Fallback("transient: 529")),
            (Message(Phase.FALLBACK, job_id, SMALL, deferred), "f", Defer("all links down", 2)),
        ],
    )

    rows = items(engine, ids)
    assert (rows[up[0]].status, rows[up[0]].tier_index) == (Status.PENDING, 2)
    assert (rows[done[0]].status, rows[done[0]].label) == (Status.DONE, "billing")
    assert (rows[failed[0]].status, rows[failed[0]].error) == (Status.FALLBACK, "transient: 529")
    assert rows[deferred[0]].status == Status.FALLBACK
    assert sorted(holder.settled_pks) == sorted(ids)
    assert holder.owned == {}
    # the second deferral waits twice the base: 10 s
    assert by_route(sent) == [
        (Phase.FALLBACK, SMALL, failed, 0.0),
        (Phase.FALLBACK, SMALL, deferred, 10.0),
        (Phase.TIER, 2, up, 0.0),
    ]
    assert job_status(engine, job_id) == JobStatus.RUNNING


def test_the_last_item_settled_finishes_the_job(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, 2)
    claim(engine, job_id, ids, "t")
    msg = Message(Phase.TIER, job_id, SMALL, ids)
    with structlog.testing.capture_logs() as logs:
        settle_all(rt, Holder(dict.fromkeys(ids, "t")), [(msg, "t", Accept("other", 0.99, "x"))])
    assert job_status(engine, job_id) == JobStatus.DONE
    assert sent == []
    settled = [e for e in logs if e["event"] == "cascade.batch.settled"]
    assert [(e["items"], e["lost_lease"], e["accept"]) for e in settled] == [(2, 0, 2)]
    assert "cascade.job.done" in [e["event"] for e in logs]


def test_a_failed_done_check_is_tried_again(
    engine: Engine, runtime: tuple[Runtime, list[Message]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that marks a job done fails once: the ledger thread lives on and checks
    again (at most FINISH_EVERY_S later), and the job is done."""
    rt, _ = runtime
    job_id, ids = make_job(engine, 1)
    claim(engine, job_id, ids, "t")
    real, calls = repo.finish_job_if_done, []

    def flaky(session: Any, job: int) -> bool:
        calls.append(job)
        if len(calls) == 1:
            raise RuntimeError("the database said no")
        return real(session, job)

    monkeypatch.setattr(repo, "finish_job_if_done", flaky)
    writer = Writer(rt, Holder(dict.fromkeys(ids, "t")), clock=time.monotonic)
    writer.settle(
        Message(Phase.TIER, job_id, SMALL, ids),
        "small",
        "t",
        ItemResult(ids[0], Accept("other", 0.99, "x")),
    )
    writer.start()
    deadline = time.monotonic() + 10
    while job_status(engine, job_id) != JobStatus.DONE and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop(10)
    assert job_status(engine, job_id) == JobStatus.DONE
    assert calls[:2] == [job_id, job_id]


def test_an_item_whose_lease_was_lost_is_left_to_its_new_holder(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, 1)
    claim(engine, job_id, ids, "theirs")  # another worker claimed it after our lease ran out
    holder = Holder({ids[0]: "ours"})
    msg = Message(Phase.TIER, job_id, SMALL, ids)
    with structlog.testing.capture_logs() as logs:
        settle_all(rt, holder, [(msg, "ours", Escalate("unsure"))])
    row = items(engine, ids)[ids[0]]
    assert (row.status, row.tier_index, row.lease_token) == (Status.RUNNING, SMALL, "theirs")
    assert sent == []  # nothing is sent on for an item we no longer hold
    assert holder.settled_pks == ids  # ... and the pool lets go of it
    settled = [e for e in logs if e["event"] == "cascade.batch.settled"]
    assert [(e["items"], e["lost_lease"]) for e in settled] == [(0, 1)]


def test_follow_ups_of_one_tier_are_grouped_into_batches(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    """With the clock standing still no group is due by age: they go out by size (2),
    and what is left when the writer stops."""
    rt, sent = runtime
    job_id, ids = make_job(engine, 3)
    claim(engine, job_id, ids, "t")
    entries = [(Message(Phase.TIER, job_id, SMALL, [pk]), "t", Escalate("unsure")) for pk in ids]
    settle_all(rt, Holder(dict.fromkeys(ids, "t")), entries)  # type: ignore[arg-type]
    assert by_route(sent) == [(Phase.TIER, 2, ids[:2], 0.0), (Phase.TIER, 2, ids[2:], 0.0)]


# -- the call journal ----------------------------------------------------------------------
def test_the_journal_tells_the_loop_which_calls_it_may_send(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(engine, 2)
    claim(engine, job_id, ids[:1], "ours")
    claim(engine, job_id, ids[1:], "theirs")
    writer = Writer(rt, Holder({ids[0]: "ours", ids[1]: "ours"}), clock=Clock())

    async def send_both() -> list[BaseException | None]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = [loop.create_future() for _ in ids]
        for pk, done in zip(ids, futures, strict=True):
            writer.journal(in_flight(job_id, pk), done)
        writer.start()
        got = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
        return list(got)

    try:
        ours, theirs = asyncio.run(send_both())
    finally:
        writer.stop(10)
    assert ours is None  # committed as in flight: the request may leave
    assert isinstance(theirs, LeaseLost)  # not ours any more: the call is not sent
    with engine.connect() as c:
        rows = c.execute(select(ATTEMPTS.c.item_id, ATTEMPTS.c.outcome)).all()
    assert [tuple(r) for r in rows] == [(ids[0], Outcome.IN_FLIGHT)]


def test_a_reply_settled_in_the_same_commit_is_written_once_by_its_settle(
    engine: Engine, runtime: tuple[Runtime, list[Message]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 0's reply and its settle share a commit: the journal skips the reply and the
    settle writes the row, decision included. Item 1's reply has no settle with it: the
    journal writes it, left for the settle to come."""
    rt, _ = runtime
    job_id, ids = make_job(engine, 2)
    claim(engine, job_id, ids, "t")
    journaled: list[list[tuple[int, int, str]]] = []
    real = ledger.journal

    def spy(session: Any, rows: list[dict[str, Any]], owners: Any, **kw: Any) -> set[int]:
        journaled.append([(r["item_id"], r["step"], r["outcome"]) for r in rows])
        return real(session, rows, owners, **kw)

    monkeypatch.setattr(ledger, "journal", spy)
    steps = [
        Step(pk, 0, SMALL, "small", "primary", "anthropic", "m", Outcome.OK, request_id=f"r{pk}")
        for pk in ids
    ]
    writer = Writer(rt, Holder(dict.fromkeys(ids, "t")), clock=Clock())
    for s in steps:
        writer.journal(step_row(job_id, s), None)
    answered = replace(steps[0], decision="accept", label="other", confidence=0.99)
    msg = Message(Phase.TIER, job_id, SMALL, ids[:1])
    writer.settle(msg, "small", "t", ItemResult(ids[0], Accept("other", 0.99, "x"), [answered]))
    writer.start()
    writer.stop(10)
    assert journaled == [[(ids[1], 0, Outcome.OK)]]
    with engine.connect() as c:
        rows = c.execute(
            select(ATTEMPTS.c.item_id, ATTEMPTS.c.request_id, ATTEMPTS.c.decision).order_by(
                ATTEMPTS.c.item_id
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (ids[0], f"r{ids[0]}", "accept"),
        (ids[1], f"r{ids[1]}", None),
    ]


def test_a_write_that_fails_fails_the_waiting_calls_and_releases_the_items(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, 1)
    claim(engine, job_id, ids, "t")
    holder = Holder({ids[0]: "t", 424242: "t"})
    writer = Writer(rt, holder, clock=Clock())

    async def run() -> BaseException | None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writer.journal(in_flight(job_id, ids[0]), done)
        # one entry of the group names a job this database does not have
        writer.settle(Message(Phase.TIER, 424242, SMALL, [424242]), "small", "t",
                      ItemResult(424242, Escalate("x")))  # fmt: skip
        writer.start()
        (got,) = await asyncio.wait_for(asyncio.gather(done, return_exceptions=True), 10)
        return got

    with structlog.testing.capture_logs() as logs:
        try:
            error = asyncio.run(run())
        finally:
            writer.stop(10)

    assert isinstance(error, LookupError)
    assert "job 424242 does not exist" in str(error)
    assert holder.settled_pks == [424242]
    failed = [e for e in logs if e["event"] == "cascade.ledger.write_failed"]
    assert [(e["log_level"], e["entries"]) for e in failed] == [("error", 2)]
    # the whole group rolled back: not even the in-flight row was kept
    with engine.connect() as c:
        assert c.execute(select(ATTEMPTS)).all() == []
    assert sent == []


def test_a_spool_segment_goes_once_its_entries_commit_and_stays_after_a_failed_write(
    engine: Engine, runtime: tuple[Runtime, list[Message]], tmp_path: Path
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(engine, 1)
    claim(engine, job_id, ids, "t")
    holder = Holder({ids[0]: "t", 424242: "t"})
    clock = Clock()
    spool = Spool(tmp_path, clock=clock)
    writer = Writer(rt, holder, clock=Clock())
    writer.spool = spool

    def next_segment() -> Segment:
        clock.now += SEGMENT_S
        old = spool.rotate()
        assert old is not None
        writer.released(old)
        return old

    def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    try:
        # a segment whose call row committed is deleted
        spool.intent(ids[0], 0)
        writer.journal(in_flight(job_id, ids[0]), None)
        first = next_segment()
        writer.start()
        until(lambda: not first.path.exists())
        # one whose group failed (it names a job the database does not have) is kept
        spool.returned(in_flight(job_id, 424242))
        writer.settle(Message(Phase.TIER, 424242, SMALL, [424242]), "small", "t",
                      ItemResult(424242, Escalate("x")))  # fmt: skip
        second = next_segment()
        until(lambda: writer.failed)
        assert second.path.exists()
        assert recover(tmp_path, lambda r, u: (0, 0)) is None  # still ours: locked
    finally:
        writer.stop(10)
    spool.close(clean=not writer.failed)
    # once the process is gone, a successor replays what did not commit
    seen: list[Any] = []
    found = recover(tmp_path, lambda r, u: seen.append((r, u)) or (0, 0))
    assert found is not None and [row["item_id"] for row in seen[0][0]] == [424242]


# -- breaker transitions and leases -----------------------------------------------------------
def test_breaker_transitions_seen_by_the_process_are_logged_and_stored(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, _ = make_job(engine, 0)
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    key = "anthropic:claude-haiku-5-5"
    rt.executor().transitions.extend(
        [
            (Transition(key, "closed", "open", at, "failure_threshold"), job_id),
            (Transition(key, "open", "half_open", at + 30, "recovery_elapsed"), None),
        ]
    )
    writer = Writer(rt, Holder(), clock=Clock())
    with structlog.testing.capture_logs() as logs:
        writer.start()
        writer.stop(10)

    assert rt.executor().transitions == []  # taken, once
    warned = [e for e in logs if e["event"].startswith("cascade.breaker.")]
    assert [(e["event"], e["breaker"], e["from_state"], e["reason"]) for e in warned] == [
        ("cascade.breaker.open", key, "closed", "failure_threshold"),
        ("cascade.breaker.half_open", key, "open", "recovery_elapsed"),
    ]
    with engine.connect() as c:
        rows = c.execute(select(BreakerEvent.__table__).order_by(BreakerEvent.__table__.c.id))
        stored = [(r.breaker_key, r.from_state, r.to_state, r.job_id, r.worker) for r in rows]
    assert stored == [
        (key, "closed", "open", job_id, worker_name()),
        (key, "open", "half_open", None, worker_name()),
    ]


@pytest.mark.parametrize("beat", [False, True], ids=["before-the-beat", "after-the-beat"])
def test_leases_are_renewed_a_third_of_a_lease_after_the_last_beat(
    engine: Engine, runtime: tuple[Runtime, list[Message]], beat: bool
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(engine, 2)
    claim(engine, job_id, ids[:1], "ours", lease_s=5)
    claim(engine, job_id, ids[1:], "other", lease_s=5)
    before = {pk: r.lease_until for pk, r in items(engine, ids).items()}
    clock = Clock()
    writer = Writer(rt, Holder({ids[0]: "ours"}), clock=clock)
    writer.start()
    # a lease of 600 s is renewed every 200 s of the writer's clock
    clock.now += 201 if beat else 199
    writer.stop(10)

    after = {pk: r.lease_until for pk, r in items(engine, ids).items()}
    assert after[ids[1]] == before[ids[1]]  # not ours: never renewed
    if beat:
        assert (after[ids[0]] - before[ids[0]]).total_seconds() > 500
    else:
        assert after[ids[0]] == before[ids[0]]

"""One message's items through the flow, on both databases, without Celery or a model:
a rules tier decided and settled in one transaction, the budget gate in front of a
model tier (what it admits, caps and holds), a batch tier's held items settled at
once, and the rescue of items no message carries any more (embedded and distributed).

Follow-up messages are collected instead of sent (``tasks.publish.send`` replaced)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, select

from common.lifecycle import JobStatus, Phase, Status
from models import repo
from models.db import make_sessionmaker
from models.repo import ATTEMPTS, ITEMS, JOBS, NewItem
from tasks.budget import budget_gate
from tasks.flow import decide_items, process
from tasks.messages import Message
from tasks.rescue import SWEEP_IDLE_S, requeue_distributed, resend_embedded
from tasks.runtime import Runtime
from tasks.settle import claim, settle_and_route
from tests.integration.conftest import collecting_runtime
from workers.pipeline import ClaudeTier, load_pipeline
from workers.records import WorkItem

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = load_pipeline(ROOT / "examples" / "support_triage.toml")
SMALL = 1
# texts the support-triage rules answer, and texts no rule matches
MATCH = {
    "I forgot my password and cannot sign in": "account",
    "Where is my parcel? It was due on Monday": "shipping",
    "What is your refund policy for sale items?": "billing",
}
MISS = ["The checkout page shows a blank screen", "I love the new dark mode"]


@pytest.fixture
def runtime(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Runtime, list[Message]]]:
    """A worker process's runtime on the test database; follow-ups are collected."""
    rt, sent = collecting_runtime(engine, monkeypatch, batch_size=2, free_batch_size=3)
    yield rt, sent
    rt.close()


def make_job(
    engine: Engine,
    texts: list[str],
    *,
    tier_index: int = 0,
    pipeline: dict[str, Any] | None = None,
    budget_nanos: int | None = None,
    **values: Any,
) -> tuple[int, list[int]]:
    """A running job whose items wait at ``tier_index`` (with ``values`` set on them)."""
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "flow", pipeline or PIPELINE.model_dump(mode="json"))
        sub = repo.start_submission(s, job_id, "x.jsonl")
        items = [NewItem(i, f"k{i}", t, {}) for i, t in enumerate(texts)]
        ids = repo.add_items(s, job_id, sub, items).added
        s.execute(ITEMS.update().where(ITEMS.c.id.in_(ids)).values(tier_index=tier_index, **values))
        s.execute(JOBS.update().where(JOBS.c.id == job_id).values(budget_nanos=budget_nanos))
        repo.job_submitted(s, job_id)
    return job_id, ids


def items(engine: Engine, ids: list[int]) -> dict[int, Any]:
    with engine.connect() as c:
        rows = c.execute(select(ITEMS).where(ITEMS.c.id.in_(ids))).all()
    return {r.id: r for r in rows}


def job_row(engine: Engine, job_id: int) -> Any:
    with engine.connect() as c:
        return c.execute(select(JOBS).where(JOBS.c.id == job_id)).one()


def attempts_of(engine: Engine, ids: list[int]) -> list[Any]:
    with engine.connect() as c:
        return c.execute(
            select(ATTEMPTS).where(ATTEMPTS.c.item_id.in_(ids)).order_by(ATTEMPTS.c.item_id)
        ).all()


def aged(engine: Engine, ids: list[int], seconds: float, **values: Any) -> None:
    """Items last touched ``seconds`` ago (with ``values`` set too)."""
    with make_sessionmaker(engine).begin() as s:
        s.execute(
            ITEMS.update()
            .where(ITEMS.c.id.in_(ids))
            .values(updated_at=repo.utcnow() - timedelta(seconds=seconds), **values)
        )


# -- a free tier: take, decide, settle in one transaction --------------------------------
def test_a_rules_visit_settles_matches_and_sends_the_rest_to_the_next_tier(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    texts = [*MATCH, *MISS]
    job_id, ids = make_job(engine, texts)
    by_text = dict(zip(texts, ids, strict=True))

    out = process(rt, Message(Phase.TIER, job_id, 0, ids))

    missed = [by_text[t] for t in MISS]
    assert out == [Message(Phase.TIER, job_id, SMALL, missed)]
    rows = items(engine, ids)
    for text, label in MATCH.items():
        row = rows[by_text[text]]
        assert (row.status, row.label, row.final_tier, row.model_calls) == (
            Status.DONE,
            label,
            "rules",
            0,
        )
    for pk in missed:
        assert (rows[pk].status, rows[pk].tier_index, rows[pk].label) == (Status.PENDING, 1, None)
    # one free attempt row per item, saying how the rules decided
    got = {(a.item_id, a.outcome, a.decision, a.cost_nanos) for a in attempts_of(engine, ids)}
    assert got == {(by_text[t], "rule_match", "accept", 0) for t in MATCH} | {
        (pk, "rule_miss", "escalate", 0) for pk in missed
    }
    assert job_row(engine, job_id).status == JobStatus.RUNNING  # two items still out


def test_a_redelivered_rules_message_does_no_work_twice(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(engine, [*MATCH, *MISS])
    msg = Message(Phase.TIER, job_id, 0, ids)
    process(rt, msg)
    before = attempts_of(engine, ids)

    with structlog.testing.capture_logs() as logs:
        assert process(rt, msg) == []

    assert attempts_of(engine, ids) == before
    assert [e["event"] for e in logs] == ["cascade.batch.nothing_to_do"]


def test_a_rules_visit_that_settles_the_last_item_finishes_the_job(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, list(MATCH))
    with structlog.testing.capture_logs() as logs:
        assert process(rt, Message(Phase.TIER, job_id, 0, ids)) == []
    assert job_row(engine, job_id).status == JobStatus.DONE
    assert "cascade.job.done" in [e["event"] for e in logs]
    assert sent == []


def test_decide_items_gives_each_item_its_rule_verdict_and_next_step(
    runtime: tuple[Runtime, list[Message]], engine: Engine
) -> None:
    rt, _ = runtime
    job_id, _ = make_job(engine, [])
    texts = [*MATCH, MISS[0]]
    work = [WorkItem(100 + n, t, 4) for n, t in enumerate(texts)]
    results, settled = decide_items(rt.engine_for(job_id), 0, work)
    assert [r.pk for r in results] == [100, 101, 102, 103]
    assert [str(s.decision) for s in settled] == ["accept", "accept", "accept", "escalate"]
    assert [s.label for s in settled] == [*MATCH.values(), None]
    assert {s.steps for s in settled} == {5}  # each item's next step after its one rule step


# -- the budget gate ---------------------------------------------------------------------
def _worst(rt: Runtime, job_id: int, text: str, *, chain: bool = False) -> int:
    engine = rt.engine_for(job_id)
    tier = engine.pipeline.tiers[SMALL]
    assert isinstance(tier, ClaudeTier)
    return engine.worst_case_nanos(tier, tier.chain if chain else [tier.primary], text)


def _gate(
    rt: Runtime, msg: Message, **kw: Any
) -> tuple[list[int], list[tuple[int, str, str | None]], str]:
    """Claim ``msg``'s items and gate them: (admitted ids, (held id, verdict, tier)), token."""
    engine = rt.engine_for(msg.job_id)
    tier = engine.pipeline.tiers[msg.tier_index]
    assert isinstance(tier, ClaudeTier)
    got = claim(rt, msg, lease_s=60)
    admitted, held = budget_gate(rt, engine, msg, tier, got.items, **kw)
    return (
        [c.pk for c in admitted],
        [(r.pk, str(r.decision.kind), getattr(r.decision, "tier", None)) for r in held],
        got.token,
    )


def test_no_budget_admits_every_item_and_reports_no_worst_case(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(engine, MISS, tier_index=SMALL)
    worst: dict[int, int] = {}
    admitted, held, _ = _gate(rt, Message(Phase.TIER, job_id, SMALL, ids), worst=worst)
    assert (admitted, held, worst) == (ids, [], {})


def test_the_budget_admits_items_in_order_while_their_worst_case_fits(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    texts = ["short one", "another short one", "a third"]
    job_id, ids = make_job(engine, texts, tier_index=SMALL)
    costs = [_worst(rt, job_id, t) for t in texts]
    # exactly the first two items' worst cases: the boundary admits
    with make_sessionmaker(engine).begin() as s:
        repo.set_budget(s, job_id, costs[0] + costs[1])
    worst: dict[int, int] = {}
    with structlog.testing.capture_logs() as logs:
        admitted, held, _ = _gate(rt, Message(Phase.TIER, job_id, SMALL, ids), worst=worst)
    assert admitted == ids[:2]
    assert worst == {ids[0]: costs[0], ids[1]: costs[1]}
    # no lower tier's answer: the item waits for a larger budget
    assert held == [(ids[2], "hold", None)]
    assert [(e["event"], e["held"], e["admitted"]) for e in logs] == [
        ("cascade.budget.reached", 1, 2)
    ]


def test_what_this_process_has_reserved_counts_against_the_budget(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(engine, ["one item"], tier_index=SMALL)
    cost = _worst(rt, job_id, "one item")
    with make_sessionmaker(engine).begin() as s:
        repo.set_budget(s, job_id, cost)
    msg = Message(Phase.TIER, job_id, SMALL, ids)
    admitted, held, _ = _gate(rt, msg, reserved=1)
    assert (admitted, [h[:2] for h in held]) == ([], [(ids[0], "hold")])


def test_an_item_with_a_lower_tiers_answer_is_capped_with_it(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    job_id, ids = make_job(
        engine, ["the app is slow"], tier_index=SMALL, budget_nanos=0, label="technical",
        confidence=0.4,
    )  # fmt: skip
    admitted, held, _ = _gate(rt, Message(Phase.TIER, job_id, SMALL, ids))
    # credited to the tier below the one the budget stopped it at
    assert (admitted, held) == ([], [(ids[0], "capped", "rules")])


def test_the_fallback_phase_is_gated_on_the_dearest_link_of_the_chain(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, _ = runtime
    text = "my card was charged but the order failed"
    job_id, ids = make_job(engine, [text], tier_index=SMALL, status=Status.FALLBACK)
    primary, chain = _worst(rt, job_id, text), _worst(rt, job_id, text, chain=True)
    assert chain > primary  # the chain's fallback model is the dearer one here
    with make_sessionmaker(engine).begin() as s:
        repo.set_budget(s, job_id, primary)
    admitted, held, _ = _gate(rt, Message(Phase.FALLBACK, job_id, SMALL, ids))
    assert (admitted, [h[:2] for h in held]) == ([], [(ids[0], "hold")])


def test_held_items_settle_at_once_and_a_hold_pauses_the_job(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, ["no answer yet", "has an answer"], tier_index=SMALL)
    with make_sessionmaker(engine).begin() as s:
        s.execute(ITEMS.update().where(ITEMS.c.id == ids[1]).values(label="other", confidence=0.3))
        repo.set_budget(s, job_id, 0)
    msg = Message(Phase.TIER, job_id, SMALL, ids)
    engine_ = rt.engine_for(job_id)
    tier = engine_.pipeline.tiers[SMALL]
    assert isinstance(tier, ClaudeTier)
    got = claim(rt, msg, lease_s=60)
    _, held = budget_gate(rt, engine_, msg, tier, got.items)

    with structlog.testing.capture_logs() as logs:
        assert settle_and_route(rt, msg, tier.name, got.token, held) == []

    rows = items(engine, ids)
    assert rows[ids[0]].status == Status.PAUSED_BUDGET
    assert "budget reached before tier 'small'" in rows[ids[0]].error
    assert (rows[ids[1]].status, rows[ids[1]].label) == (Status.BUDGET_CAPPED, "other")
    job = job_row(engine, job_id)
    assert job.status == JobStatus.PAUSED
    assert "budget reached" in job.message
    assert [e["why"] for e in logs if e["event"] == "cascade.job.paused"] == [rows[ids[0]].error]
    assert sent == []


def test_a_batch_tier_over_budget_settles_its_items_without_submitting(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    """The batch path gates first: nothing to submit, so no batch row and no API call."""
    rt, _ = runtime
    pipeline = PIPELINE.model_dump(mode="json")
    pipeline["tiers"][SMALL]["mode"] = "batch"
    job_id, ids = make_job(
        engine, ["x", "y"], tier_index=SMALL, pipeline=pipeline, budget_nanos=0,
        label="feedback", confidence=0.5,
    )  # fmt: skip
    msg = Message(Phase.TIER, job_id, SMALL, ids)
    assert process(rt, msg) == []
    assert {r.status for r in items(engine, ids).values()} == {Status.BUDGET_CAPPED}
    # every item capped is final: the job is done, and a copy of the message finds nothing
    assert job_row(engine, job_id).status == JobStatus.DONE
    assert process(rt, msg) == []


# -- rescue: items no message carries ------------------------------------------------------
def test_an_embedded_resume_resends_what_an_earlier_process_left(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    texts = [f"ticket {n}" for n in range(9)]
    job_id, ids = make_job(engine, texts)
    rules, small, fallback, leased, done = ids[:4], ids[4:6], ids[6:7], ids[7:8], ids[8:9]
    aged(engine, rules[:3], 30)
    aged(engine, small, 30, tier_index=SMALL)
    aged(engine, fallback, 30, tier_index=SMALL, status=Status.FALLBACK)
    # leased by the process that died: its lease has not run out yet
    until = repo.utcnow() + timedelta(minutes=5)
    aged(engine, leased, 30, status=Status.RUNNING, lease_token="gone", lease_until=until)
    aged(engine, done, 30, status=Status.DONE)
    started = repo.utcnow() - timedelta(seconds=10)
    touched = rules[3:]  # left as made: touched by this process since it started

    count = resend_embedded(rt, job_id, started)

    resent = sorted(i for m in sent for i in m.ids)
    assert count == len(resent) == 7
    assert set(resent) == set(ids) - set(done) - set(touched)
    # one group per tier and phase, in item order, chunked by each visit's batch size
    assert [(m.phase, m.tier_index, m.ids) for m in sent] == [
        (Phase.TIER, 0, rules[:3]),  # the free tier: batches of 3
        (Phase.TIER, 0, leased),
        (Phase.FALLBACK, SMALL, fallback),  # a fallback chain makes calls: batches of 2
        (Phase.TIER, SMALL, small),
    ]
    # the dead process's lease is ended, so the message can claim the item
    assert items(engine, leased)[leased[0]].status == Status.PENDING
    assert items(engine, leased)[leased[0]].lease_token is None


def test_an_embedded_resume_with_nothing_left_sends_nothing(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, _ = make_job(engine, ["a", "b"], status=Status.DONE)
    with structlog.testing.capture_logs() as logs:
        assert resend_embedded(rt, job_id, repo.utcnow()) == 0
    assert sent == []
    assert logs == []


def test_the_distributed_requeue_trusts_a_busy_queue_until_its_items_are_idle(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, [f"t{n}" for n in range(6)])
    at_rules, fresh_small, idle_small = ids[:1], ids[1:2], ids[2:3]
    deferred_recently, deferred_long_ago, done = ids[3:4], ids[4:5], ids[5:6]
    aged(engine, at_rules, 5)
    aged(engine, fresh_small, 5, tier_index=SMALL)
    aged(engine, idle_small, SWEEP_IDLE_S + 10, tier_index=SMALL)
    # a deferred item waits on purpose: up to the deferral cap plus a minute
    cap = rt.settings.defer_cap_s + 60
    aged(engine, deferred_recently, cap - 30, tier_index=SMALL, status=Status.FALLBACK)
    aged(engine, deferred_long_ago, cap + 30, tier_index=SMALL, status=Status.FALLBACK)
    aged(engine, done, cap + 30, status=Status.DONE)

    # the rules queue is empty (its messages were lost); the small tier's holds messages
    depths = {"tier.rules": 0, "tier.small": 4}
    count = requeue_distributed(rt, job_id, depths)

    got = {(m.phase, m.tier_index, i) for m in sent for i in m.ids}
    assert got == {
        (Phase.TIER, 0, at_rules[0]),
        (Phase.TIER, SMALL, idle_small[0]),
        (Phase.FALLBACK, SMALL, deferred_long_ago[0]),
    }
    assert count == 3


def test_a_queue_missing_from_the_depths_counts_as_empty(
    engine: Engine, runtime: tuple[Runtime, list[Message]]
) -> None:
    rt, sent = runtime
    job_id, ids = make_job(engine, ["a", "b"], tier_index=SMALL)
    aged(engine, ids, 5)
    assert requeue_distributed(rt, job_id, {}) == 2
    assert [(m.phase, m.tier_index, m.ids) for m in sent] == [(Phase.TIER, SMALL, ids)]

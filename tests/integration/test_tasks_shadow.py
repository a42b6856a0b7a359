"""Shadow samples after a tier visit, on both databases and the fake Messages API: an
accepted rules answer also goes to the next tier as calibration spend, never changing
the item's outcome or cost; the job's budget can veto a sample (at its worst case, to
the nano); and a sample that breaks is dropped whole while the item goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine

from cascade.fakeapi import FakeServer
from common.settings import Settings
from models import repo
from models.db import make_sessionmaker
from models.repo import NewItem
from tasks import shadow
from tasks.flow import decide_items
from tasks.runtime import Runtime
from workers.decision import Accept
from workers.pipeline import ClaudeTier, load_pipeline
from workers.records import SHADOW, ItemResult, Step, WorkItem
from workers.retry import LeaseLost

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = load_pipeline(ROOT / "examples" / "support_triage.toml")
MATCH = "I forgot my password and cannot sign in"  # the rules answer it: account
MISS = "The checkout page shows a blank screen"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=1, jitter_ms=1, seed=7) as server:
        yield server


@pytest.fixture
def rt(engine: Engine, fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.start())
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged-0123456789")
    runtime = Runtime(
        Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            broker_url="memory://localhost/",
            sweep_every_s=0,
        )
    )
    yield runtime
    runtime.close()


def shadow_job(engine: Engine, rate: float = 1.0, budget_nanos: int | None = None) -> int:
    pipeline = PIPELINE.model_dump(mode="json")
    pipeline["tiers"][0]["shadow_rate"] = rate
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "shadow", pipeline)
        sub = repo.start_submission(s, job_id, "x.jsonl")
        repo.add_items(s, job_id, sub, [NewItem(1, "k1", MATCH, {})])
        repo.set_budget(s, job_id, budget_nanos)
        repo.job_submitted(s, job_id)
    return job_id


def rules_visit(rt: Runtime, job_id: int, text: str) -> tuple[WorkItem, ItemResult]:
    item = WorkItem(11, text, 1)
    [result], _ = decide_items(rt.engine_for(job_id), 0, [item])
    return item, result


def served(fake: FakeServer) -> int:
    return sum(m["calls"] for m in fake.stats()["by_model"].values())


def shadow_steps(result: ItemResult) -> list[Step]:
    return [s for s in result.steps if s.role == SHADOW]


def test_an_accepted_answer_is_also_sent_to_the_next_tier_as_calibration(
    rt: Runtime, engine: Engine, fake: FakeServer
) -> None:
    job_id = shadow_job(engine)
    item, result = rules_visit(rt, job_id, MATCH)
    decision, cost, calls, latency = (
        result.decision,
        result.cost_nanos,
        result.model_calls,
        result.latency_ms,
    )

    rt.run(shadow.add_shadow(rt, job_id, 0, item, result, {}))

    [sample] = shadow_steps(result)
    assert (sample.tier, sample.tier_index, sample.model) == ("small", 1, "claude-haiku-5-5")
    assert sample.outcome == "ok" and sample.cost_nanos > 0
    assert served(fake) == 1
    # the item's own outcome and figures are untouched; the sample is calibration spend
    assert result.decision == decision == Accept("account", 1.0, result.decision.reason)  # type: ignore[union-attr]
    assert (result.cost_nanos, result.model_calls, result.latency_ms) == (cost, calls, latency)
    assert result.calibration_nanos == sample.cost_nanos


@pytest.mark.parametrize(
    ("rate", "tier_index", "text"),
    [
        (0.0, 0, MATCH),  # the tier samples nothing
        (1.0, 0, MISS),  # only accepted answers are samples: an escalation goes on anyway
        (1.0, 2, MATCH),  # the last tier has no next tier to ask
    ],
    ids=["rate-0", "escalated", "last-tier"],
)
def test_no_sample_is_sent_where_there_is_none_to_take(
    rt: Runtime, engine: Engine, fake: FakeServer, rate: float, tier_index: int, text: str
) -> None:
    job_id = shadow_job(engine, rate=rate)
    item, result = rules_visit(rt, job_id, text)
    steps = list(result.steps)
    rt.run(shadow.add_shadow(rt, job_id, tier_index, item, result, {}))
    assert result.steps == steps
    assert served(fake) == 0


@pytest.mark.parametrize(("spare", "sent"), [(0, True), (-1, False)], ids=["fits", "one-short"])
def test_the_budget_must_cover_the_samples_worst_case(
    rt: Runtime, engine: Engine, fake: FakeServer, spare: int, sent: bool
) -> None:
    probe = shadow_job(engine)
    nxt = rt.engine_for(probe).pipeline.tiers[1]
    assert isinstance(nxt, ClaudeTier)
    worst = rt.engine_for(probe).worst_case_nanos(nxt, [nxt.primary], MATCH)
    job_id = shadow_job(engine, budget_nanos=worst + spare)
    item, result = rules_visit(rt, job_id, MATCH)

    rt.run(shadow.add_shadow(rt, job_id, 0, item, result, {}))

    assert len(shadow_steps(result)) == (1 if sent else 0)
    assert served(fake) == (1 if sent else 0)


def test_a_sample_that_breaks_is_dropped_whole_and_the_item_goes_on(
    rt: Runtime, engine: Engine, fake: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = shadow_job(engine)
    item, result = rules_visit(rt, job_id, MATCH)
    own = list(result.steps)

    async def half_done(engine: Any, tier_index: int, items: Any, samples: Any, d: Any) -> None:
        # one step recorded, then a bug
        samples[0].steps.append(Step(item.pk, 2, 1, "small", SHADOW, "anthropic", "m", "ok"))
        raise KeyError("boom")

    monkeypatch.setattr(shadow, "run_shadows", half_done)
    with structlog.testing.capture_logs() as logs:
        rt.run(shadow.add_shadow(rt, job_id, 0, item, result, {}))

    assert result.steps == own
    assert isinstance(result.decision, Accept)
    failed = [e for e in logs if e["event"] == "cascade.shadow.failed"]
    assert [(e["log_level"], e["job_id"], e["tier_index"]) for e in failed] == [
        ("error", job_id, 0)
    ]


def test_a_lost_lease_during_a_sample_is_not_swallowed(
    rt: Runtime, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The item is someone else's now: the pool must stop, not settle it."""
    job_id = shadow_job(engine)
    item, result = rules_visit(rt, job_id, MATCH)

    async def lost(*_: Any) -> None:
        raise LeaseLost()

    monkeypatch.setattr(shadow, "run_shadows", lost)
    with pytest.raises(LeaseLost):
        rt.run(shadow.add_shadow(rt, job_id, 0, item, result, {}))


def test_a_sample_of_a_tier_below_a_free_tier_needs_no_budget(rt: Runtime, engine: Engine) -> None:
    """Rules answering before rules (a pipeline may stack them): free, whatever the budget."""
    pipeline = PIPELINE.model_dump(mode="json")
    rules, *models = pipeline["tiers"]
    first = rules | {"name": "first", "shadow_rate": 1.0}
    pipeline["tiers"] = [first, rules | {"name": "second"}, *models]
    with make_sessionmaker(engine).begin() as s:
        job_id, _ = repo.open_job(s, "stacked", pipeline)
        repo.set_budget(s, job_id, 0)
    item, result = rules_visit(rt, job_id, MATCH)
    assert isinstance(result.decision, Accept)

    rt.run(shadow.add_shadow(rt, job_id, 0, item, result, {}))

    [sample] = shadow_steps(result)
    assert (sample.tier, sample.outcome, sample.cost_nanos) == ("second", "rule_match", 0)

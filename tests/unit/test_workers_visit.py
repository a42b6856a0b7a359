"""One item's visit to one tier (workers/visit.py): serving it, its fallback chain, and
continuing a visit a dead worker began from the rows it left, without paying twice."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from workers.decision import Accept, Defer, Escalate, Fallback, GiveUp
from workers.engine import Engine, RealtimeExecutor
from workers.pipeline import Pipeline, load_pipeline, parse_pipeline
from workers.pricing import PriceTable
from workers.providers.base import (
    ClassifyRequest,
    PermanentError,
    Provider,
    Reply,
    TransientError,
    Usage,
)
from workers.records import ItemResult, Step
from workers.retry import RetryPolicy
from workers.visit import Visit, merged, serve, serve_fallback, shadowed, step_of_row

TRIAGE = Path(__file__).resolve().parents[2] / "examples" / "support_triage.toml"
RULES, SMALL, LARGE = 0, 1, 2
HAIKU, HAIKU_OLD = "claude-haiku-5-5", "claude-haiku-4-5"
SONNET, OPUS = "claude-sonnet-5-5", "claude-opus-5-5"


class ByModel:
    """A Provider whose every model behaves as scripted: an answer or an error.

    ``script[model]`` is ``("ok", label, confidence)``, ``("transient",)``,
    ``("permanent",)`` or ``("refuse",)``; a model not in the script is permanent (404).
    """

    def __init__(self, script: Mapping[str, tuple[Any, ...]]) -> None:
        self.script = dict(script)
        self.calls: list[str] = []

    async def classify(self, request: ClassifyRequest) -> Reply:
        self.calls.append(request.model)
        what = self.script.get(request.model, ("permanent",))
        usage = Usage(input_tokens=500, output_tokens=30)
        if what[0] == "transient":
            raise TransientError("overloaded", status=529)
        if what[0] == "permanent":
            raise PermanentError("model not found", status=404)
        if what[0] == "refuse":
            return Reply("refusal", None, "", usage)
        _, label, confidence = what
        answer = {"label": label, "confidence": confidence, "reason": "About a charge."}
        return Reply("tool_use", answer, "", usage, request_id="req_1")

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return load_pipeline(TRIAGE)


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def engine_for(pipeline: Pipeline, prices: PriceTable, provider: ByModel) -> Engine:
    async def no_sleep(_: float) -> None:
        pass

    def providers(_: str) -> Provider:
        return provider

    executor = RealtimeExecutor(
        providers, RetryPolicy(max_attempts=1), 4, sleep=no_sleep, rng=random.Random(0)
    )
    return Engine(pipeline, prices, executor)


def recorded(
    step: int,
    model: str,
    outcome: str,
    *,
    tier_index: int = SMALL,
    role: str = "primary",
    label: str | None = None,
    confidence: float | None = None,
    error: str | None = None,
) -> Step:
    """A step a dead worker wrote for item 7 before it stopped."""
    return Step(
        item_pk=7,
        step=step,
        tier_index=tier_index,
        tier="small" if tier_index == SMALL else "large",
        role=role,
        provider="anthropic",
        model=model,
        outcome=outcome,
        label=label,
        confidence=confidence,
        usage=Usage(input_tokens=450, output_tokens=25) if outcome == "ok" else Usage(),
        cost_nanos=1234 if outcome in ("ok", "refusal", "malformed") else 0,
        error=error,
    )


def run_serve(engine: Engine, tier: int, visit: Visit) -> ItemResult:
    return asyncio.run(serve(engine, tier, visit, None))


def run_fallback(engine: Engine, tier: int, visit: Visit, max_deferrals: int = 3) -> ItemResult:
    return asyncio.run(serve_fallback(engine, tier, visit, None, max_deferrals))


# -- values -----------------------------------------------------------------------------


def test_step_of_row_reads_an_attempt_row_back_with_nulls_as_zero() -> None:
    row = {
        "item_id": "7",
        "step": 3,
        "tier_index": 1,
        "tier": "small",
        "role": "primary",
        "provider": "anthropic",
        "model": HAIKU,
        "outcome": "transient",
        "label": None,
        "confidence": None,
        "hedged": 0,
        "input_tokens": None,
        "output_tokens": None,
        "cache_write_tokens": None,
        "cache_read_tokens": 12,
        "is_batch": 1,
        "cost_nanos": None,
        "latency_ms": None,
        "http_status": 529,
        "error": "overloaded",
        "request_id": None,
    }

    step = step_of_row(row)

    assert (step.item_pk, step.step, step.tier_index, step.tier) == (7, 3, 1, "small")
    assert (step.role, step.model, step.outcome) == ("primary", HAIKU, "transient")
    assert step.decision is None  # a row's decision is re-taken, never read back
    assert step.usage == Usage(0, 0, 0, 12)
    assert (step.hedged, step.is_batch) == (False, True)
    assert (step.cost_nanos, step.latency_ms, step.http_status) == (0, 0, 529)
    assert (step.error, step.request_id) == ("overloaded", None)


def test_merged_orders_by_step_and_a_new_step_rewrites_the_old_one() -> None:
    old = [recorded(4, HAIKU, "transient"), recorded(2, HAIKU, "transient")]
    new = [recorded(4, HAIKU, "ok", label="billing", confidence=0.9), recorded(5, HAIKU, "ok")]

    out = merged(old, new)

    assert [s.step for s in out] == [2, 4, 5]
    assert out[1].outcome == "ok"  # step 4 as the new visit wrote it


def test_a_visit_continues_after_the_steps_a_dead_worker_wrote() -> None:
    bare = Visit(7, "text", next_step=3)
    after = Visit(
        7, "text", next_step=3, recorded=(recorded(3, HAIKU, "ok"), recorded(5, HAIKU, "ok"))
    )
    behind = Visit(7, "text", next_step=9, recorded=(recorded(3, HAIKU, "ok"),))

    assert bare.work.next_step == 3
    assert after.work.next_step == 6  # one past the highest recorded step
    assert behind.work.next_step == 9  # never goes back below the claimed next step
    assert (after.work.pk, after.work.text) == (7, "text")


def test_shadowed_only_when_a_shadow_step_was_recorded() -> None:
    assert not shadowed(Visit(7, "t", 1, (recorded(1, HAIKU, "ok"),)))
    assert shadowed(
        Visit(7, "t", 1, (recorded(1, HAIKU, "ok"), recorded(2, SONNET, "ok", role="shadow")))
    )


# -- serve ------------------------------------------------------------------------------


def test_serve_on_the_rules_tier_keeps_the_recorded_steps(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({})
    old = recorded(1, "rules", "rule_miss", tier_index=RULES, role="rules")

    result = run_serve(
        engine_for(pipeline, prices, provider), RULES, Visit(7, "I forgot my password", 1, (old,))
    )

    assert result.decision == Accept("account", 1.0, "rule 0 matched")
    assert [s.step for s in result.steps] == [1, 2]  # the rule ran as the next step
    assert provider.calls == []


def test_serve_calls_the_primary_when_nothing_was_recorded(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({HAIKU: ("ok", "billing", 0.95)})

    result = run_serve(engine_for(pipeline, prices, provider), SMALL, Visit(7, "charged twice", 4))

    assert provider.calls == [HAIKU]
    assert result.decision == Accept("billing", 0.95, "About a charge.")
    assert [(s.step, s.model, s.decision) for s in result.steps] == [(4, HAIKU, "accept")]
    assert not result.served_by_fallback


@pytest.mark.parametrize(
    ("old", "expected"),
    [
        # a confident answer is accepted again: nothing is bought twice
        (("ok", "billing", 0.9), Accept),
        # a recorded answer below the tier's 0.8 escalates as a fresh one would
        (("ok", "billing", 0.5), Escalate),
        # a recorded refusal goes down the fallback chain (the tier's on_refusal default)
        (("refusal", None, None), Fallback),
        # an answer outside the structure is escalated (not the last tier)
        (("malformed", None, None), Escalate),
    ],
)
def test_serve_reuses_an_answer_a_dead_worker_paid_for(
    pipeline: Pipeline, prices: PriceTable, old: tuple[Any, ...], expected: type
) -> None:
    provider = ByModel({HAIKU: ("ok", "technical", 0.99)})
    outcome, label, confidence = old
    paid = recorded(4, HAIKU, outcome, label=label, confidence=confidence)

    result = run_serve(
        engine_for(pipeline, prices, provider), SMALL, Visit(7, "charged twice", 4, (paid,))
    )

    assert provider.calls == []  # no second call for the same link
    assert isinstance(result.decision, expected)
    (step,) = result.steps
    assert step.step == 4 and step.decision == result.decision.kind
    assert step.cost_nanos == 1234  # the row keeps what the first worker paid
    if expected is Accept:
        assert result.decision.label == "billing"
        assert "answer of step 4, recorded before its worker stopped" in result.decision.reason
        assert result.baseline_nanos > 0
    else:
        assert result.baseline_nanos == 0


def test_a_recorded_failure_is_not_an_answer_so_the_call_is_made_again(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({HAIKU: ("ok", "billing", 0.95)})
    failed = recorded(4, HAIKU, "transient", error="overloaded")

    result = run_serve(
        engine_for(pipeline, prices, provider), SMALL, Visit(7, "charged twice", 4, (failed,))
    )

    assert provider.calls == [HAIKU]
    assert isinstance(result.decision, Accept)
    assert [(s.step, s.outcome) for s in result.steps] == [(4, "transient"), (5, "ok")]


def test_an_answer_of_another_link_or_tier_is_not_reused(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({HAIKU: ("ok", "billing", 0.95)})
    others = (
        recorded(2, HAIKU_OLD, "ok", role="fallback", label="shipping", confidence=0.99),
        recorded(3, HAIKU, "ok", tier_index=LARGE, label="shipping", confidence=0.99),
    )

    result = run_serve(
        engine_for(pipeline, prices, provider), SMALL, Visit(7, "charged twice", 4, others)
    )

    assert provider.calls == [HAIKU]
    assert isinstance(result.decision, Accept) and result.decision.label == "billing"
    assert [s.step for s in result.steps] == [2, 3, 4]


# -- serve_fallback ---------------------------------------------------------------------


def test_first_time_down_the_chain_skips_the_primary_that_just_failed(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({HAIKU: ("ok", "billing", 0.95), HAIKU_OLD: ("ok", "billing", 0.9)})
    visit = Visit(7, "charged twice", 5, error="transient: overloaded", error_kind="transient")

    result = run_fallback(engine_for(pipeline, prices, provider), SMALL, visit)

    assert provider.calls == [HAIKU_OLD]
    assert result.decision == Accept("billing", 0.9, "About a charge.")
    assert result.served_by_fallback
    assert [(s.model, s.role) for s in result.steps] == [(HAIKU_OLD, "fallback")]


def test_a_deferred_item_tries_its_primary_again_first(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({HAIKU: ("ok", "billing", 0.95), HAIKU_OLD: ("ok", "billing", 0.9)})
    visit = Visit(7, "charged twice", 5, error="transient: overloaded", deferrals=1)

    result = run_fallback(engine_for(pipeline, prices, provider), SMALL, visit)

    assert provider.calls == [HAIKU]  # the primary is back: no fallback was needed
    assert isinstance(result.decision, Accept)
    assert not result.served_by_fallback


def test_a_chain_that_only_fails_for_now_defers_with_every_reason(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({HAIKU: ("transient",), HAIKU_OLD: ("transient",)})
    visit = Visit(7, "charged twice", 5, error="transient: overloaded", error_kind="transient")

    result = run_fallback(engine_for(pipeline, prices, provider), SMALL, visit)

    assert isinstance(result.decision, Defer)
    assert result.decision.n == 1
    assert result.decision.why == (
        "deferred (1/3): no model of tier 'small' could answer: "
        "anthropic:claude-haiku-5-5: transient: overloaded; "
        "anthropic:claude-haiku-4-5: transient: overloaded"
    )
    assert result.steps[-1].decision == "defer"
    assert result.baseline_nanos == 0  # not final: no baseline yet
    assert result.served_by_fallback


def test_a_chain_of_permanent_failures_gives_up_with_a_baseline(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({})  # every model: 404
    visit = Visit(7, "charged twice", 5, error="permanent: model not found", error_kind="permanent")

    result = run_fallback(engine_for(pipeline, prices, provider), SMALL, visit)

    assert isinstance(result.decision, GiveUp)
    assert result.decision.why.startswith("no model of tier 'small' could answer: ")
    assert result.decision.why.endswith("; anthropic:claude-haiku-4-5: permanent: model not found")
    assert result.steps[-1].decision == "fail"
    assert result.baseline_nanos > 0


def test_a_spent_deferral_budget_dead_letters(pipeline: Pipeline, prices: PriceTable) -> None:
    provider = ByModel({HAIKU: ("transient",), HAIKU_OLD: ("transient",)})
    visit = Visit(7, "charged twice", 5, error="transient: overloaded", deferrals=3)

    result = run_fallback(engine_for(pipeline, prices, provider), SMALL, visit, max_deferrals=3)

    assert isinstance(result.decision, GiveUp)
    assert result.decision.why.startswith("dead-lettered after 3 deferrals: ")
    assert provider.calls == [HAIKU, HAIKU_OLD]  # the whole chain, primary first


def test_a_tier_without_fallbacks_says_so(prices: PriceTable) -> None:
    pipeline = parse_pipeline(
        {
            "name": "p",
            "labels": ["billing", "other"],
            "instructions": "Classify.",
            "tiers": [{"name": "only", "kind": "claude", "model": SONNET}],
        }
    )
    provider = ByModel({SONNET: ("permanent",)})
    visit = Visit(7, "charged twice", 2, error=None, error_kind=None)

    result = run_fallback(engine_for(pipeline, prices, provider), 0, visit)

    assert provider.calls == []  # no links to try on a first pass
    assert result.decision == GiveUp(
        "no fallback model is configured for tier 'only': anthropic:claude-sonnet-5-5"
    )
    assert result.steps == []
    assert not result.served_by_fallback


def test_a_fallback_answer_a_dead_worker_paid_for_is_reused(
    pipeline: Pipeline, prices: PriceTable
) -> None:
    provider = ByModel({HAIKU_OLD: ("ok", "technical", 0.99)})
    paid = recorded(6, HAIKU_OLD, "ok", role="fallback", label="billing", confidence=0.85)
    visit = Visit(
        7, "charged twice", 5, recorded=(paid,), error="transient: x", error_kind="transient"
    )

    result = run_fallback(engine_for(pipeline, prices, provider), SMALL, visit)

    assert provider.calls == []
    assert isinstance(result.decision, Accept) and result.decision.label == "billing"
    assert result.served_by_fallback
    assert [(s.step, s.decision) for s in result.steps] == [(6, "accept")]

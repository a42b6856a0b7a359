"""Accept checks (consistency, verifier) and shadow samples: pure functions, pipeline
validation, and the engine with a scripted executor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from workers import quality
from workers.answers import Answer, Malformed, Refused
from workers.decision import (
    Accept,
    CallFailed,
    Escalate,
    Outcome,
    check_consistency,
    check_verdict,
    shadow_sampled,
)
from workers.engine import Engine
from workers.pipeline import ClaudeTier, PipelineError, load_pipeline, parse_pipeline
from workers.pricing import PriceTable
from workers.providers.base import ClassifyRequest, ProviderError, Reply, TransientError, Usage
from workers.records import ItemResult, WorkItem
from workers.retry import Try

TRIAGE = Path(__file__).resolve().parents[2] / "examples" / "support_triage.toml"
QUALITY_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quality_triage.toml"
PRIMARY = Accept("billing", 0.9, "About a charge.")


def ans(label: str, confidence: float = 0.9) -> Answer:
    return Answer(label, confidence, "because", False)


# ------------------------------------------------------------------ pure functions


@pytest.mark.parametrize(
    ("extras", "min_agree", "kept"),
    [
        ([ans("billing")], 1.0, True),  # the one extra answer agrees
        ([ans("technical")], 1.0, False),  # it disagrees
        ([ans("billing"), ans("technical")], 1.0, False),  # all must agree
        ([ans("billing"), ans("technical")], 0.5, True),  # half is enough here
        ([ans("billing"), ans("billing"), ans("other")], 0.67, False),  # 2/3 < 0.67
        ([ans("billing"), ans("billing"), ans("other")], 0.66, True),  # 2/3 >= 0.66
        ([CallFailed("transient", "529")], 1.0, False),  # a check that failed does not pass
        ([Malformed("no json")], 0.0, True),  # min_agree 0 accepts whatever happens
        ([Refused("refusal")], 1.0, False),  # a refusal does not agree
        ([], 1.0, True),  # nothing to check against
    ],
)
def test_check_consistency(extras: list[Outcome], min_agree: float, kept: bool) -> None:
    decision = check_consistency(PRIMARY, extras, min_agree)

    assert isinstance(decision, Accept) is kept
    if kept:
        assert isinstance(decision, Accept)
        assert (decision.label, decision.confidence) == (PRIMARY.label, PRIMARY.confidence)
    else:
        assert isinstance(decision, Escalate)
        assert decision.why.startswith("consistency: ")
        assert f"need {min_agree:.2f}" in decision.why


def test_consistency_reason_names_what_the_others_said() -> None:
    decision = check_consistency(
        PRIMARY, [ans("technical"), CallFailed("breaker_open", "open")], 1.0
    )

    assert isinstance(decision, Escalate)
    assert "0/2 extra answers agree with 'billing'" in decision.why
    assert "technical" in decision.why and "no answer (breaker_open)" in decision.why


@pytest.mark.parametrize(
    ("verdict", "kept", "why"),
    [
        (ans("correct", 0.9), True, ""),  # correct and sure enough
        (ans("correct", 0.7), True, ""),  # the threshold itself passes
        (ans("correct", 0.69), False, "verifier: correct (0.69"),  # correct but unsure
        (ans("incorrect", 0.95), False, "verifier: incorrect (0.95"),  # judged wrong
        (CallFailed("transient", "529"), False, "verifier could not answer: transient"),
        (Refused("refused"), False, "verifier gave no verdict: refused"),
        (Malformed("no json"), False, "verifier gave no verdict: no json"),
    ],
)
def test_check_verdict(verdict: Outcome, kept: bool, why: str) -> None:
    decision = check_verdict(PRIMARY, verdict, 0.7)

    assert isinstance(decision, Accept) is kept
    if not kept:
        assert isinstance(decision, Escalate) and decision.why.startswith(why)


def test_shadow_sampling_is_deterministic_and_near_its_rate() -> None:
    picks = [shadow_sampled(7, pk, 1, 0.25) for pk in range(4000)]

    assert picks == [shadow_sampled(7, pk, 1, 0.25) for pk in range(4000)]  # redelivery
    assert 0.22 < sum(picks) / len(picks) < 0.28
    # another job or tier samples other items
    assert picks != [shadow_sampled(8, pk, 1, 0.25) for pk in range(4000)]
    assert not any(shadow_sampled(7, pk, 1, 0.0) for pk in range(500))
    assert all(shadow_sampled(7, pk, 1, 1.0) for pk in range(500))


# ------------------------------------------------------------------ pipeline validation


def _spec(**small: Any) -> dict[str, Any]:
    return {
        "name": "p",
        "labels": ["billing", "technical", "other"],
        "instructions": "Triage.",
        "tiers": [
            {"name": "rules", "kind": "rules", "rules": [{"pattern": "x", "label": "other"}]},
            {"name": "small", "kind": "claude", "model": "claude-haiku-5-5", **small},
            {"name": "large", "kind": "claude", "model": "claude-sonnet-5-5"},
        ],
    }


def _problems(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(spec)
    return caught.value.problems


def test_quality_options_parse() -> None:
    spec = _spec(
        shadow_rate=0.1,
        accept={
            "min_confidence": 0.8,
            "consistency": {"models": ["claude-haiku-4-5", "bedrock:claude-haiku-5-5"]},
            "verifier": {"model": "claude-haiku-4-5", "min_confidence": 0.75},
        },
    )
    spec["tiers"][0]["shadow_rate"] = 1.0

    pipeline = parse_pipeline(spec)

    small = pipeline.tiers[1]
    assert isinstance(small, ClaudeTier)
    assert small.shadow_rate == 0.1 and pipeline.tiers[0].shadow_rate == 1.0
    assert small.accept.consistency is not None and small.accept.consistency.min_agree == 1.0
    assert [m.key for m in small.accept.consistency.models] == [
        "anthropic:claude-haiku-4-5",
        "bedrock:claude-haiku-5-5",
    ]
    assert small.accept.verifier is not None and small.accept.verifier.min_confidence == 0.75
    assert [m.key for m in small.accept.check_links] == [
        "anthropic:claude-haiku-4-5",
        "bedrock:claude-haiku-5-5",
        "anthropic:claude-haiku-4-5",
    ]


def test_quality_example_loads() -> None:
    pipeline = load_pipeline(QUALITY_EXAMPLE)

    small = pipeline.tiers[1]
    assert isinstance(small, ClaudeTier) and small.shadow_rate > 0
    assert small.accept.verifier is not None


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda s: s["tiers"][2].update(shadow_rate=0.1),
            "tiers[2].shadow_rate: not allowed on the last tier",
        ),
        (
            lambda s: s["tiers"][1].update(shadow_rate=1.5),
            "tiers[1].shadow_rate: Input should be less than or equal to 1",
        ),
        (
            lambda s: s["tiers"][1].update(mode="batch", shadow_rate=0.5),
            'tiers[1].shadow_rate: needs mode = "realtime"',
        ),
        (
            lambda s: s["tiers"][2].update(accept={"verifier": {"model": "claude-haiku-4-5"}}),
            "tiers[2].accept.verifier: not allowed on the last tier",
        ),
        (
            lambda s: s["tiers"][2].update(accept={"consistency": {"models": ["m"]}}),
            "tiers[2].accept.consistency: not allowed on the last tier",
        ),
        (
            lambda s: s["tiers"][1].update(
                mode="batch", accept={"consistency": {"models": ["claude-haiku-4-5"]}}
            ),
            'tiers[1].accept.consistency: needs mode = "realtime"',
        ),
        (
            lambda s: s["tiers"][1].update(accept={"consistency": {"models": []}}),
            "tiers[1].accept.consistency.models: List should have at least 1 item",
        ),
        (
            lambda s: s["tiers"][1].update(
                accept={"consistency": {"models": ["m"], "min_agree": 2}}
            ),
            "tiers[1].accept.consistency.min_agree: Input should be less than or equal to 1",
        ),
        (
            lambda s: s["tiers"][1].update(accept={"verifier": {"model": "m", "extra": 1}}),
            "tiers[1].accept.verifier.extra: unknown key",
        ),
        (
            lambda s: s["tiers"][0].update(accept={"verifier": {"model": "m"}}),
            "tiers[0].accept.verifier: unknown key",
        ),
    ],
)
def test_quality_options_are_validated_with_paths(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    spec = _spec()
    mutate(spec)

    problems = _problems(spec)

    assert any(p.startswith(expected) for p in problems), problems


# ------------------------------------------------------------------ the engine


class ScriptedExecutor:
    """An Executor answering each request from a function of (model, user turn)."""

    def __init__(self, answer: Callable[[ClassifyRequest], Reply | ProviderError]) -> None:
        self.answer = answer
        self.requests: list[ClassifyRequest] = []
        self.transitions: list[Any] = []

    async def execute(
        self, requests: Sequence[ClassifyRequest], *, disabled: Mapping[str, str] | None = None
    ) -> list[list[Try]]:
        out = []
        for request in requests:
            self.requests.append(request)
            got = self.answer(request)
            if isinstance(got, ProviderError):
                out.append([Try(None, got, 5)])
            else:
                out.append([Try(got, None, 10)])
        return out


def reply(label: str, confidence: float = 0.95, tokens: int = 500) -> Reply:
    data = {"label": label, "confidence": confidence, "reason": "Clear."}
    return Reply("tool_use", data, "", Usage(input_tokens=tokens, output_tokens=40), "req")


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def engine_with(
    prices: PriceTable,
    answer: Callable[[ClassifyRequest], Reply | ProviderError],
    **accept: Any,
) -> tuple[Engine, ScriptedExecutor]:
    spec = _spec(accept={"min_confidence": 0.8, **accept})
    executor = ScriptedExecutor(answer)
    return Engine(parse_pipeline(spec), prices, executor), executor


def work(*texts: str) -> list[WorkItem]:
    return [WorkItem(pk=10 + i, text=t, next_step=2) for i, t in enumerate(texts)]


def run(engine: Engine, items: list[WorkItem]) -> list[ItemResult]:
    small = engine.pipeline.tiers[1]
    assert isinstance(small, ClaudeTier)
    return asyncio.run(engine.run_model(1, items, small.primary, role="primary"))


def test_consistency_agreement_accepts_and_its_cost_is_the_items(prices: PriceTable) -> None:
    engine, executor = engine_with(
        prices,
        lambda r: reply("billing"),
        consistency={"models": ["claude-haiku-4-5", "claude-haiku-5-5"]},
    )

    (result,) = run(engine, work("I was charged twice"))

    assert isinstance(result.decision, Accept) and result.decision.label == "billing"
    assert [s.role for s in result.steps] == ["primary", "consistency", "consistency"]
    # side by side, each consistency call takes a block of step numbers (one per try it
    # may make: 3) known before it is sent, so its ledger row is written first
    assert [s.step for s in result.steps] == [2, 3, 6]
    assert [s.model for s in result.steps[1:]] == ["claude-haiku-4-5", "claude-haiku-5-5"]
    assert [s.decision for s in result.steps] == ["accept", None, None]
    assert all(s.tier_index == 1 and s.tier == "small" for s in result.steps)
    assert result.cost_nanos == sum(s.cost_nanos for s in result.steps)
    assert result.steps[1].cost_nanos > 0 and result.model_calls == 3
    assert result.baseline_nanos > 0
    # the extra calls classify the same item with the pipeline's labels
    assert executor.requests[1].user == executor.requests[0].user
    assert executor.requests[1].labels == ("billing", "technical", "other")


def test_consistency_disagreement_escalates_with_the_reason(prices: PriceTable) -> None:
    engine, _ = engine_with(
        prices,
        lambda r: reply("technical" if r.model == "claude-haiku-4-5" else "billing"),
        consistency={"models": ["claude-haiku-4-5"]},
    )

    (result,) = run(engine, work("I was charged twice"))

    assert isinstance(result.decision, Escalate)
    assert "0/1 extra answers agree with 'billing'" in result.decision.why
    primary, extra = result.steps
    assert primary.decision == "escalate" and primary.label == "billing"
    assert extra.role == "consistency" and extra.label == "technical"
    assert extra.error == result.decision.why
    assert result.baseline_nanos == 0  # not final: no baseline yet
    assert result.decided_step is primary  # the tier's own answer is what is kept


def test_checks_are_skipped_when_the_tier_would_not_accept(prices: PriceTable) -> None:
    engine, executor = engine_with(
        prices,
        lambda r: reply("billing", confidence=0.5),
        consistency={"models": ["claude-haiku-4-5"]},
        verifier={"model": "claude-haiku-4-5"},
    )

    (result,) = run(engine, work("hmm"))

    assert isinstance(result.decision, Escalate)
    assert len(executor.requests) == 1 and [s.role for s in result.steps] == ["primary"]


def test_verifier_rejection_escalates_and_is_recorded(prices: PriceTable) -> None:
    def answer(r: ClassifyRequest) -> Reply:
        if r.labels == ("correct", "incorrect"):
            return reply("incorrect" if "twice" in r.user else "correct", 0.9, tokens=700)
        return reply("billing")

    engine, executor = engine_with(prices, answer, verifier={"model": "claude-haiku-4-5"})

    wrong, right = run(engine, work("charged <b>twice</b>", "a refund please"))

    assert isinstance(wrong.decision, Escalate) and wrong.decision.why.startswith(
        "verifier: incorrect (0.90"
    )
    assert [(s.role, s.decision, s.label) for s in wrong.steps] == [
        ("primary", "escalate", "billing"),
        ("verifier", None, "incorrect"),
    ]
    assert isinstance(right.decision, Accept)
    assert [(s.role, s.label) for s in right.steps] == [
        ("primary", "billing"),
        ("verifier", "correct"),
    ]
    assert right.cost_nanos == right.steps[0].cost_nanos + right.steps[1].cost_nanos
    assert right.steps[1].cost_nanos == prices.cost_nanos(
        "claude-haiku-4-5", Usage(input_tokens=700, output_tokens=40)
    )
    # The item is escaped data inside <item>; the proposed label follows it.
    ask = next(r for r in executor.requests if r.labels == ("correct", "incorrect"))
    assert "<item>\ncharged &lt;b&gt;twice&lt;/b&gt;\n</item>" in ask.user
    assert ask.user.endswith("<proposed_label>billing</proposed_label>")
    assert "charged" not in ask.system and "Labels: billing, technical, other." in ask.system


def test_a_failed_verifier_call_escalates(prices: PriceTable) -> None:
    def answer(r: ClassifyRequest) -> Reply | ProviderError:
        if r.labels == ("correct", "incorrect"):
            return TransientError("overloaded", status=529)
        return reply("billing")

    engine, _ = engine_with(prices, answer, verifier={"model": "claude-haiku-4-5"})

    (result,) = run(engine, work("charged"))

    assert isinstance(result.decision, Escalate)
    assert result.decision.why.startswith("verifier could not answer: transient")
    assert result.steps[-1].outcome == "transient" and result.steps[-1].http_status == 529


def test_consistency_then_verifier_in_that_order(prices: PriceTable) -> None:
    def answer(r: ClassifyRequest) -> Reply:
        return reply("correct") if r.labels == ("correct", "incorrect") else reply("billing")

    engine, _ = engine_with(
        prices,
        answer,
        consistency={"models": ["claude-haiku-4-5"]},
        verifier={"model": "claude-sonnet-5-5"},
    )

    (result,) = run(engine, work("charged"))

    assert isinstance(result.decision, Accept)
    assert [s.role for s in result.steps] == ["primary", "consistency", "verifier"]
    assert [s.step for s in result.steps] == [2, 3, 4]


def test_worst_case_counts_the_check_calls(prices: PriceTable) -> None:
    plain, _ = engine_with(prices, lambda r: reply("billing"))
    checked, _ = engine_with(
        prices, lambda r: reply("billing"), verifier={"model": "claude-haiku-4-5"}
    )
    tier_p, tier_c = plain.pipeline.tiers[1], checked.pipeline.tiers[1]
    assert isinstance(tier_p, ClaudeTier) and isinstance(tier_c, ClaudeTier)

    assert checked.worst_case_nanos(tier_c, [tier_c.primary], "x" * 300) > plain.worst_case_nanos(
        tier_p, [tier_p.primary], "x" * 300
    )


def test_shadows_go_to_the_next_tier_and_change_nothing(prices: PriceTable) -> None:
    engine, executor = engine_with(
        prices, lambda r: reply("technical" if r.model == "claude-sonnet-5-5" else "billing")
    )
    items = work("charged", "charged again", "unsure")
    results = run(engine, items)
    before = [(r.decision, r.cost_nanos, r.model_calls, r.latency_ms) for r in results]

    asyncio.run(quality.run_shadows(engine, 1, items, results[:2], None))

    assert [(r.decision, r.cost_nanos, r.model_calls, r.latency_ms) for r in results] == before
    for r in results[:2]:
        primary, shadow = r.steps
        assert (shadow.role, shadow.tier_index, shadow.tier) == ("shadow", 2, "large")
        assert (shadow.model, shadow.decision, shadow.label) == (
            "claude-sonnet-5-5",
            None,
            "technical",
        )
        assert shadow.step == primary.step + 1
        assert r.calibration_nanos == shadow.cost_nanos > 0
        assert r.decided_step is primary
    assert len(results[2].steps) == 1 and results[2].calibration_nanos == 0
    assert [q.model for q in executor.requests[3:]] == ["claude-sonnet-5-5"] * 2


def test_a_failed_shadow_is_recorded_and_changes_nothing(prices: PriceTable) -> None:
    def answer(r: ClassifyRequest) -> Reply | ProviderError:
        if r.model == "claude-sonnet-5-5":
            return TransientError("overloaded", status=529)
        return reply("billing")

    engine, _ = engine_with(prices, answer)
    items = work("charged")
    (result,) = run(engine, items)

    asyncio.run(quality.run_shadows(engine, 1, items, [result], None))

    assert isinstance(result.decision, Accept)
    assert [(s.role, s.outcome) for s in result.steps] == [
        ("primary", "ok"),
        ("shadow", "transient"),
    ]


def test_a_rules_tier_shadows_to_the_next_model_tier(prices: PriceTable) -> None:
    spec = _spec()
    spec["tiers"][0]["shadow_rate"] = 1.0
    engine = Engine(parse_pipeline(spec), prices, ScriptedExecutor(lambda r: reply("other")))
    items = [WorkItem(pk=1, text="x marks", next_step=1), WorkItem(pk=2, text="no", next_step=1)]
    results = engine.run_rules(0, items)

    samples = quality.sampled(engine, 5, 0, results)
    asyncio.run(quality.run_shadows(engine, 0, items, samples, None))

    assert [r.pk for r in samples] == [1]  # only what the rules accepted
    assert [(s.role, s.tier, s.step) for s in results[0].steps] == [
        ("rules", "rules", 1),
        ("shadow", "small", 2),
    ]
    assert results[0].model_calls == 0 and results[0].cost_nanos == 0


def test_the_last_tier_samples_nothing(prices: PriceTable) -> None:
    engine, _ = engine_with(prices, lambda r: reply("billing"))
    results = [ItemResult(1, Accept("billing", 0.9, ""))]

    assert quality.sampled(engine, 1, 2, results) == []
    assert quality.sampled(engine, 1, 1, results) == []  # shadow_rate 0 by default


def test_check_models_must_be_priced(prices: PriceTable) -> None:
    from tasks.submit import check_models_priced

    spec = _spec(
        accept={
            "consistency": {"models": ["claude-haiku-4-5", "claude-nope-1"]},
            "verifier": {"model": "claude-nope-2"},
        }
    )

    problems = check_models_priced(parse_pipeline(spec), prices)

    assert [p.split(":")[0] for p in problems] == [
        "tiers[1].accept.consistency.models[1]",
        "tiers[1].accept.verifier.model",
    ]


def test_unpriced_primary_and_fallbacks_are_named_by_their_place(prices: PriceTable) -> None:
    from tasks.submit import check_models_priced

    spec = _spec(fallbacks=["claude-haiku-4-5", "bedrock:claude-nope-3"])
    spec["tiers"][2]["model"] = "claude-nope-4"

    problems = check_models_priced(parse_pipeline(spec), prices)

    assert problems == [
        "tiers[1].fallbacks[1]: no price for 'claude-nope-3'; add it to a prices file "
        "(CASCADE_PRICES_FILE)",
        "tiers[2].model: no price for 'claude-nope-4'; add it to a prices file "
        "(CASCADE_PRICES_FILE)",
    ]


def test_a_pipeline_is_vetted_once_per_object_and_prices(prices: PriceTable) -> None:
    from tasks import submit

    spec = _spec(fallbacks=["bedrock:claude-nope-3"])
    pipe, same_spec = parse_pipeline(spec), parse_pipeline(spec)

    first = submit._vet(pipe, prices)

    assert submit._vet(pipe, prices) is first  # the same object: checked once
    assert first.problems == submit.check_models_priced(pipe, prices) != []
    assert first.stored == pipe.model_dump(mode="json") == json.loads(first.text)
    assert submit._vet(same_spec, prices) is not first  # another object: its own
    other_prices = PriceTable.load()
    assert submit._vet(pipe, other_prices) is not first

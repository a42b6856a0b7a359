"""The `kind = "local"` tier inside the engine: free, calibrated, escalates when unsure."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from workers.decision import Accept, Escalate
from workers.engine import Engine, RealtimeExecutor
from workers.local import LocalModel
from workers.pipeline import LocalTier, PipelineError, parse_pipeline
from workers.pricing import PriceTable
from workers.records import WorkItem
from workers.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
BILLING = [f"I was charged twice for invoice {n}, please refund the payment" for n in range(30)]
SHIPPING = [f"Where is my parcel {n}? The courier tracking shows no delivery" for n in range(30)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = LocalModel.train(BILLING + SHIPPING, ["billing"] * 30 + ["shipping"] * 30)
    out = tmp_path_factory.mktemp("local")
    model.save(out)
    return out


def _pipeline_data(model_dir: Path) -> dict[str, object]:
    data = tomllib.loads((ROOT / "examples" / "support_triage.toml").read_text())
    local = {
        "name": "local",
        "kind": "local",
        "model_path": str(model_dir),
        "accept": {"min_confidence": 0.8},
    }
    data["tiers"] = [data["tiers"][0], local, *data["tiers"][1:]]
    return data


def test_local_tier_accepts_what_it_is_sure_of_and_escalates_the_rest(model_dir: Path) -> None:
    pipeline = parse_pipeline(_pipeline_data(model_dir))
    assert isinstance(pipeline.tiers[1], LocalTier)
    executor = RealtimeExecutor(lambda _: None, RetryPolicy(), 1)  # type: ignore[arg-type,return-value]
    engine = Engine(pipeline, PriceTable.load(), executor)
    items = [
        WorkItem(1, "Please refund the payment: I was charged twice on my invoice", 3),
        WorkItem(2, "Hello there", 3),
    ]
    sure, unsure = engine.run_local(1, items)
    # a text like its training data: accepted, free, one 'local' step with its version
    assert isinstance(sure.decision, Accept)
    assert sure.decision.label == "billing"
    assert sure.decision.confidence >= 0.8
    assert sure.cost_nanos == 0
    (step,) = sure.steps
    assert (step.role, step.step, step.outcome) == ("local", 3, "ok")
    assert step.model.startswith("local:") and len(step.model) > len("local:")
    assert sure.baseline_nanos > 0
    # a text unlike anything it saw: below 0.8, escalated to the model tiers
    assert isinstance(unsure.decision, Escalate)


def test_a_local_tier_cannot_be_last(model_dir: Path) -> None:
    data = _pipeline_data(model_dir)
    data["tiers"] = data["tiers"][:2]  # type: ignore[index]
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(data)
    assert any("last tier must be a model tier" in p for p in caught.value.problems)


def test_a_rules_tier_shadows_to_a_local_tier_and_changes_nothing(model_dir: Path) -> None:
    import asyncio

    from workers import quality

    data = _pipeline_data(model_dir)
    data["tiers"][0]["shadow_rate"] = 1.0  # type: ignore[index]
    pipeline = parse_pipeline(data)
    executor = RealtimeExecutor(lambda _: None, RetryPolicy(), 1)  # type: ignore[arg-type,return-value]
    engine = Engine(pipeline, PriceTable.load(), executor)
    items = [WorkItem(5, "I forgot my password, and I was charged twice on my invoice", 2)]
    (result,) = engine.run_rules(0, items)
    before = (result.decision, result.cost_nanos, result.model_calls)

    asyncio.run(quality.run_shadows(engine, 0, items, [result], None))

    assert isinstance(result.decision, Accept) and result.decision.label == "account"
    assert (result.decision, result.cost_nanos, result.model_calls) == before
    rule, shadow = result.steps
    assert (shadow.role, shadow.tier_index, shadow.tier, shadow.step) == ("shadow", 1, "local", 3)
    assert shadow.model.startswith("local:")
    assert shadow.decision is None  # a shadow never decides
    assert shadow.label == "billing"  # what the local model would have said
    assert result.decided_step is rule

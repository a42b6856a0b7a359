"""The engine takes its local models from the caller when given (no file read), and
builds each result whole: the baseline is set at construction, only on final answers."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from workers.decision import Accept, Escalate
from workers.engine import Engine, RealtimeExecutor
from workers.pipeline import parse_pipeline
from workers.pricing import PriceTable
from workers.records import WorkItem
from workers.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[2]


class Scripted:
    """A stand-in local model: answers from a table, counts its calls."""

    version = "scripted-1"

    def __init__(self, answers: dict[str, tuple[str, float]]) -> None:
        self.answers = answers
        self.calls = 0

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        self.calls += 1
        return [self.answers[t] for t in texts]


def _engine(model: Scripted) -> Engine:
    data = tomllib.loads((ROOT / "examples" / "support_triage.toml").read_text())
    local = {
        "name": "local",
        "kind": "local",
        "model_path": "/nonexistent/model",  # never read: the model is given
        "accept": {"min_confidence": 0.8},
    }
    data["tiers"] = [data["tiers"][0], local, *data["tiers"][1:]]
    executor = RealtimeExecutor(lambda _: None, RetryPolicy(), 1)  # type: ignore[arg-type,return-value]
    return Engine(
        parse_pipeline(data),
        PriceTable.load(),
        executor,
        local_models={1: model},  # type: ignore[dict-item]
    )


def test_a_given_local_model_serves_the_tier() -> None:
    model = Scripted({"refund me": ("billing", 0.95), "hm": ("shipping", 0.4)})
    engine = _engine(model)
    sure, unsure = engine.run_local(1, [WorkItem(1, "refund me", 2), WorkItem(2, "hm", 2)])
    assert model.calls == 1
    assert isinstance(sure.decision, Accept) and sure.decision.label == "billing"
    assert sure.steps[0].model == "local:scripted-1"
    assert sure.baseline_nanos == engine.baseline(len("refund me"), None) > 0
    assert isinstance(unsure.decision, Escalate)
    assert unsure.baseline_nanos == 0  # not final: no baseline


def test_rules_results_carry_their_baseline_only_when_accepted() -> None:
    engine = _engine(Scripted({}))
    texts = ["I forgot my password", "a plain question"]
    results = engine.run_rules(0, [WorkItem(i, t, 0) for i, t in enumerate(texts)])
    for result in results:
        assert (result.baseline_nanos > 0) == isinstance(result.decision, Accept)
    accepted, missed = results
    assert isinstance(accepted.decision, Accept) and accepted.decision.label == "account"
    assert accepted.baseline_nanos == engine.baseline(len(texts[0]), None)
    assert isinstance(missed.decision, Escalate)

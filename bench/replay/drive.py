"""Run one cascade over the test half through the real engine and the replay server.

The model tiers are :class:`workers.engine.Engine` tiers (``kind = "claude"``)
whose calls go through :class:`workers.engine.RealtimeExecutor`, the retry
policy and :class:`workers.providers.anthropic.AnthropicProvider` (the real
``anthropic`` SDK) to :class:`cascade.fakeapi.replay.ReplayServer` on 127.0.0.1.
Every decision is :func:`workers.decision.decide`. The fallback chain is walked
as ``tasks.flow`` walks it. The local tier is not an engine tier yet, so it runs
here, in-process: :meth:`workers.local.LocalModel.predict` then ``decide``; no
Celery and no database (the ledger is not needed to count cost and accuracy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.replay.data import LABELS
from workers.answers import Answer
from workers.decision import Accept, Escalate, Fallback, decide
from workers.engine import Engine, RealtimeExecutor
from workers.pipeline import AcceptPolicy, ClaudeTier, Pipeline, parse_pipeline
from workers.pricing import PriceTable
from workers.providers.anthropic import AnthropicProvider
from workers.records import WorkItem
from workers.retry import RetryPolicy

INSTRUCTIONS = "Is the legal sentence overruling a precedent? Answer yes or no."


class Predictor(Protocol):
    """A local tier: :class:`workers.local.LocalModel`, or the cross-fitted fold models."""

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]: ...


@dataclass(slots=True)
class RunResult:
    labels: dict[int, str | None] = field(default_factory=dict)  # item -> final label
    tier: dict[int, str] = field(default_factory=dict)  # item -> tier that settled it
    cost_nanos: int = 0
    calls: int = 0

    def accuracy(self, gold: Sequence[str]) -> float:
        return sum(self.labels.get(i) == g for i, g in enumerate(gold)) / len(gold)

    def kept(self, tier: str) -> int:
        return sum(1 for t in self.tier.values() if t == tier)


Threshold = float | Mapping[str, float | str]  # one for every label, or per label


def accept_table(threshold: Threshold) -> dict[str, Any]:
    """``[tiers.accept]`` for one threshold or per-label thresholds ("never" allowed)."""
    if isinstance(threshold, Mapping):
        by_label = dict(threshold)
        return {"min_confidence": 1.0, "reject_hedging": False, "min_confidence_by_label": by_label}
    return {"min_confidence": threshold, "reject_hedging": False}


def pipeline(tiers: Sequence[tuple[str, str, Threshold, Sequence[str]]]) -> Pipeline:
    """Model tiers as (name, recorded model, min_confidence or per label, fallbacks)."""
    last = accept_table(float(tiers[-1][2]) if not isinstance(tiers[-1][2], Mapping) else 0.0)
    return parse_pipeline(
        {
            "name": "overruling-replay",
            "labels": list(LABELS),
            "instructions": INSTRUCTIONS,
            "tiers": [
                {
                    "name": name,
                    "kind": "claude",
                    "model": model,
                    "fallbacks": list(fallbacks),
                    "accept": accept_table(threshold) if i < len(tiers) - 1 else last,
                }
                for i, (name, model, threshold, fallbacks) in enumerate(tiers)
            ],
        },
        "bench.replay",
    )


async def run(
    base_url: str,
    prices: PriceTable,
    pipe: Pipeline,
    texts: Sequence[str],
    local: Predictor | None = None,
    local_min_confidence: Threshold = 1.01,
) -> RunResult:
    result = RunResult()
    waiting = [WorkItem(pk, text, 1) for pk, text in enumerate(texts)]
    if local is not None:
        waiting = _local_tier(result, waiting, local, local_min_confidence)
    provider = AnthropicProvider(api_key="replay", base_url=base_url, timeout_s=30)

    def providers(_: str) -> Any:
        return provider

    engine = Engine(pipe, prices, RealtimeExecutor(providers, RetryPolicy(), concurrency=16))
    try:
        for index in range(len(pipe.tiers)):
            if not waiting:
                break
            waiting = await _model_tier(engine, index, result, waiting, texts)
    finally:
        await provider.aclose()
    return result


def _local_tier(
    result: RunResult, waiting: list[WorkItem], local: Predictor, threshold: Threshold
) -> list[WorkItem]:
    """The local tier in-process: settle what it accepts, return what it escalates."""
    never = not isinstance(threshold, Mapping) and threshold > 1.0
    policy = AcceptPolicy.model_validate(accept_table(1.0 if never else threshold))
    still = []
    predicted = local.predict([item.text for item in waiting])
    for item, (label, conf) in zip(waiting, predicted, strict=True):
        decision = decide(policy, Answer(label, conf, "local", False), is_last=False)
        if isinstance(decision, Accept) and not never:
            result.labels[item.pk], result.tier[item.pk] = label, "local"
        else:
            still.append(WorkItem(item.pk, item.text, 2))
    return still


async def _model_tier(
    engine: Engine, index: int, result: RunResult, waiting: list[WorkItem], texts: Sequence[str]
) -> list[WorkItem]:
    """One model tier, its fallback chain walked as ``tasks.flow`` does; returns escalations."""
    tier = engine.pipeline.tiers[index]
    assert isinstance(tier, ClaudeTier)
    nxt: list[WorkItem] = []
    to_fallback: list[WorkItem] = []
    for res in await engine.run_model(index, waiting, tier.primary, role="primary"):
        result.cost_nanos += res.cost_nanos
        result.calls += res.model_calls
        item = WorkItem(res.pk, texts[res.pk], 1 + len(res.steps))
        if isinstance(res.decision, Accept):
            result.labels[res.pk], result.tier[res.pk] = res.decision.label, tier.name
        elif isinstance(res.decision, Escalate):
            nxt.append(item)
        elif isinstance(res.decision, Fallback):
            to_fallback.append(item)
        else:  # GiveUp: no answer, counted wrong
            result.labels[res.pk], result.tier[res.pk] = None, "failed"
    for link in tier.fallbacks:
        if not to_fallback:
            break
        again = []
        for res in await engine.run_model(index, to_fallback, link, role="fallback"):
            result.cost_nanos += res.cost_nanos
            result.calls += res.model_calls
            if isinstance(res.decision, Accept):
                result.labels[res.pk], result.tier[res.pk] = res.decision.label, tier.name
            else:
                again.append(WorkItem(res.pk, texts[res.pk], 1))
        to_fallback = again
    for item in to_fallback:
        result.labels[item.pk], result.tier[item.pk] = None, "failed"
    return nxt


def run_sync(*args: Any, **kwargs: Any) -> RunResult:
    return asyncio.run(run(*args, **kwargs))

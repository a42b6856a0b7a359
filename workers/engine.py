"""Running one tier over a batch of items: no database, no broker, just values.

The tier task hands claimed items in and gets one :class:`ItemResult` per item
back, with every step (rule evaluation or model call) as a :class:`Step` and the
decision taken. Model calls run concurrently on the caller's event loop, bounded
by a semaphore; the way calls are executed sits behind :class:`Executor`, so a
tier can later run through the Message Batches API instead of one request per item.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import structlog

from workers import quality
from workers.answers import Answer, Malformed
from workers.breaker import Transition
from workers.decision import (
    Accept,
    Capped,
    Decision,
    Defer,
    Escalate,
    Fallback,
    GiveUp,
    Hold,
    Pause,
    decide,
)
from workers.local import LocalModel
from workers.pipeline import ClaudeTier, LocalTier, ModelRef, Pipeline, RulesTier
from workers.pricing import PriceTable
from workers.prompt import system_prompt, user_prompt
from workers.providers.base import (
    BreakerOpenError,
    ClassifyRequest,
    DrillError,
    Mechanism,
    Provider,
    TransientError,
    Usage,
)
from workers.records import ItemResult, Step, WorkItem
from workers.retry import RetryPolicy, Sleep, Try, call_with_retry
from workers.rules import CompiledRules
from workers.stores import BreakerStore

log = structlog.stdlib.get_logger("cascade.engine")

DECISION_NAMES: dict[type, str] = {
    Accept: "accept",
    Escalate: "escalate",
    Fallback: "fallback",
    GiveUp: "fail",
    Defer: "defer",
    Pause: "pause",
    Capped: "capped",
    Hold: "hold",
}
# Output tokens assumed for the baseline when no model call on the item was seen.
BASELINE_OUTPUT_TOKENS = 60


def decision_name(decision: Decision) -> str:
    return DECISION_NAMES[type(decision)]


class Executor(Protocol):
    """Runs the calls of one tier visit (realtime here; Message Batches elsewhere)."""

    async def execute(
        self, requests: Sequence[ClassifyRequest], *, disabled: Mapping[str, str] | None = None
    ) -> list[list[Try]]: ...


def breaker_key(provider: str, model: str) -> str:
    return f"{provider}:{model}"


class RealtimeExecutor:
    """One call per request, concurrently, each guarded by the fleet's circuit breaker.

    ``disabled`` maps breaker keys under a chaos drill to the drill's reason: no call
    is made for them. An open breaker makes no call either. Both come back as a try
    whose error says why, so the decision sends the item down the fallback chain.
    Breaker transitions are kept in ``transitions`` for the caller to log and store.
    """

    def __init__(
        self,
        providers: Callable[[str], Provider],
        policy: RetryPolicy,
        concurrency: int,
        *,
        breakers: BreakerStore | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._providers = providers
        self._policy = policy
        self._sem = asyncio.Semaphore(concurrency)
        self._breakers = breakers
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self.transitions: list[Transition] = []

    async def _one(self, request: ClassifyRequest, disabled: Mapping[str, str]) -> list[Try]:
        key = breaker_key(request.provider, request.model)
        drill = disabled.get(key)
        if drill is not None:
            return [Try(None, DrillError(f"chaos drill on {key}: {drill}"), 0)]
        async with self._sem:
            probe = False
            if self._breakers is not None:
                try:
                    admission = await self._breakers.admit(key, self._clock())
                except Exception as exc:
                    # Fail open: an unreachable breaker store does not stop traffic.
                    log.warning("cascade.breaker.store_error", breaker=key, error=repr(exc))
                else:
                    if admission.transition is not None:
                        self.transitions.append(admission.transition)
                    if not admission.allowed:
                        error = BreakerOpenError(f"circuit breaker open for {key}")
                        return [Try(None, error, 0)]
                    probe = admission.probe
            try:
                provider = self._providers(request.provider)
                tries = await call_with_retry(
                    provider, request, self._policy, sleep=self._sleep, rng=self._rng
                )
            except Exception as exc:
                log.exception("cascade.call.unexpected_error", model=key)
                return [Try(None, TransientError(f"internal error: {type(exc).__name__}"), 0)]
            if self._breakers is not None:
                # Only outages count: a refusal or a malformed answer arrived fine, and a
                # permanent error (a retired model, a bad request) is no outage, so it must
                # not open the breaker and turn into deferrals (issue 21).
                last = tries[-1].error
                ok = last is None or last.kind != "transient"
                try:
                    change = await self._breakers.record(key, self._clock(), ok, probe)
                except Exception as exc:
                    log.warning("cascade.breaker.store_error", breaker=key, error=repr(exc))
                    change = None
                if change is not None:
                    self.transitions.append(change)
            return tries

    async def execute(
        self, requests: Sequence[ClassifyRequest], *, disabled: Mapping[str, str] | None = None
    ) -> list[list[Try]]:
        off = disabled or {}
        return list(await asyncio.gather(*(self._one(r, off) for r in requests)))


class Engine:
    def __init__(self, pipeline: Pipeline, prices: PriceTable, executor: Executor) -> None:
        self.pipeline = pipeline
        self.prices = prices
        self.executor = executor
        self._rules = {
            i: CompiledRules(t) for i, t in enumerate(pipeline.tiers) if isinstance(t, RulesTier)
        }
        self._labels = tuple(pipeline.labels)
        # Loaded per process (engines are built after the fork); a model whose file does
        # not match its manifest is refused by LocalModel.load.
        self._local = {
            i: LocalModel.load(Path(t.model_path))
            for i, t in enumerate(pipeline.tiers)
            if isinstance(t, LocalTier)
        }
        last = pipeline.tiers[-1]
        assert isinstance(last, ClaudeTier)
        self._baseline_model = last.model
        overhead_chars = (
            len(system_prompt(pipeline, "tool"))
            + len(user_prompt(""))
            + 350
            + len(json.dumps(pipeline.labels))
        )
        self._overhead_tokens = math.ceil(overhead_chars / 4)
        self._estimates: dict[int, int] = {}  # prompt tokens -> estimated baseline nano-USD
        self._rule_outcomes: dict[
            int, list[tuple[Decision, str, str, str, str | None, float | None]]
        ] = {}

    # -- baseline ---------------------------------------------------------------
    def baseline(self, text_len: int, usage: Usage | None) -> int:
        """What this item would have cost sent straight to the last tier's primary model."""
        if usage is not None and usage.input_tokens:
            return self.prices.cost_nanos(self._baseline_model, usage)
        tokens = self._overhead_tokens + math.ceil(text_len / 4)
        cost = self._estimates.get(tokens)
        if cost is None:  # a pure function of the token count: computed once per count
            estimate = Usage(input_tokens=tokens, output_tokens=BASELINE_OUTPUT_TOKENS)
            cost = self._estimates[tokens] = self.prices.cost_nanos(self._baseline_model, estimate)
        return cost

    def worst_case_nanos(self, tier: ClaudeTier, links: Sequence[ModelRef], text: str) -> int:
        """The most one call for this item at this tier can cost (budgets check it first).

        Prompt tokens are over-estimated (characters / 3 plus the prompt's fixed part);
        output is the tier's ``max_tokens``; the dearest link of those that may be called.
        """
        prompt = self._overhead_tokens + math.ceil(len(text) / 3)
        checks = sum(  # consistency and verifier calls, made when the tier would accept
            self.prices.max_cost_nanos(link.model, prompt + 20, tier.max_tokens)
            for link in tier.accept.check_links
        )
        return checks + max(
            self.prices.max_cost_nanos(link.model, prompt, tier.max_tokens) for link in links
        )

    # -- rules --------------------------------------------------------------------
    def run_rules(self, tier_index: int, items: Sequence[WorkItem]) -> list[ItemResult]:
        tier = self.pipeline.tiers[tier_index]
        rules = self._rules[tier_index]
        outcomes = self._outcomes(tier_index)
        miss = outcomes[-1]
        results = []
        for item in items:
            hit = rules.match(item.text)
            decision, name, model, outcome, label, confidence = (
                outcomes[hit.index] if hit is not None else miss
            )
            step = Step(
                item.pk,
                item.next_step,
                tier_index,
                tier.name,
                "rules",
                "rules",
                model,
                outcome,
                name,
                label,
                confidence,
            )
            result = ItemResult(item.pk, decision, [step])
            if name == "accept":
                result.baseline_nanos = self.baseline(len(item.text), None)
            results.append(result)
        return results

    def rules_kinds(self, tier_index: int, texts: Sequence[str]) -> list[tuple[int, int]]:
        """Per text, the kind of its :meth:`run_rules` result: (rule index or -1, baseline).

        Two new items of one kind get the same result but for their ids, so a caller
        writing many (``cascade submit``) runs :meth:`run_rules` once per kind.
        """
        rules = self._rules[tier_index]
        accepts = [o[1] == "accept" for o in self._outcomes(tier_index)[:-1]]
        match, baseline = rules.match, self.baseline
        kinds = []
        for text in texts:
            hit = match(text)
            if hit is None:
                kinds.append((-1, 0))
            else:
                i = hit.index
                kinds.append((i, baseline(len(text), None) if accepts[i] else 0))
        return kinds

    def _outcomes(
        self, tier_index: int
    ) -> list[tuple[Decision, str, str, str, str | None, float | None]]:
        """What a rule decides is the same for every item it matches (decisions are
        frozen): built once per rule, not once per item."""
        outcomes = self._rule_outcomes.get(tier_index)
        if outcomes is None:
            outcomes = self._rule_outcomes[tier_index] = self._outcomes_of(tier_index)
        return outcomes

    def _outcomes_of(
        self, tier_index: int
    ) -> list[tuple[Decision, str, str, str, str | None, float | None]]:
        """Per rule, then for no rule: (decision, its name, model, outcome, label, confidence)."""
        tier = self.pipeline.tiers[tier_index]
        assert isinstance(tier, RulesTier)
        out: list[tuple[Decision, str, str, str, str | None, float | None]] = []
        for i, rule in enumerate(tier.rules):
            decision: Decision = (
                Accept(rule.label, rule.confidence, f"rule {i} matched")
                if rule.confidence >= tier.accept.min_confidence
                else Escalate("no rule matched")
            )
            name = decision_name(decision)
            out.append((decision, name, f"rule:{i}", "rule_match", rule.label, rule.confidence))
        out.append((Escalate("no rule matched"), "escalate", "rules", "rule_miss", None, None))
        return out

    # -- local ------------------------------------------------------------------
    def run_local(self, tier_index: int, items: Sequence[WorkItem]) -> list[ItemResult]:
        """The learned tier: free, on this CPU; its calibrated probability is the confidence."""
        tier = self.pipeline.tiers[tier_index]
        assert isinstance(tier, LocalTier)
        model = self._local[tier_index]
        predictions = model.predict([item.text for item in items]) if items else []
        results = []
        for item, (label, confidence) in zip(items, predictions, strict=True):
            reason = f"local model {model.version}"
            judged = (
                Answer(label, confidence, reason, False)
                if label in self._labels
                else Malformed(f"label {label!r} is not one of the labels")
            )
            decision = decide(tier.accept, judged, is_last=False)
            step = Step(
                item_pk=item.pk,
                step=item.next_step,
                tier_index=tier_index,
                tier=tier.name,
                role="local",
                provider="local",
                model=f"local:{model.version}",
                outcome="ok" if isinstance(judged, Answer) else "malformed",
                decision=decision_name(decision),
                label=label,
                confidence=confidence,
            )
            result = ItemResult(item.pk, decision, [step])
            if isinstance(decision, Accept):
                result.baseline_nanos = self.baseline(len(item.text), None)
            results.append(result)
        return results

    # -- model tiers ------------------------------------------------------------
    def mechanism(self, tier: ClaudeTier, model: str) -> Mechanism:
        if tier.structured != "auto":
            return tier.structured
        return self.auto_mechanism(model)

    def auto_mechanism(self, model: str) -> Mechanism:
        """How ``model`` gives a structured answer: the price table's choice, else tool."""
        if self.prices.knows(model):
            found = self.prices.structured(model)
            if found in ("forced_tool", "tool", "json_schema"):
                return found
        return "tool"

    def request(
        self, tier: ClaudeTier, link: ModelRef, text: str, *, mechanism: Mechanism | None = None
    ) -> ClassifyRequest:
        mechanism = mechanism or self.mechanism(tier, link.model)
        return ClassifyRequest(
            provider=link.provider,
            model=link.model,
            system=system_prompt(self.pipeline, mechanism),
            user=user_prompt(text),
            labels=self._labels,
            max_tokens=tier.max_tokens,
            mechanism=mechanism,
        )

    async def run_model(
        self,
        tier_index: int,
        items: Sequence[WorkItem],
        link: ModelRef,
        *,
        role: str,
        disabled: Mapping[str, str] | None = None,
    ) -> list[ItemResult]:
        """Call ``link`` once per item (with retries) and decide each item."""
        tier = self.pipeline.tiers[tier_index]
        assert isinstance(tier, ClaudeTier)
        requests = [self.request(tier, link, item.text) for item in items]
        all_tries = await self.executor.execute(requests, disabled=disabled)
        results = self.results_from_tries(tier_index, items, link, all_tries, role=role)
        # consistency / verifier: extra calls on what the tier would accept
        await quality.apply_checks(self, tier_index, items, results, disabled)
        return results

    def results_from_tries(
        self,
        tier_index: int,
        items: Sequence[WorkItem],
        link: ModelRef,
        all_tries: Sequence[list[Try]],
        *,
        role: str,
        is_batch: bool = False,
    ) -> list[ItemResult]:
        """Decide each item from its calls, however they were made (realtime or a batch)."""
        tier = self.pipeline.tiers[tier_index]
        assert isinstance(tier, ClaudeTier)
        is_last = tier_index == len(self.pipeline.tiers) - 1
        return [
            self._result(tier_index, tier, link, role, item, tries, is_last, is_batch)
            for item, tries in zip(items, all_tries, strict=True)
        ]

    def _result(
        self,
        tier_index: int,
        tier: ClaudeTier,
        link: ModelRef,
        role: str,
        item: WorkItem,
        tries: list[Try],
        is_last: bool,
        is_batch: bool = False,
    ) -> ItemResult:
        steps, outcome = quality.steps_from_tries(
            self,
            item.pk,
            item.next_step,
            tier_index,
            tier.name,
            role,
            link,
            tries,
            self._labels,
            is_batch=is_batch,
        )
        decision: Decision = (
            decide(tier.accept, outcome, is_last=is_last) if tries else GiveUp("no call was made")
        )
        if steps:  # the last try decides the item
            steps[-1] = replace(steps[-1], decision=decision_name(decision))
        final_usage = next((s.usage for s in reversed(steps) if s.outcome == "ok"), None)
        result = ItemResult(item.pk, decision, steps, served_by_fallback=role == "fallback")
        if isinstance(decision, Accept | GiveUp):
            result.baseline_nanos = self.baseline(len(item.text), final_usage)
        return result

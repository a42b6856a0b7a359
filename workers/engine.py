"""Running one tier over a batch of items: no database, no broker, just values.

The tier task hands claimed items in and gets one :class:`ItemResult` per item
back, with every step (rule evaluation or model call) as a :class:`Step` and the
decision taken. Model calls run concurrently on the caller's event loop, bounded
by a semaphore; the way calls are executed sits behind :class:`Executor`, so a
tier can later run through the Message Batches API instead of one request per item.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from common.lifecycle import Outcome as StepOutcome
from common.lifecycle import Role
from workers import quality
from workers.answers import Answer, Malformed
from workers.caching import CachePlan
from workers.decision import Accept, Decision, GiveUp, Review, decide
from workers.engine_calls import BASELINE_OUTPUT_TOKENS, EngineCalls
from workers.executor import Executor, RealtimeExecutor, breaker_key
from workers.local import LocalModel
from workers.pipeline import ClaudeTier, LocalTier, ModelRef, Pipeline, RulesTier
from workers.pricing import PriceTable
from workers.prompt import system_prompt, user_prompt
from workers.providers.base import Usage
from workers.records import ItemResult, Step, WorkItem
from workers.retry import Try
from workers.rules import CompiledRules, RuleOutcome, rule_outcomes

# Where the executor lived before it had its own module; callers still import it here.
__all__ = ["BASELINE_OUTPUT_TOKENS", "Engine", "Executor", "RealtimeExecutor", "breaker_key"]


class Engine(EngineCalls):
    def __init__(
        self,
        pipeline: Pipeline,
        prices: PriceTable,
        executor: Executor,
        *,
        job_id: int = 0,
        tries_per_call: int = 3,
        local_models: Mapping[int, LocalModel] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.prices = prices
        self.executor = executor
        self.job_id = job_id
        self.tries_per_call = tries_per_call
        self._rules = {
            i: CompiledRules(t) for i, t in enumerate(pipeline.tiers) if isinstance(t, RulesTier)
        }
        self._labels = tuple(pipeline.labels)
        # The local tiers' models by tier index, given, or read here from their files
        # (engines are built after the fork; LocalModel.load refuses a file that does not
        # match its manifest).
        self._local = (
            dict(local_models)
            if local_models is not None
            else {
                i: LocalModel.load(Path(t.model_path))
                for i, t in enumerate(pipeline.tiers)
                if isinstance(t, LocalTier)
            }
        )
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
        self.cache = CachePlan(
            lambda m: system_prompt(pipeline, m), self._labels, prices.cache_min_tokens
        )
        self._rule_outcomes: dict[int, list[RuleOutcome]] = {}

    # -- baseline ---------------------------------------------------------------
    def baseline(self, text_len: int, usage: Usage | None) -> int:
        """What this item would have cost sent straight to the last tier's primary model."""
        if usage is not None and usage.input_tokens:
            return self.prices.cost_nanos(self._baseline_model, usage)
        tokens = self._overhead_tokens + math.ceil(text_len / 4)
        cost = self._estimates.get(tokens)
        if cost is None:  # a pure function of the token count: computed once per count
            # priced with the same caching as the job: the last tier's prefix read from
            # the cache when it caches, so the saving against it is not inflated
            cached = min(self._baseline_cached_tokens(), self._overhead_tokens)
            estimate = Usage(
                input_tokens=tokens - cached,
                output_tokens=BASELINE_OUTPUT_TOKENS,
                cache_read_tokens=cached,
            )
            cost = self._estimates[tokens] = self.prices.cost_nanos(self._baseline_model, estimate)
        return cost

    def _baseline_cached_tokens(self) -> int:
        """The prefix tokens a call to the last tier's primary reads from the cache (0: none)."""
        last = self.pipeline.tiers[-1]
        assert isinstance(last, ClaudeTier)
        mechanism = self.mechanism(last, last.model)
        if self.cache.ttl(last, last.model, mechanism) is None:
            return 0
        return self.cache.check(last.model, mechanism).tokens

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
        ttl = tier.ttl if tier.cache == "auto" else None  # a first call writes the prefix
        return checks + max(
            self.prices.max_cost_nanos(link.model, prompt, tier.max_tokens, cache_ttl=ttl)
            for link in links
        )

    # -- rules --------------------------------------------------------------------
    def run_rules(self, tier_index: int, items: Sequence[WorkItem]) -> list[ItemResult]:
        match = self._rules[tier_index].match
        outcomes = self._outcomes(tier_index)
        miss = outcomes[-1]
        said = [
            miss if (hit := match(item.text)) is None else outcomes[hit.index] for item in items
        ]
        return self._free_results(tier_index, "rules", items, said)

    def _free_results(
        self, tier_index: int, role: str, items: Sequence[WorkItem], said: Sequence[RuleOutcome]
    ) -> list[ItemResult]:
        """A free tier's (rules, local) results: one step each, at no cost, and the
        baseline of each item it accepted."""
        tier = self.pipeline.tiers[tier_index].name
        results = []
        for item, s in zip(items, said, strict=True):
            # positional, in Step's field order (item_pk, step, tier_index, tier, role,
            # provider, model, outcome, decision, label, confidence): a rules tier makes
            # one per item, and keywords cost three times as much to pass here
            step = Step(
                item.pk, item.next_step, tier_index, tier, role, role,
                s.model, s.outcome, s.decision.kind, s.label, s.confidence,
            )  # fmt: skip
            accepted = isinstance(s.decision, Accept)
            baseline = self.baseline(len(item.text), None) if accepted else 0
            results.append(ItemResult(item.pk, s.decision, [step], baseline_nanos=baseline))
        return results

    def rules_kinds(self, tier_index: int, texts: Sequence[str]) -> list[tuple[int, int]]:
        """Per text, the kind of its :meth:`run_rules` result: (rule index or -1, baseline).

        Two new items of one kind get the same result but for their ids, so a caller
        writing many (``cascade submit``) runs :meth:`run_rules` once per kind.
        """
        rules = self._rules[tier_index]
        accepts = [isinstance(o.decision, Accept) for o in self._outcomes(tier_index)[:-1]]
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

    def _outcomes(self, tier_index: int) -> list[RuleOutcome]:
        """What a rule decides is the same for every item it matches (decisions are
        frozen): built once per rule, not once per item."""
        outcomes = self._rule_outcomes.get(tier_index)
        if outcomes is None:
            tier = self.pipeline.tiers[tier_index]
            assert isinstance(tier, RulesTier)
            outcomes = self._rule_outcomes[tier_index] = rule_outcomes(tier)
        return outcomes

    # -- local ------------------------------------------------------------------
    def run_local(self, tier_index: int, items: Sequence[WorkItem]) -> list[ItemResult]:
        """The learned tier: free, on this CPU; its calibrated probability is the confidence."""
        tier = self.pipeline.tiers[tier_index]
        assert isinstance(tier, LocalTier)
        model = self._local[tier_index]
        predictions = model.predict([item.text for item in items]) if items else []
        reason, name = f"local model {model.version}", f"local:{model.version}"
        said = []
        for label, confidence in predictions:
            judged = (
                Answer(label, confidence, reason, False)
                if label in self._labels
                else Malformed(f"label {label!r} is not one of the labels")
            )
            ok = isinstance(judged, Answer)
            decision = decide(tier.accept, judged, is_last=False)
            outcome = StepOutcome.OK if ok else StepOutcome.MALFORMED
            said.append(RuleOutcome(decision, name, outcome, label, confidence))
        return self._free_results(tier_index, "local", items, said)

    # -- model tiers (requests and their tags: workers.engine_calls) ---------------
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
        requests = self.requests(tier_index, link, items, role)
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
            self.prices,
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
            decide(tier.accept, outcome, is_last=is_last, on_refusal=tier.on_refusal)
            if tries
            else GiveUp("no call was made")
        )
        if steps:  # the last try decides the item
            steps[-1] = replace(steps[-1], decision=decision.kind)
        final_usage = next((s.usage for s in reversed(steps) if s.outcome == StepOutcome.OK), None)
        final = isinstance(decision, Accept | GiveUp | Review)  # only these have a baseline
        return ItemResult(
            item.pk,
            decision,
            steps,
            baseline_nanos=self.baseline(len(item.text), final_usage) if final else 0,
            served_by_fallback=role == Role.FALLBACK,
        )

"""The part of :class:`workers.engine.Engine` that builds model requests, and what the
checks and shadow samples (:mod:`workers.quality`) need of an engine, written once.

``quality`` cannot import the engine that calls it; it types its engine as
:class:`EngineCalls`, which the engine subclasses, so each signature is written here
and nowhere else.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

from workers.caching import CachePlan
from workers.executor import Executor
from workers.pipeline import ClaudeTier, ModelRef, Pipeline
from workers.pricing import PriceTable
from workers.prompt import system_prompt, user_prompt
from workers.providers.base import CallTag, ClassifyRequest, Mechanism, Usage
from workers.records import ItemResult, WorkItem

# Output tokens assumed for the baseline when no model call on the item was seen.
BASELINE_OUTPUT_TOKENS = 60


class EngineCalls(ABC):
    """Requests to a tier's models, tagged for the ledger, with their cost estimated."""

    pipeline: Pipeline
    prices: PriceTable
    executor: Executor
    cache: CachePlan
    job_id: int
    # step numbers reserved per call (its retries): calls made side by side for one
    # item (consistency checks) each take a block, known before they are sent
    tries_per_call: int
    _labels: tuple[str, ...]
    _overhead_tokens: int  # the prompt's fixed part (instructions, labels, examples)

    @abstractmethod
    def run_rules(self, tier_index: int, items: Sequence[WorkItem]) -> list[ItemResult]: ...

    @abstractmethod
    def run_local(self, tier_index: int, items: Sequence[WorkItem]) -> list[ItemResult]: ...

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
        self,
        tier: ClaudeTier,
        link: ModelRef,
        text: str,
        *,
        mechanism: Mechanism | None = None,
        tag: CallTag | None = None,
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
            tag=tag,
            cache_ttl=self.cache.ttl(tier, link.model, mechanism),
        )

    def tag(
        self,
        item: WorkItem,
        first_step: int,
        tier_index: int,
        role: str,
        model: str,
        max_tokens: int,
    ) -> CallTag:
        """The ledger identity of a call for ``item``, with its cost estimated in advance."""
        return CallTag(
            job_id=self.job_id,
            item_pk=item.pk,
            first_step=first_step,
            tier_index=tier_index,
            tier=self.pipeline.tiers[tier_index].name,
            role=role,
            estimate_nanos=self.estimate_nanos(model, len(item.text), max_tokens),
        )

    def requests(
        self, tier_index: int, link: ModelRef, items: Sequence[WorkItem], role: str
    ) -> list[ClassifyRequest]:
        """One request to ``link`` per item at that tier, tagged from the item's next step."""
        tier = self.pipeline.tiers[tier_index]
        assert isinstance(tier, ClaudeTier)
        return [
            self.request(
                tier,
                link,
                item.text,
                tag=self.tag(item, item.next_step, tier_index, role, link.model, tier.max_tokens),
            )
            for item in items
        ]

    def estimate_nanos(self, model: str, text_len: int, max_tokens: int) -> int:
        """What a call probably cost when its reply was never seen: the prompt at
        characters / 4 plus its fixed part, and a typical answer's output."""
        if not self.prices.knows(model):
            return 0
        usage = Usage(
            input_tokens=self._overhead_tokens + math.ceil(text_len / 4),
            output_tokens=min(max_tokens, BASELINE_OUTPUT_TOKENS),
        )
        return self.prices.cost_nanos(model, usage)

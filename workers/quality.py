"""Quality you can prove: checks before a tier accepts, and shadow samples.

- **Consistency** and **verifier** (a model tier's ``accept.consistency`` and
  ``accept.verifier``): when a tier would accept an answer, other models classify
  the item too, or one judges the proposed label; the pure functions
  :func:`workers.decision.check_consistency` and :func:`~workers.decision.check_verdict`
  keep the answer or escalate the item. Each extra call is a step with role
  ``consistency`` or ``verifier`` at the same tier, and is part of the item's cost.
- **Shadow samples** (a tier's ``shadow_rate``): a deterministic share of the items
  a tier accepted is also sent to the next tier (its primary model, its rules or
  its local model). Those steps have role ``shadow``, the next tier's index and no
  decision; they never change the item's outcome, cost, calls or latency.

Every call goes through the engine's executor (breaker, retries, drills) and never
to a fallback chain: a check that cannot be made escalates, a shadow that cannot
be made is simply recorded as failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from common.lifecycle import Outcome as StepOutcome
from common.lifecycle import Verdict
from workers.answers import Answer, Refused, judge
from workers.decision import (
    VERDICT_LABELS,
    Accept,
    CallFailed,
    Escalate,
    Outcome,
    check_consistency,
    check_verdict,
    shadow_sampled,
)
from workers.engine_calls import EngineCalls
from workers.pipeline import ClaudeTier, Consistency, ModelRef, RulesTier, Verifier
from workers.pricing import PriceTable
from workers.prompt import verifier_system_prompt, verifier_user_prompt
from workers.providers.base import ClassifyRequest
from workers.records import SHADOW, ItemResult, Step, WorkItem
from workers.retry import Try

CONSISTENCY, VERIFIER = "consistency", "verifier"


# what the checks and the shadows need of :class:`workers.engine.Engine` (its base class,
# so that this module does not import the engine that calls it)
Engine = EngineCalls


def steps_from_tries(
    prices: PriceTable,
    item_pk: int,
    first_step: int,
    tier_index: int,
    tier: str,
    role: str,
    link: ModelRef,
    tries: Sequence[Try],
    labels: Sequence[str],
    *,
    is_batch: bool = False,
) -> tuple[list[Step], Outcome]:
    """One step per try, deciding nothing; and what the last try amounted to."""
    steps: list[Step] = []
    outcome: Outcome = CallFailed(StepOutcome.TRANSIENT, "no call was made")
    for n, attempt in enumerate(tries):
        label = confidence = error = None
        hedged = False
        if attempt.reply is not None:
            judged = judge(attempt.reply, tuple(labels))
            outcome = judged
            usage, status, request_id = attempt.reply.usage, None, attempt.reply.request_id
            if isinstance(judged, Answer):
                result: str = StepOutcome.OK  # the step's outcome
                label, confidence, hedged = judged.label, judged.confidence, judged.hedged
            else:
                result = (
                    StepOutcome.REFUSAL if isinstance(judged, Refused) else StepOutcome.MALFORMED
                )
                error = judged.detail
        else:
            assert attempt.error is not None
            exc = attempt.error
            usage, result, error = exc.usage, exc.kind, exc.message[:500]
            status, request_id = exc.status, exc.request_id
            outcome = CallFailed(exc.kind, error)
        steps.append(
            Step(
                item_pk=item_pk,
                step=first_step + n,
                tier_index=tier_index,
                tier=tier,
                role=role,
                provider=link.provider,
                model=link.model,
                outcome=result,
                label=label,
                confidence=confidence,
                hedged=hedged,
                usage=usage,
                is_batch=is_batch,
                cost_nanos=prices.cost_nanos(link.model, usage, batch=is_batch),
                latency_ms=attempt.latency_ms,
                http_status=status,
                error=error,
                request_id=request_id,
            )
        )
    return steps, outcome


def _next_step(item: WorkItem, result: ItemResult) -> int:
    return max(item.next_step, *(s.step + 1 for s in result.steps))


# -- checks before accepting --------------------------------------------------------
async def apply_checks(
    engine: Engine,
    tier_index: int,
    items: Sequence[WorkItem],
    results: list[ItemResult],
    disabled: Mapping[str, str] | None,
) -> None:
    """Run the tier's consistency and verifier checks on the items it would accept.

    A failed check turns the decision into an escalation: the step that carried
    ``accept`` now carries ``escalate`` and the last check step holds the reason.
    """
    tier = engine.pipeline.tiers[tier_index]
    assert isinstance(tier, ClaudeTier)
    policy = tier.accept
    if policy.consistency is None and policy.verifier is None:
        return
    checks = _Checks(engine, tier_index, tier, {item.pk: item for item in items}, disabled)
    if policy.consistency is not None and (todo := _accepted(results)):
        await checks.consistency(policy.consistency, todo)
    if policy.verifier is not None and (todo := _accepted(results)):
        await checks.verifier(policy.verifier, todo)


def _accepted(results: Sequence[ItemResult]) -> list[ItemResult]:
    return [r for r in results if isinstance(r.decision, Accept)]


def _settle_check(result: ItemResult, decision: Accept | Escalate, new: list[Step]) -> None:
    """Record a check's steps and its effect on the decision."""
    decided = result.decided_step
    result.decision = decision
    if isinstance(decision, Escalate):
        result.baseline_nanos = 0  # only a final outcome has a baseline
        if new:
            new[-1] = replace(new[-1], error=decision.why)
        if decided is not None:
            at = result.steps.index(decided)
            result.steps[at] = replace(decided, decision=Verdict.ESCALATE)
    result.steps.extend(new)


@dataclass(frozen=True, slots=True)
class _Checks:
    """The checks of one tier visit, on the results it would accept (``todo``)."""

    engine: Engine
    tier_index: int
    tier: ClaudeTier
    items: Mapping[int, WorkItem]
    disabled: Mapping[str, str] | None

    def next_step(self, result: ItemResult) -> int:
        return _next_step(self.items[result.pk], result)

    async def consistency(self, check: Consistency, todo: list[ItemResult]) -> None:
        engine, tier_index, tier, items = self.engine, self.tier_index, self.tier, self.items
        links = check.models
        block = engine.tries_per_call  # side by side: each link's tries take their own block
        requests = [
            engine.request(
                tier,
                link,
                items[r.pk].text,
                mechanism=engine.auto_mechanism(link.model),
                tag=engine.tag(
                    items[r.pk],
                    self.next_step(r) + j * block,
                    tier_index,
                    CONSISTENCY,
                    link.model,
                    tier.max_tokens,
                ),
            )
            for r in todo
            for j, link in enumerate(links)
        ]
        all_tries = await engine.executor.execute(requests, disabled=self.disabled)
        for i, result in enumerate(todo):
            first = self.next_step(result)
            new: list[Step] = []
            outcomes: list[Outcome] = []
            for j, link in enumerate(links):
                tries = all_tries[i * len(links) + j]
                steps, outcome = steps_from_tries(
                    engine.prices, result.pk, first + j * block, tier_index, tier.name,
                    CONSISTENCY, link, tries, engine.pipeline.labels,
                )  # fmt: skip
                new += steps
                outcomes.append(outcome)
            assert isinstance(result.decision, Accept)
            decision = check_consistency(result.decision, outcomes, check.min_agree)
            _settle_check(result, decision, new)

    async def verifier(self, check: Verifier, todo: list[ItemResult]) -> None:
        engine, tier_index = self.engine, self.tier_index
        link = check.ref
        mechanism = engine.auto_mechanism(link.model)
        system = verifier_system_prompt(engine.pipeline, mechanism)
        requests = []
        for r in todo:
            assert isinstance(r.decision, Accept)
            item = self.items[r.pk]
            requests.append(
                ClassifyRequest(
                    provider=link.provider,
                    model=link.model,
                    system=system,
                    user=verifier_user_prompt(item.text, r.decision.label),
                    labels=VERDICT_LABELS,
                    max_tokens=check.max_tokens,
                    mechanism=mechanism,
                    tag=engine.tag(
                        item, self.next_step(r), tier_index, VERIFIER, link.model, check.max_tokens
                    ),
                )
            )
        all_tries = await engine.executor.execute(requests, disabled=self.disabled)
        for result, tries in zip(todo, all_tries, strict=True):
            steps, verdict = steps_from_tries(
                engine.prices, result.pk, self.next_step(result), tier_index, self.tier.name,
                VERIFIER, link, tries, VERDICT_LABELS,
            )  # fmt: skip
            assert isinstance(result.decision, Accept)
            _settle_check(
                result, check_verdict(result.decision, verdict, check.min_confidence), steps
            )


# -- shadow samples -----------------------------------------------------------------
def sampled(
    engine: Engine, job_id: int, tier_index: int, results: Sequence[ItemResult]
) -> list[ItemResult]:
    """The accepted results of this tier visit that are shadow samples."""
    tiers = engine.pipeline.tiers
    if tier_index >= len(tiers) - 1:
        return []
    rate = tiers[tier_index].shadow_rate
    return [
        r
        for r in results
        if isinstance(r.decision, Accept) and shadow_sampled(job_id, r.pk, tier_index, rate)
    ]


async def run_shadows(
    engine: Engine,
    tier_index: int,
    items: Sequence[WorkItem],
    samples: Sequence[ItemResult],
    disabled: Mapping[str, str] | None,
) -> None:
    """Send the sampled items to the next tier; append its steps as role ``shadow``.

    The next tier's primary model only (never its fallbacks), its rules or its local
    model. Nothing here changes a result's decision.
    """
    if not samples:
        return
    nxt = tier_index + 1
    tier = engine.pipeline.tiers[nxt]
    by_pk = {item.pk: item for item in items}
    work = [WorkItem(r.pk, by_pk[r.pk].text, _next_step(by_pk[r.pk], r)) for r in samples]
    if isinstance(tier, ClaudeTier):
        link = tier.primary
        requests = engine.requests(nxt, link, work, SHADOW)
        all_tries = await engine.executor.execute(requests, disabled=disabled)
        for result, w, tries in zip(samples, work, all_tries, strict=True):
            steps, _ = steps_from_tries(
                engine.prices, w.pk, w.next_step, nxt, tier.name, SHADOW, link, tries,
                engine.pipeline.labels,
            )  # fmt: skip
            result.steps.extend(steps)
        return
    below = (
        engine.run_rules(nxt, work) if isinstance(tier, RulesTier) else engine.run_local(nxt, work)
    )
    for result, seen in zip(samples, below, strict=True):
        result.steps.extend(replace(s, role=SHADOW, decision=None) for s in seen.steps)

"""One item's visit to one tier, on its own: the unit the worker pool runs and settles.

An item is served as soon as it is claimed and decided as soon as its own calls
(and checks) are done, whatever the other items of its broker message are doing.
A visit that a dead worker began is continued, not redone: the rows it left
(``recorded``) are part of this visit's steps, and an answer among them is used
instead of buying it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from common.lifecycle import ANSWERED, Outcome, Role
from workers import quality
from workers.answers import Answer, Judged, Malformed, Refused
from workers.decision import Accept, Fallback, GiveUp, after_chain, decide
from workers.engine import Engine
from workers.pipeline import ClaudeTier, LocalTier, ModelRef, RulesTier
from workers.providers.base import Usage
from workers.records import SHADOW, ItemResult, Step, WorkItem

PRIMARY, FALLBACK = Role.PRIMARY, Role.FALLBACK


@dataclass(frozen=True, slots=True)
class Visit:
    """An item claimed for a tier (or its fallback chain), with what a dead worker left."""

    pk: int
    text: str
    next_step: int
    recorded: tuple[Step, ...] = ()
    error: str | None = None  # why the item was handed to the fallback chain
    error_kind: str | None = None  # the outcome of the call that failed (None: an answer)
    deferrals: int = 0
    label: str | None = None  # the answer of the tier below, if it escalated with one

    @property
    def work(self) -> WorkItem:
        return WorkItem(self.pk, self.text, self._after_recorded())

    def _after_recorded(self) -> int:
        return max([self.next_step, *(s.step + 1 for s in self.recorded)])


def step_of_row(row: Mapping[str, Any]) -> Step:
    """An attempt row, back as the step it was written from."""
    return Step(
        item_pk=int(row["item_id"]),
        step=int(row["step"]),
        tier_index=int(row["tier_index"]),
        tier=str(row["tier"]),
        role=str(row["role"]),
        provider=str(row["provider"]),
        model=str(row["model"]),
        outcome=str(row["outcome"]),
        decision=None,
        label=row["label"],
        confidence=row["confidence"],
        hedged=bool(row["hedged"]),
        usage=Usage(
            input_tokens=int(row["input_tokens"] or 0),
            output_tokens=int(row["output_tokens"] or 0),
            cache_write_tokens=int(row["cache_write_tokens"] or 0),
            cache_read_tokens=int(row["cache_read_tokens"] or 0),
        ),
        is_batch=bool(row["is_batch"]),
        cost_nanos=int(row["cost_nanos"] or 0),
        latency_ms=int(row["latency_ms"] or 0),
        http_status=row["http_status"],
        error=row["error"],
        request_id=row["request_id"],
    )


def _judged(step: Step) -> Judged:
    if step.outcome == Outcome.OK and step.label is not None and step.confidence is not None:
        reason = f"answer of step {step.step}, recorded before its worker stopped"
        return Answer(step.label, step.confidence, reason, step.hedged)
    if step.outcome == Outcome.REFUSAL:
        return Refused(step.error or "refused")
    return Malformed(step.error or "malformed answer")


def _recorded_answer(visit: Visit, tier_index: int, role: str, model: str) -> Step | None:
    """The last answer of this visit's call that a dead worker already paid for."""
    for s in reversed(visit.recorded):
        if s.tier_index == tier_index and s.role == role and s.model == model:
            return s if s.outcome in ANSWERED else None
    return None


async def serve(
    engine: Engine, tier_index: int, visit: Visit, disabled: Mapping[str, str] | None
) -> ItemResult:
    """The tier's own work on one item: rules, the local model, or its primary model."""
    tier = engine.pipeline.tiers[tier_index]
    if isinstance(tier, RulesTier):
        result = engine.run_rules(tier_index, [visit.work])[0]
    elif isinstance(tier, LocalTier):
        result = engine.run_local(tier_index, [visit.work])[0]
    else:
        result = await _call(engine, tier_index, visit, tier, tier.primary, disabled, role=PRIMARY)
    result.steps = merged(visit.recorded, result.steps)
    return result


def merged(old: Sequence[Step], new: Sequence[Step]) -> list[Step]:
    """Steps by number: a step of ``new`` replaces the one of ``old`` it rewrites."""
    by_step = {s.step: s for s in old}
    by_step.update((s.step, s) for s in new)
    return [by_step[n] for n in sorted(by_step)]


async def _call(
    engine: Engine,
    tier_index: int,
    visit: Visit,
    tier: ClaudeTier,
    link: ModelRef,
    disabled: Mapping[str, str] | None,
    *,
    role: str,
) -> ItemResult:
    """One link of the tier for the item: its recorded answer if it has one, else a call."""
    paid = _recorded_answer(visit, tier_index, role, link.model)
    if paid is None:
        [result] = await engine.run_model(
            tier_index, [visit.work], link, role=role, disabled=disabled
        )
        return result
    is_last = tier_index == len(engine.pipeline.tiers) - 1
    decision = decide(tier.accept, _judged(paid), is_last=is_last)
    decided = replace(paid, decision=decision.kind)
    result = ItemResult(visit.pk, decision, [decided], served_by_fallback=role == FALLBACK)
    if isinstance(decision, Accept | GiveUp):
        usage = paid.usage if paid.outcome == Outcome.OK else None
        result.baseline_nanos = engine.baseline(len(visit.text), usage)
    # checks (consistency, verifier) run as for a fresh answer, numbered after the rows
    await quality.apply_checks(engine, tier_index, [visit.work], [result], disabled)
    return result


async def serve_fallback(
    engine: Engine,
    tier_index: int,
    visit: Visit,
    disabled: Mapping[str, str] | None,
    max_deferrals: int,
) -> ItemResult:
    """Serve what the tier's primary could not: its fallback models in order.

    An item deferred before tries the whole chain again, primary first (it may be
    back). When every link fails, the item is deferred while any failure may pass
    with time (transient, breaker open, drill), else — or once its deferral budget
    is spent — it is dead-lettered with every reason recorded.
    """
    tier = engine.pipeline.tiers[tier_index]
    assert isinstance(tier, ClaudeTier)
    links = tier.chain if visit.deferrals > 0 else tier.fallbacks
    reasons = [f"{tier.primary.key}: {visit.error}" if visit.error else tier.primary.key]
    kinds = [visit.error_kind or "answer"]
    steps: list[Step] = list(visit.recorded)
    by_fallback = False
    for link in links:
        role = PRIMARY if link == tier.primary else FALLBACK
        by_fallback = by_fallback or role == FALLBACK
        now = Visit(visit.pk, visit.text, visit.next_step, tuple(steps))
        res = await _call(engine, tier_index, now, tier, link, disabled, role=role)
        steps = merged(steps, res.steps)
        if not isinstance(res.decision, Fallback):
            res.steps = steps
            res.served_by_fallback = by_fallback
            return res
        reasons.append(f"{link.key}: {res.decision.why}")
        kinds.append(res.steps[-1].outcome if res.steps else "answer")
    tried = "; ".join(reasons)
    why = (
        f"no model of tier {tier.name!r} could answer: {tried}"
        if tier.fallbacks
        else f"no fallback model is configured for tier {tier.name!r}: {tried}"
    )
    decision = after_chain(kinds, visit.deferrals, max_deferrals, why)
    result = ItemResult(visit.pk, decision, steps, served_by_fallback=by_fallback)
    if isinstance(decision, GiveUp):
        result.baseline_nanos = engine.baseline(len(visit.text), None)
    if steps:
        steps[-1] = replace(steps[-1], decision=decision.kind)
    return result


def shadowed(visit: Visit) -> bool:
    """Whether a dead worker already sent this item's shadow sample."""
    return any(s.role == SHADOW for s in visit.recorded)

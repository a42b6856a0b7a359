"""What a tier task and the fallback task do, apart from Celery: claim, run, settle, route.

Returns the messages to publish instead of publishing them, so the flow is
testable and messages go out only after the database has committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from common.logs import get_logger
from models import repo
from models.repo import Claimed, Settled
from tasks.runtime import Runtime
from workers.decision import Escalate, Fallback, GiveUp
from workers.engine import Engine, decision_name
from workers.pipeline import ClaudeTier, RulesTier
from workers.records import ItemResult, WorkItem

log = get_logger("cascade.flow")


@dataclass(frozen=True, slots=True)
class Message:
    phase: str  # tier | fallback
    job_id: int
    tier_index: int
    ids: list[int]


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def _attempt_rows(job_id: int, results: Sequence[ItemResult]) -> list[dict[str, Any]]:
    return [
        {
            "job_id": job_id,
            "item_id": s.item_pk,
            "step": s.step,
            "tier_index": s.tier_index,
            "tier": s.tier,
            "role": s.role,
            "provider": s.provider,
            "model": s.model,
            "outcome": s.outcome,
            "decision": s.decision,
            "label": s.label,
            "confidence": s.confidence,
            "hedged": s.hedged,
            "input_tokens": s.usage.input_tokens,
            "output_tokens": s.usage.output_tokens,
            "cache_write_tokens": s.usage.cache_write_tokens,
            "cache_read_tokens": s.usage.cache_read_tokens,
            "is_batch": s.is_batch,
            "cost_nanos": s.cost_nanos,
            "latency_ms": s.latency_ms,
            "http_status": s.http_status,
            "error": s.error,
            "request_id": s.request_id,
        }
        for r in results
        for s in r.steps
    ]


def _settled(tier_index: int, tier: str, result: ItemResult) -> Settled:
    d = result.decision
    label = getattr(d, "label", None)
    return Settled(
        pk=result.pk,
        decision=decision_name(d),
        tier_index=tier_index,
        tier=tier,
        steps=len(result.steps),
        model_calls=result.model_calls,
        cost_nanos=result.cost_nanos,
        latency_ms=result.latency_ms,
        fallback_used=result.served_by_fallback,
        baseline_nanos=result.baseline_nanos,
        label=label,
        confidence=getattr(d, "confidence", None),
        reason=getattr(d, "reason", None),
        error=None if label else getattr(d, "why", None),
    )


def _run_fallback_chain(
    rt: Runtime, engine: Engine, tier_index: int, claimed: Sequence[Claimed]
) -> list[ItemResult]:
    """Try the tier's fallback models in order for items its primary could not serve."""
    tier = engine.pipeline.tiers[tier_index]
    assert isinstance(tier, ClaudeTier)
    waiting = {c.pk: WorkItem(c.pk, c.text, c.steps) for c in claimed}
    merged: dict[int, ItemResult] = {}
    primary = tier.primary.key
    reasons = {c.pk: [f"{primary}: {c.error}" if c.error else primary] for c in claimed}
    for link in tier.fallbacks:
        if not waiting:
            break
        results = rt.run(
            engine.run_model(tier_index, list(waiting.values()), link, role="fallback")
        )
        for res in results:
            prior = merged.get(res.pk)
            if prior is not None:
                res.steps = prior.steps + res.steps
            merged[res.pk] = res
            if isinstance(res.decision, Fallback):
                reasons[res.pk].append(f"{link.key}: {res.decision.why}")
                item = waiting[res.pk]
                waiting[res.pk] = WorkItem(item.pk, item.text, item.next_step + len(res.steps))
            else:
                del waiting[res.pk]
    for pk, item in waiting.items():
        tried = "; ".join(reasons[pk])
        why = (
            f"no model of tier {tier.name!r} could answer: {tried}"
            if tier.fallbacks
            else f"no fallback model is configured for tier {tier.name!r}: {tried}"
        )
        res = merged.get(pk) or ItemResult(pk, GiveUp(why))
        res.decision = GiveUp(why)
        res.baseline_nanos = engine.baseline(len(item.text), None)
        if res.steps:
            res.steps[-1] = replace(res.steps[-1], decision="fail")
        merged[pk] = res
    return list(merged.values())


def process(rt: Runtime, msg: Message) -> list[Message]:
    """Claim, run and settle one batch. Returns the follow-up messages to publish."""
    token = repo.new_token()
    with rt.sessions.begin() as session:
        claimed = repo.claim(
            session,
            msg.job_id,
            msg.tier_index,
            msg.ids,
            phase=msg.phase,
            token=token,
            lease_s=rt.settings.lease_seconds,
        )
    if not claimed:
        log.info("cascade.batch.nothing_to_do", job_id=msg.job_id, tier_index=msg.tier_index)
        return []
    engine = rt.engine_for(msg.job_id)
    tier = engine.pipeline.tiers[msg.tier_index]
    structlog.contextvars.bind_contextvars(job_id=msg.job_id, tier=tier.name, phase=msg.phase)
    items = [WorkItem(c.pk, c.text, c.steps) for c in claimed]
    if msg.phase == "fallback":
        results = _run_fallback_chain(rt, engine, msg.tier_index, claimed)
    elif isinstance(tier, RulesTier):
        results = engine.run_rules(msg.tier_index, items)
    else:
        results = rt.run(engine.run_model(msg.tier_index, items, tier.primary, role="primary"))
    out = settle_and_route(rt, msg, tier.name, token, results)
    structlog.contextvars.unbind_contextvars("job_id", "tier", "phase")
    return out


def settle_and_route(
    rt: Runtime, msg: Message, tier_name: str, token: str, results: Sequence[ItemResult]
) -> list[Message]:
    """Write the results of a tier visit under the claim's token; return the follow-ups.

    Shared by every way a tier can run (realtime calls, rules, a collected Message Batch).
    """
    settled = [_settled(msg.tier_index, tier_name, r) for r in results]
    with rt.sessions.begin() as session:
        kept = repo.settle(session, token, _attempt_rows(msg.job_id, results), settled)
    escalated = [s.pk for s in kept if s.decision == "escalate"]
    to_fallback = [s.pk for s in kept if s.decision == "fallback"]
    counts = {
        d: sum(1 for s in kept if s.decision == d)
        for d in ("accept", "escalate", "fallback", "fail")
    }
    log.info(
        "cascade.batch.settled", items=len(kept), lost_lease=len(settled) - len(kept), **counts
    )
    for r in results:
        if isinstance(r.decision, Escalate):
            log.debug("cascade.item.escalated", item=r.pk, why=r.decision.why)
        elif isinstance(r.decision, GiveUp):
            log.warning("cascade.item.failed", item=r.pk, why=r.decision.why)
    size = rt.settings.batch_size
    out = [Message("tier", msg.job_id, msg.tier_index + 1, c) for c in chunks(escalated, size)]
    out += [Message("fallback", msg.job_id, msg.tier_index, c) for c in chunks(to_fallback, size)]
    if not out:
        with rt.sessions.begin() as session:
            if repo.finish_job_if_done(session, msg.job_id):
                log.info("cascade.job.done", job_id=msg.job_id)
    return out

"""A tier visit's results as ledger rows: one attempt row per step, one settle per item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.attempt_rows import attempt_row
from models.ledger import Settled
from workers.decision import Capped, Escalate, Fallback
from workers.records import ItemResult, Step


def step_row(job_id: int, s: Step) -> dict[str, Any]:
    return attempt_row(
        job_id=job_id,
        item_id=s.item_pk,
        step=s.step,
        tier_index=s.tier_index,
        tier=s.tier,
        role=s.role,
        provider=s.provider,
        model=s.model,
        outcome=s.outcome,
        decision=s.decision,
        label=s.label,
        confidence=s.confidence,
        hedged=s.hedged,
        input_tokens=s.usage.input_tokens,
        output_tokens=s.usage.output_tokens,
        cache_write_tokens=s.usage.cache_write_tokens,
        cache_read_tokens=s.usage.cache_read_tokens,
        is_batch=s.is_batch,
        cost_nanos=s.cost_nanos,
        latency_ms=s.latency_ms,
        http_status=s.http_status,
        error=s.error,
        request_id=s.request_id,
    )


def attempt_rows(job_id: int, results: Sequence[ItemResult]) -> list[dict[str, Any]]:
    return [step_row(job_id, s) for r in results for s in r.steps]


def settled_of(tier_index: int, tier: str, result: ItemResult) -> Settled:
    d = result.decision
    label = getattr(d, "label", None)
    confidence = getattr(d, "confidence", None)
    answered = result.decided_step  # checks and shadow samples come after it
    if isinstance(d, Escalate) and answered is not None and answered.label is not None:
        # keep the lower tier's answer: a budget may cap the item later
        label, confidence = answered.label, answered.confidence
    own = [s.step for s in result.steps]
    return Settled(
        pk=result.pk,
        decision=d.kind,
        tier_index=tier_index,
        tier=d.tier if isinstance(d, Capped) and d.tier else tier,
        steps=max(own) + 1 if own else None,
        model_calls=result.model_calls,
        cost_nanos=result.cost_nanos,
        latency_ms=result.latency_ms,
        fallback_used=result.served_by_fallback,
        baseline_nanos=result.baseline_nanos,
        calibration_nanos=result.calibration_nanos,
        label=label,
        confidence=confidence,
        reason=getattr(d, "reason", None),
        error=getattr(d, "why", None) if isinstance(d, Capped) or not label else None,
        error_kind=result.steps[-1].outcome if isinstance(d, Fallback) and result.steps else None,
    )

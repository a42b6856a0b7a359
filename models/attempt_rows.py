"""The one shape of an ``attempts`` row, for every writer of the ledger: a step's
result, a call about to be sent (``in_flight``), a decision taken from a repeat's
source (``reused``). What a writer does not give is the empty value: no answer, no
tokens, no cost."""

from __future__ import annotations

from typing import Any

EMPTY: dict[str, Any] = {
    "decision": None,
    "label": None,
    "confidence": None,
    "hedged": False,
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_write_tokens": 0,
    "cache_read_tokens": 0,
    "is_batch": False,
    "cost_nanos": 0,
    "latency_ms": 0,
    "http_status": None,
    "error": None,
    "request_id": None,
}


def attempt_row(
    *,
    job_id: int,
    item_id: int,
    step: int,
    tier_index: int,
    tier: str,
    role: str,
    provider: str,
    model: str,
    outcome: str,
    **fields: Any,
) -> dict[str, Any]:
    """One ``attempts`` row; ``fields`` overrides the empty values (:data:`EMPTY`)."""
    unknown = fields.keys() - EMPTY.keys() - {"reuse_of"}
    if unknown:
        raise TypeError(f"attempts has no column {sorted(unknown)}")
    return {
        "job_id": job_id,
        "item_id": item_id,
        "step": step,
        "tier_index": tier_index,
        "tier": tier,
        "role": role,
        "provider": provider,
        "model": model,
        "outcome": outcome,
        **EMPTY,
        **fields,
    }

"""Message Batches without I/O: custom ids, splitting under the API limits, matching results.

A tier in ``mode = "batch"`` sends each item's request inside a Message Batch instead
of one HTTP call per item. The API answers in any order, keyed by the ``custom_id``
we chose, so the id names the item row and the step the call will be recorded as.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from workers.providers.base import ClassifyRequest, ProviderError, Reply, TransientError
from workers.retry import Try

# The API's limits per batch (anthropic-api-facts.md §6); we stay a little under the bytes.
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
BYTES_MARGIN = 0.9
# Bytes a request adds beyond its system prompt and user turn (envelope, tool schema, labels).
REQUEST_OVERHEAD_BYTES = 1_500
_CUSTOM_ID = re.compile(r"^i(\d+)s(\d+)$")
T = TypeVar("T")


def custom_id(item_pk: int, step: int) -> str:
    """``i<item row id>s<step>``: unique per call, within ``^[a-zA-Z0-9_-]{1,64}$``."""
    return f"i{item_pk}s{step}"


def parse_custom_id(value: str) -> tuple[int, int] | None:
    """(item row id, step) from a custom id we made; None for anything else."""
    match = _CUSTOM_ID.match(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _as_json(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


def request_bytes(request: ClassifyRequest) -> int:
    """An upper estimate of one request's size in the batch body.

    The texts are counted as the JSON strings they are sent as: a quote, a backslash or
    a control character takes two to six bytes there, not one.
    """
    text = len(_as_json(request.system)) + len(_as_json(request.user))
    return text + 2 * len(json.dumps(list(request.labels))) + REQUEST_OVERHEAD_BYTES


def split(
    entries: Sequence[T],
    size_of: Callable[[T], int],
    *,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = int(MAX_BYTES * BYTES_MARGIN),
) -> list[list[T]]:
    """Cut ``entries`` in order into batches of at most ``max_requests`` and ``max_bytes``.

    An entry larger than ``max_bytes`` on its own still gets a batch (the API judges it).
    """
    if max_requests < 1 or max_bytes < 1:
        raise ValueError("max_requests and max_bytes must be at least 1")
    out: list[list[T]] = []
    current: list[T] = []
    used = 0
    for entry in entries:
        size = size_of(entry)
        if current and (len(current) >= max_requests or used + size > max_bytes):
            out.append(current)
            current, used = [], 0
        current.append(entry)
        used += size
    if current:
        out.append(current)
    return out


MISSING = "missing: the batch ended without a result for this request"


def match_results(
    custom_ids: Sequence[str],
    results: Mapping[str, Reply | ProviderError],
    latency_ms: int,
) -> list[list[Try]]:
    """One ``[Try]`` per custom id, in the order asked; a result never returned is transient."""
    out: list[list[Try]] = []
    for cid in custom_ids:
        found = results.get(cid)
        if isinstance(found, Reply):
            out.append([Try(found, None, latency_ms)])
        elif isinstance(found, ProviderError):
            out.append([Try(None, found, latency_ms)])
        else:
            out.append([Try(None, TransientError(MISSING), latency_ms)])
    return out


@dataclass(frozen=True, slots=True)
class PollPlan:
    """When to look at a submitted batch again."""

    first_s: float
    factor: float = 2.0
    # Far below the broker's 1 h visibility timeout: a countdown message held unacked
    # longer than that would be delivered twice.
    cap_s: float = 600.0

    def delay(self, polls: int) -> float:
        """Seconds before poll number ``polls + 1`` (``polls`` already made)."""
        return float(min(self.cap_s, self.first_s * self.factor ** max(polls, 0)))

"""The seam between the engine and any model API.

Every failure is classified once, here, into a small tree::

    ProviderError                 a call did not produce a reply
    ├── TransientError            429, 5xx, 529, timeout, dropped connection: retry, then fall back
    ├── PermanentError            400, 404 (model retired): no retry, fall back
    │   ├── ContextError          400 "prompt is too long": a longer-context model may serve it
    │   └── AuthError             401/403, no key at all: stop the job, no call can pass
    ├── SpendLimitError           the organisation's spend limit: pause the job, no retry
    ├── BreakerOpenError          not called: the model's breaker is open
    └── DrillError                not called: a chaos drill disables the model

A reply that arrived (HTTP 200) is never an error at this layer: refusals,
empty answers and labels outside the set are judged by :mod:`workers.answers`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from common.lifecycle import Outcome

# The concrete mechanism a request uses to get a structured answer.
Mechanism = Literal["forced_tool", "tool", "json_schema"]
TOOL_NAME = "record_classification"


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0  # all cache writes, whatever their TTL
    cache_read_tokens: int = 0
    # the part of cache_write_tokens written with the 1-hour TTL (dearer than 5 minutes)
    cache_write_1h_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ClassifyRequest:
    """One model call for one item. ``user`` holds the item's text, delimited."""

    provider: str
    model: str
    system: str
    user: str
    labels: tuple[str, ...]
    max_tokens: int
    mechanism: Mechanism
    # Mark the stable prefix (tools, system) for prompt caching with this TTL ("5m" or
    # "1h"); None: no mark. The item's text (the user turn) is never marked.
    cache_ttl: str | None = None
    # Which ledger row this call is (set by the engine for realtime calls); the
    # provider never reads it.
    tag: CallTag | None = None


@dataclass(frozen=True, slots=True)
class CallTag:
    """The ledger row of a call: its item, its step, and the visit it belongs to.

    Try ``n`` of the call (retries included) is step ``first_step + n``.
    """

    job_id: int
    item_pk: int
    first_step: int
    tier_index: int
    tier: str
    role: str
    estimate_nanos: int = 0  # its cost while its outcome is unknown (sent, no reply seen)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the API returned with HTTP 200, before any judgement of its content."""

    stop_reason: str | None
    structured: dict[str, Any] | None  # tool input or parsed JSON output; None if absent
    text: str
    usage: Usage
    request_id: str | None = None
    # The response's ``anthropic-ratelimit-*`` headers (lower-case names), if it sent any:
    # what the API says is left, for the rate limiter to adapt to.
    rate_limits: Mapping[str, str] | None = None


@dataclass(slots=True)
class ProviderError(Exception):
    message: str
    status: int | None = None
    request_id: str | None = None
    retry_after_s: float | None = None
    usage: Usage = field(default_factory=Usage)
    # An error response's ``anthropic-ratelimit-*`` headers (a 429 carries them too).
    rate_limits: Mapping[str, str] | None = None

    kind = "error"  # a subclass names its own: ``class X(ProviderError, kind=...)``

    def __init_subclass__(cls, kind: str | None = None) -> None:
        # None keeps the parent's (a subclass that adds nothing to say)
        if kind is not None:
            cls.kind = kind

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" + (f" (HTTP {self.status})" if self.status else "")


class TransientError(ProviderError, kind=Outcome.TRANSIENT.value):
    """May pass if tried again (timeout, connection, overload, rate limit, 5xx): retried."""


class PermanentError(ProviderError, kind=Outcome.PERMANENT.value):
    """Will not pass if the same call is tried again: the fallback chain's."""


class ContextError(PermanentError, kind=Outcome.CONTEXT.value):
    """The prompt is too long for the model."""


class AuthError(PermanentError, kind="auth"):
    """The credentials are missing or refused: no call passes until the key changes."""


class SpendLimitError(ProviderError, kind=Outcome.SPEND_LIMIT.value):
    """The account's spend limit is reached: the job pauses."""


class BreakerOpenError(ProviderError, kind=Outcome.BREAKER_OPEN.value):
    """No call was made: the model's circuit breaker is open (fleet-wide)."""


class DrillError(ProviderError, kind=Outcome.DRILL.value):
    """No call was made: an operator's chaos drill has disabled the model."""


# Steps recorded for a call that never left the process: counted apart from calls made.
NOT_SENT: frozenset[str] = frozenset({BreakerOpenError.kind, DrillError.kind})


class Provider(Protocol):
    """Sends one classification request; raises a :class:`ProviderError` on failure."""

    async def classify(self, request: ClassifyRequest) -> Reply: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A submitted Message Batch as the API reports it."""

    batch_id: str
    processing_status: str  # in_progress | canceling | ended
    counts: dict[str, int] = field(default_factory=dict)  # processing, succeeded, errored, ...

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"


class BatchProvider(Protocol):
    """Sends many requests as one Message Batch, reports on it, hands back its results.

    Results are keyed by ``custom_id``: a :class:`Reply` for a succeeded request, the
    mapped :class:`ProviderError` for an errored one, ``TransientError("expired")`` for
    a canceled or expired one. A failure of the batch call itself raises.
    """

    async def create_batch(self, requests: Sequence[tuple[str, ClassifyRequest]]) -> str: ...

    async def retrieve_batch(self, batch_id: str) -> BatchStatus: ...

    async def batch_results(
        self, batch_id: str, mechanism: str
    ) -> dict[str, Reply | ProviderError]: ...


def classification_schema(labels: Sequence[str]) -> dict[str, Any]:
    """JSON schema of the structured answer: used as tool input schema and as output format."""
    return {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": list(labels)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string", "maxLength": 200},
        },
        "required": ["label", "confidence", "reason"],
        "additionalProperties": False,
    }


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text`` (a json_schema answer), or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

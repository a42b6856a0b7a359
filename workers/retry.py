"""Retries for one model call. This layer is the only retry owner for model calls.

Who retries what (so attempts never multiply):
- the anthropic SDK: never (``max_retries=0`` in the provider adapter);
- this policy: transient provider errors, with full-jitter exponential backoff,
  honouring ``retry-after`` up to a cap, bounded in count and total time;
- the fallback chain: everything this policy gave up on, and permanent errors;
- Celery: never for model calls; only infrastructure failures (database, broker)
  retry the task, and a retried task re-claims only unfinished items.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from workers.providers.base import (
    ClassifyRequest,
    Provider,
    ProviderError,
    Reply,
    TransientError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base_s: float = 0.5
    cap_s: float = 20.0
    max_total_s: float = 120.0
    # A server asking us to wait longer than this is treated as "not now": fall back.
    max_retry_after_s: float = 30.0


def backoff_delay(
    policy: RetryPolicy, failures: int, retry_after_s: float | None, rng: random.Random
) -> float | None:
    """Seconds to wait before the next try, or None to stop retrying.

    ``failures`` counts the failed tries so far (1 after the first failure).
    """
    if failures >= policy.max_attempts:
        return None
    if retry_after_s is not None:
        return retry_after_s if retry_after_s <= policy.max_retry_after_s else None
    ceiling = min(policy.cap_s, policy.base_s * 2 ** (failures - 1))
    return rng.uniform(0.0, ceiling)  # full jitter


@dataclass(frozen=True, slots=True)
class Try:
    """One HTTP call: its reply or its error, and how long it took."""

    reply: Reply | None
    error: ProviderError | None
    latency_ms: int


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


async def call_with_retry(
    provider: Provider,
    request: ClassifyRequest,
    policy: RetryPolicy,
    *,
    sleep: Sleep,
    rng: random.Random,
    clock: Clock = time.monotonic,
) -> list[Try]:
    """Call until a reply, a non-transient error, or the policy says stop. Returns every try."""
    tries: list[Try] = []
    started = clock()
    while True:
        t0 = clock()
        try:
            reply = await provider.classify(request)
        except ProviderError as exc:
            tries.append(Try(None, exc, int((clock() - t0) * 1000)))
            if not isinstance(exc, TransientError):
                return tries
            delay = backoff_delay(policy, len(tries), exc.retry_after_s, rng)
            if delay is None or clock() - started + delay > policy.max_total_s:
                return tries
            await sleep(delay)
            continue
        tries.append(Try(reply, None, int((clock() - t0) * 1000)))
        return tries

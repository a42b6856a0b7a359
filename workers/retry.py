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
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class Paced(Protocol):
    """A provider that may make a request wait before it is sent (the rate limiter)."""

    async def ready(self, request: ClassifyRequest) -> None: ...


class LeaseLost(Exception):
    """The item this call is for is no longer ours (another worker claimed it): stop."""


class CallJournal(Protocol):
    """Where each try of a tagged call is written as it happens (the ledger is the bill).

    ``sending`` returns once the try is recorded as in flight, before its request
    leaves, or raises :class:`LeaseLost`; ``returned`` hands over its reply or error.
    """

    async def sending(self, request: ClassifyRequest, n: int) -> None: ...

    def returned(self, request: ClassifyRequest, n: int, attempt: Try) -> None: ...


async def call_with_retry(
    provider: Provider,
    request: ClassifyRequest,
    policy: RetryPolicy,
    *,
    sleep: Sleep,
    rng: random.Random,
    clock: Clock = time.monotonic,
    journal: CallJournal | None = None,
) -> list[Try]:
    """Call until a reply, a non-transient error, or the policy says stop. Returns every try.

    With a ``journal`` (and a tagged request), each try is written before it is sent
    and when it returns.
    """
    tries: list[Try] = []
    started = clock()
    if request.tag is None:
        journal = None
    while True:
        if isinstance(provider, Paced):
            await provider.ready(request)  # rate limits: wait before the row is written
        if journal is not None:
            await journal.sending(request, len(tries))
        t0 = clock()
        try:
            reply = await provider.classify(request)
        except ProviderError as exc:
            tries.append(Try(None, exc, int((clock() - t0) * 1000)))
            if journal is not None:
                journal.returned(request, len(tries) - 1, tries[-1])
            if not isinstance(exc, TransientError):
                return tries
            delay = backoff_delay(policy, len(tries), exc.retry_after_s, rng)
            if delay is None or clock() - started + delay > policy.max_total_s:
                return tries
            await sleep(delay)
            continue
        except Exception as exc:  # a bug or an SDK surprise: one failed try, not retried
            error = TransientError(f"internal error: {type(exc).__name__}: {exc}"[:500])
            tries.append(Try(None, error, int((clock() - t0) * 1000)))
            if journal is not None:
                journal.returned(request, len(tries) - 1, tries[-1])
            return tries
        tries.append(Try(reply, None, int((clock() - t0) * 1000)))
        if journal is not None:
            journal.returned(request, len(tries) - 1, tries[-1])
        return tries

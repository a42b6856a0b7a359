"""How one tier visit's calls are made: the :class:`Executor` interface and its
realtime implementation, one request per item, each behind the fleet's circuit breaker.

The Message Batches API is the other way (``workers/batch.py`` and the batch tasks).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import structlog

from common.lifecycle import Outcome
from workers.breaker import Transition
from workers.caching import CacheWarmer, MemoryWarmStore
from workers.providers.base import (
    BreakerOpenError,
    ClassifyRequest,
    DrillError,
    Provider,
    TransientError,
)
from workers.retry import CallJournal, LeaseLost, Paced, RetryPolicy, Sleep, Try, call_with_retry
from workers.stores import BreakerStore

log = structlog.stdlib.get_logger("cascade.engine")


class Executor(Protocol):
    """Runs the calls of one tier visit (realtime here; Message Batches elsewhere)."""

    async def execute(
        self, requests: Sequence[ClassifyRequest], *, disabled: Mapping[str, str] | None = None
    ) -> list[list[Try]]: ...


def _job_of(request: ClassifyRequest) -> int | None:
    return request.tag.job_id if request.tag is not None else None


def breaker_key(provider: str, model: str) -> str:
    return f"{provider}:{model}"


class RealtimeExecutor:
    """One call per request, concurrently, each guarded by the fleet's circuit breaker.

    ``disabled`` maps breaker keys under a chaos drill to the drill's reason: no call
    is made for them. An open breaker makes no call either. Both come back as a try
    whose error says why, so the decision sends the item down the fallback chain.
    Breaker transitions are kept in ``transitions`` for the caller to log and store.
    """

    def __init__(
        self,
        providers: Callable[[str], Provider],
        policy: RetryPolicy,
        concurrency: int,
        *,
        breakers: BreakerStore | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        journal: CallJournal | None = None,
        allow_when_store_down: bool = True,
        warmer: CacheWarmer | None = None,
    ) -> None:
        self._providers = providers
        # one call goes first on a cold cached prefix (in memory unless the fleet shares one)
        self._warmer = warmer if warmer is not None else CacheWarmer(MemoryWarmStore())
        self._policy = policy
        self._sem = asyncio.Semaphore(concurrency)
        self._breakers = breakers
        self._allow_when_store_down = allow_when_store_down
        self.journal = journal
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        # breaker transitions this process saw, each with the job whose call caused it
        self.transitions: list[tuple[Transition, int | None]] = []

    async def _paced(self, request: ClassifyRequest) -> Provider | None:
        """The request's provider after its rate-limit wait, taken *outside* the call slots:
        a model over its limit must not hold the slots another model's calls could use.
        None when the lookup or the booking failed: the call meets the error again below."""
        try:
            provider = self._providers(request.provider)
            if isinstance(provider, Paced):
                await provider.ready(request)  # its retry loop's ready() is then a no-op
        except Exception:
            return None
        return provider

    async def _one(self, request: ClassifyRequest, disabled: Mapping[str, str]) -> list[Try]:
        key = breaker_key(request.provider, request.model)
        drill = disabled.get(key)
        if drill is not None:
            return [Try(None, DrillError(f"chaos drill on {key}: {drill}"), 0)]
        paced = await self._paced(request)
        async with self._sem:
            probe = False
            if self._breakers is not None:
                try:
                    admission = await self._breakers.admit(key, self._clock())
                except Exception as exc:
                    # CASCADE_BREAKER_STORE_DOWN: "allow" lets traffic through (fail open),
                    # "deny" treats the breaker as open (fail closed: the fallback chain).
                    log.warning("cascade.breaker.store_error", breaker=key, error=repr(exc))
                    if not self._allow_when_store_down:
                        error = BreakerOpenError(f"breaker store unreachable for {key}")
                        return [Try(None, error, 0)]
                else:
                    if admission.transition is not None:
                        self.transitions.append((admission.transition, _job_of(request)))
                    if not admission.allowed:
                        error = BreakerOpenError(f"circuit breaker open for {key}")
                        return [Try(None, error, 0)]
                    probe = admission.probe
            ticket = await self._warmer.before_call(request)
            try:
                provider = paced or self._providers(request.provider)
                tries = await call_with_retry(
                    provider,
                    request,
                    self._policy,
                    sleep=self._sleep,
                    rng=self._rng,
                    journal=self.journal,
                )
            except LeaseLost:  # the item is another worker's now: send nothing more for it
                await self._warmer.after_call(ticket, False)
                raise
            except Exception as exc:
                await self._warmer.after_call(ticket, False)
                log.exception("cascade.call.unexpected_error", model=key)
                return [Try(None, TransientError(f"internal error: {type(exc).__name__}"), 0)]
            await self._warmer.after_call(ticket, tries[-1].reply is not None)
            if self._breakers is not None:
                # Only outages count: a refusal or a malformed answer arrived fine, and a
                # permanent error (a retired model, a bad request) is no outage, so it must
                # not open the breaker and turn into deferrals (issue 21).
                last = tries[-1].error
                ok = last is None or last.kind != Outcome.TRANSIENT
                try:
                    change = await self._breakers.record(key, self._clock(), ok, probe)
                except Exception as exc:
                    log.warning("cascade.breaker.store_error", breaker=key, error=repr(exc))
                    change = None
                if change is not None:
                    self.transitions.append((change, _job_of(request)))
            return tries

    async def execute(
        self, requests: Sequence[ClassifyRequest], *, disabled: Mapping[str, str] | None = None
    ) -> list[list[Try]]:
        off = disabled or {}
        return list(await asyncio.gather(*(self._one(r, off) for r in requests)))

"""A provider that books each call with the fleet's rate limiter before it is sent
(:mod:`workers.ratelimit`), and adapts the limiter to the API's rate-limit headers."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import cast

import structlog

from workers.providers.base import BatchProvider, ClassifyRequest, Provider, ProviderError, Reply
from workers.ratelimit import READY_TTL_S, RateLimiter, Sleep, limiter_key, parse_rate_headers

log = structlog.stdlib.get_logger("cascade.ratelimit")


def estimate_input_tokens(request: ClassifyRequest) -> int:
    """A cheap estimate (characters / 4, plus the tool schema's overhead)."""
    return math.ceil((len(request.system) + len(request.user)) / 4) + 120


class RateLimitedProvider:
    """Wraps a provider: books the call with the limiter, sleeps as told, then delegates.

    Output tokens are booked as ``request.max_tokens`` times ``output_share`` (the
    true count is known only afterwards); ``output_share=1.0`` never overshoots.
    The API's rate-limit headers, which the provider puts on the reply
    (``Reply.rate_limits``) and on a failed call's error (``ProviderError.rate_limits``,
    e.g. a 429), are passed to :meth:`RateLimiter.adapt` before the reply is
    returned or the error re-raised.
    """

    def __init__(
        self,
        inner: Provider,
        limiter: RateLimiter,
        *,
        sleep: Sleep = asyncio.sleep,
        output_share: float = 1.0,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.inner = inner
        self.limiter = limiter
        self._sleep = sleep
        self._output_share = output_share
        self._on_wait = on_wait  # told of every wait (metrics)
        # requests booked by ready() and not sent yet, by id, with when they were booked;
        # held (so no other request can take the id) for READY_TTL_S at most: one that is
        # never sent (its breaker opened meanwhile, say) must not be held for ever, and
        # one sent later than that is simply booked again
        self._ready: dict[int, tuple[ClassifyRequest, float]] = {}

    async def ready(self, request: ClassifyRequest) -> None:
        """Book the call and sleep as told: after this the request may leave at once.

        The retry loop calls it before it writes the call's ledger row, so a worker
        killed while waiting here has sent nothing and recorded nothing. Once per send:
        a request already readied and not sent yet is not booked again, so the engine
        can wait here *before* it takes one of its call slots (a model over its limit
        must not hold the slots another model's calls could use) and the retry loop's
        own call is then a no-op.
        """
        if self._readied(request):
            return
        key = limiter_key(request.provider, request.model)
        wait = await self.limiter.acquire(
            key,
            requests=1,
            input_tokens=estimate_input_tokens(request),
            output_tokens=math.ceil(request.max_tokens * self._output_share),
        )
        if wait > 0:
            if self._on_wait is not None:
                self._on_wait(key, wait)
            await self._sleep(wait)
        now = time.monotonic()
        self._ready.pop(id(request), None)  # re-inserted last: the dict stays oldest first
        self._ready[id(request)] = (request, now)
        while self._ready:  # oldest first: a dict keeps insertion order
            oldest = next(iter(self._ready))
            if now - self._ready[oldest][1] <= READY_TTL_S:
                break
            del self._ready[oldest]

    def _readied(self, request: ClassifyRequest) -> bool:
        found = self._ready.get(id(request))
        return found is not None and found[0] is request

    async def classify(self, request: ClassifyRequest) -> Reply:
        key = limiter_key(request.provider, request.model)
        if not self._readied(request):
            await self.ready(request)
        self._ready.pop(id(request), None)
        try:
            reply = await self.inner.classify(request)
        except ProviderError as exc:
            if exc.rate_limits:
                await self._adapt(key, exc.rate_limits)
            raise
        if reply.rate_limits:
            await self._adapt(key, reply.rate_limits)
        return reply

    async def _adapt(self, key: str, headers: Mapping[str, str]) -> None:
        seen = parse_rate_headers(headers)
        if seen is None:
            return
        try:
            await self.limiter.adapt(key, seen)
        except Exception as exc:
            # Advisory only: a store error must not lose a reply already paid for, nor
            # hide the call's own error. The next call's headers try again.
            log.warning("cascade.ratelimit.adapt_error", limit=key, error=repr(exc))

    @property
    def batches(self) -> BatchProvider:
        """The wrapped provider's Message Batches calls, not paced here: that API has its
        own limits, apart from the per-minute ones booked for realtime calls."""
        found = getattr(self.inner, "batches", None)
        if found is None:  # as if not wrapped: getattr(self, "batches", None) is None
            raise AttributeError(f"{type(self.inner).__name__} has no Message Batches API")
        return cast(BatchProvider, found)

    async def aclose(self) -> None:
        await self.inner.aclose()

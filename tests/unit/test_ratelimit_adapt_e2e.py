"""End to end: the fake API's rate-limit headers, through the real SDK and AnthropicProvider,
reach RateLimitedProvider and lower the memory limiter (injected clock; sleeps recorded)."""

from __future__ import annotations

import asyncio

import pytest

from cascade.fakeapi import FakeRateLimits, FakeServer
from tests.unit.test_anthropic_provider import KEY, request
from workers.paced import RateLimitedProvider
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import TransientError
from workers.ratelimit import Limits, MemoryRateLimiter, limits_table

LIMIT_KEY = "anthropic:claude-haiku-5-5"
NOW = 1000.0


def limiter(limits: Limits) -> MemoryRateLimiter:
    return MemoryRateLimiter(limits_table({LIMIT_KEY: limits}), clock=lambda: NOW)


async def calls(fake: FakeServer, memory: MemoryRateLimiter, n: int) -> list[float]:
    """``n`` calls through the limited provider; returns the waits it was told to sleep."""
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    inner = AnthropicProvider("anthropic", KEY, fake.base_url, 5.0)
    wrapped = RateLimitedProvider(inner, memory, sleep=sleep)
    try:
        for _ in range(n):
            await wrapped.classify(request("claude-haiku-5-5", "forced_tool"))
    finally:
        await wrapped.aclose()
    return slept


def test_a_lower_limit_reported_by_the_api_lengthens_the_waits() -> None:
    configured = Limits(requests_per_min=600)  # spacing 0.1 s, a burst of 10 calls
    # Given a fake that sends no rate-limit headers: 4 calls fit the burst, nobody waits
    with FakeServer() as fake:
        plain = limiter(configured)
        assert asyncio.run(calls(fake, plain, 4)) == []
    assert plain.state(LIMIT_KEY).learnt_per_min == (None, None, None)
    # Given a fake that says the limit is 60 a minute (it has plenty left)
    with FakeServer(rate_limits=FakeRateLimits(requests_per_min=60)) as fake:
        told = limiter(configured)
        slept = asyncio.run(calls(fake, told, 4))
    # Then the limiter learnt 60/min from the first reply and spaced the rest 1 s apart
    assert told.state(LIMIT_KEY).learnt_per_min == (60, None, None)
    assert slept == pytest.approx([0.1, 1.1, 2.1])
    # and the next call would wait longer again
    assert asyncio.run(told.acquire(LIMIT_KEY)) == pytest.approx(3.1)


def test_a_429_with_headers_lowers_the_limiter() -> None:
    # A burst of a minute at 600/min: this process alone would send 600 calls at once
    configured = Limits(requests_per_min=600, burst_s=60)
    with FakeServer(rate_limits=FakeRateLimits(requests_per_min=2)) as fake:
        # Given another worker (no limiter here) has used up the API's 2 a minute
        async def elsewhere() -> None:
            inner = AnthropicProvider("anthropic", KEY, fake.base_url, 5.0)
            try:
                for _ in range(2):
                    await inner.classify(request("claude-haiku-5-5", "forced_tool"))
            finally:
                await inner.aclose()

        asyncio.run(elsewhere())
        # When this worker's call gets the 429
        told = limiter(configured)
        with pytest.raises(TransientError) as raised:
            asyncio.run(calls(fake, told, 1))
    assert raised.value.status == 429
    # Then its limiter learnt the API's limit and that nothing is left: the next call
    # waits one spacing at 2/min (30 s) instead of going straight away
    assert told.state(LIMIT_KEY).learnt_per_min == (2, None, None)
    assert asyncio.run(told.acquire(LIMIT_KEY)) == pytest.approx(30.0)
    untold = limiter(configured)
    asyncio.run(untold.acquire(LIMIT_KEY))
    assert asyncio.run(untold.acquire(LIMIT_KEY)) == 0.0

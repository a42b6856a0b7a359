"""The rate limiter tells the metrics of every call it holds back, and for how long."""

from __future__ import annotations

import asyncio

from workers.paced import RateLimitedProvider
from workers.providers.base import ClassifyRequest, Reply, Usage
from workers.ratelimit import Limits, MemoryRateLimiter, limits_table


class Answering:
    async def classify(self, request: ClassifyRequest) -> Reply:
        return Reply("tool_use", {"label": "a", "confidence": 1.0, "reason": ""}, "", Usage())

    async def aclose(self) -> None:
        return None


def test_each_wait_is_reported_with_its_limit_and_seconds() -> None:
    now = [0.0]
    limiter = MemoryRateLimiter(
        limits_table({"anthropic:m": Limits(requests_per_min=60, burst_s=1)}), clock=lambda: now[0]
    )
    waits: list[tuple[str, float]] = []
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    provider = RateLimitedProvider(
        Answering(), limiter, sleep=sleep, on_wait=lambda k, s: waits.append((k, s))
    )
    request = ClassifyRequest("anthropic", "m", "sys", "user", ("a", "b"), 16, "tool")

    async def three_calls() -> None:
        for _ in range(3):
            await provider.classify(request)

    asyncio.run(three_calls())
    # one request a second, a burst of one: the 2nd and 3rd calls wait, and say so
    assert [k for k, _ in waits] == ["anthropic:m", "anthropic:m"]
    assert [s for _, s in waits] == slept
    assert all(s > 0 for s in slept)

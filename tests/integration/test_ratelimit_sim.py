"""The fleet limiter against the fake's own buckets, on a simulated clock.

Many concurrent callers (as a worker process's pool has) go through
:class:`workers.ratelimit.RateLimitedProvider` to a simulated API: the fake's
:class:`cascade.fakeapi.ratelimits.FakeBuckets` (a minute's bucket, the
``anthropic-ratelimit-*`` headers, 429s) with a seeded lognormal latency. Time is
virtual: callers sleep on :class:`VirtualTime`, which moves to the next wake-up only
once every caller is asleep, so a minute runs in a moment and the figures are exact.

Each case runs with the memory limiter and with the Redis one (one shared client whose
pool holds fewer connections than there are callers, as a worker process's did when
redis-py's default pool of 100 met 128 calls in flight).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
import redis
import redis.asyncio as aredis

from cascade.fakeapi.ratelimits import FakeBuckets, FakeRateLimits
from tasks.redis_ratelimit import RedisRateLimiter
from tests.services import require_service, service_redis_url
from workers.paced import RateLimitedProvider
from workers.providers.base import ClassifyRequest, Reply, TransientError, Usage
from workers.ratelimit import (
    Limits,
    MemoryRateLimiter,
    RateLimiter,
    limits_table,
)

REDIS_URL = service_redis_url(11)
MODEL = "claude-haiku-5-5"
KEY = f"anthropic:{MODEL}"
RPM = 600.0  # 10 a second: a burst of 1 s is 10 calls
CALLERS = 40  # > RPM/60 x the mean latency (~2.2 s): demand exceeds the limit
REQUEST = ClassifyRequest(
    provider="anthropic",
    model=MODEL,
    system="s",
    user="u",
    labels=("a", "b"),
    max_tokens=16,
    mechanism="forced_tool",
)


class VirtualTime:
    """A clock and a sleep; time jumps to the next wake-up once all callers sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(seconds, 0.0), next(self._seq), wake))
        await wake

    async def run(self, callers: list[Callable[[], Awaitable[None]]], until: float) -> None:
        tasks = [asyncio.create_task(c()) for c in callers]
        try:
            while self.now < until:
                live = sum(1 for t in tasks if not t.done())
                # wait (in real time) while a caller is busy: booking in Redis, say
                while len(self._timers) < live:
                    await asyncio.sleep(0.0005)
                    live = sum(1 for t in tasks if not t.done())
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                at, _, wake = heapq.heappop(self._timers)
                self.now = max(self.now, at)
                wake.set_result(None)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class SimApi:
    """The API as the fake enforces it, plus another client taking from the same bucket."""

    time: VirtualTime
    buckets: FakeBuckets
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    admitted: list[float] = field(default_factory=list)  # when our calls were let through
    rejected: int = 0  # our 429s
    others: list[float] = field(default_factory=list)  # when the other client's calls were

    async def classify(self, request: ClassifyRequest) -> Reply:
        took = self.buckets.take(request.model, 0, 0)
        if not took.ok:
            self.rejected += 1
            raise TransientError(
                "rate limited", status=429, retry_after_s=1.0, rate_limits=took.headers
            )
        self.admitted.append(self.time.now)
        latency = min(1.5 * self.rng.lognormvariate(0.0, 0.9), 20.0)  # median 1.5 s, cap 20
        await self.time.sleep(latency)
        return Reply("end_turn", {"label": "a"}, "", Usage(1, 1), rate_limits=took.headers)

    async def aclose(self) -> None:
        return None

    def rate_in(self, lo: float, hi: float, calls: list[float] | None = None) -> float:
        """Our calls (or ``calls``) let through per minute in [lo, hi)."""
        times = self.admitted if calls is None else calls
        return sum(1 for t in times if lo <= t < hi) / (hi - lo) * 60.0


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which limiter: "memory", or "redis" (db 11, flushed before and after)."""
    if request.param == "memory":
        yield "memory"
        return
    request.applymarker(pytest.mark.redis)
    sync = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        require_service("redis", sync.ping)
        sync.flushdb()
        yield "redis"
        sync.flushdb()
    finally:
        sync.close()


def simulate(
    store: str,
    seconds: float,
    *,
    api_rpm: float = RPM,
    other_client_per_s: float = 0.0,
) -> tuple[SimApi, VirtualTime]:
    """``seconds`` of ``CALLERS`` callers limited to ``RPM`` against an API enforcing
    ``api_rpm``; with ``other_client_per_s``, another client empties the API's bucket
    at the start and then tries that many calls a second."""
    vt = VirtualTime()
    api = SimApi(vt, FakeBuckets(FakeRateLimits(requests_per_min=api_rpm), clock=vt.clock))
    until = vt.now + seconds

    async def main() -> None:
        table = limits_table({KEY: Limits(requests_per_min=RPM)})
        # fewer connections than callers: one per concurrent booking would run out
        client = aredis.Redis.from_url(REDIS_URL, max_connections=4)
        limiter: RateLimiter = MemoryRateLimiter(table, clock=vt.clock)
        if store == "redis":
            limiter = RedisRateLimiter(client, table, clock=vt.clock)
        provider = RateLimitedProvider(api, limiter, sleep=vt.sleep)

        async def caller() -> None:
            while True:
                try:  # a fresh request each time, as the engine makes
                    await provider.classify(replace(REQUEST, user=str(random.random())))
                except TransientError as exc:
                    await vt.sleep(exc.retry_after_s or 1.0)

        async def other_client() -> None:
            api.buckets.take(MODEL, 0, 0)
            for _ in range(int(api_rpm) - 1):  # it has just spent the whole minute's bucket
                api.buckets.take(MODEL, 0, 0)
            while True:  # and keeps trying for its share
                await vt.sleep(1.0 / other_client_per_s)
                if api.buckets.take(MODEL, 0, 0).ok:
                    api.others.append(vt.now)

        callers = [caller for _ in range(CALLERS)]
        if other_client_per_s:
            callers.append(other_client)
        try:
            await vt.run(callers, until)
        finally:
            await client.aclose()

    asyncio.run(main())
    return api, vt


def test_grants_the_configured_rate_when_the_api_reports_plenty_left(
    store: str,
) -> None:
    # Given 40 callers wanting more than 600/min, and an API whose bucket of 600 is full
    api, vt = simulate(store, seconds=70.0)
    start = vt.now - 70.0
    # Then, past the first 10 s, the limiter lets through the configured rate (the
    # booked start times are spaced exactly 0.1 s), and the API never says 429
    assert api.rate_in(start + 10, start + 70) == pytest.approx(RPM, rel=0.02)
    assert api.rejected == 0


def test_slows_to_the_limit_the_api_reports_when_it_is_lower(store: str) -> None:
    # Given an API that allows only 300/min on a key we were told allows 600
    api, vt = simulate(store, seconds=70.0, api_rpm=300.0)
    start = vt.now - 70.0
    # Then the "-limit" header slows the fleet to 300/min before the API's bucket
    # (a minute's worth) runs out: no 429 at all
    assert api.rate_in(start + 10, start + 70) == pytest.approx(300.0, rel=0.03)
    assert api.rejected == 0


def test_backs_off_when_the_api_says_little_is_left(store: str) -> None:
    # Given another client that spent the API's whole bucket and keeps trying 5 calls a
    # second, so about 5 a second are left for us while our limit says 10
    api, vt = simulate(store, seconds=130.0, other_client_per_s=5.0)
    start = vt.now - 130.0
    ours = api.rate_in(start + 10, start + 130)
    attempts = len(api.admitted) + api.rejected
    # Then the cuts on "remaining" slow us to about what is left, with few 429s (before
    # the cuts: 330/min and 45 % of our calls refused; lowering only what is left spent
    # our burst, and the calls booked meanwhile still went at our full rate)
    assert 0.8 * 300 <= ours <= 1.1 * 300
    assert api.rejected <= 0.08 * attempts
    # and the other client still gets what it asks for, nearly all of it
    assert api.rate_in(start + 10, start + 130, api.others) >= 0.95 * 300

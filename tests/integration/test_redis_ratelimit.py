"""RedisRateLimiter against a real Redis: it agrees with the pure GCRA step by step,
stays atomic across connections, and uses Redis' own clock by default."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aredis

from tasks.redis_ratelimit import RedisRateLimiter
from tasks.runtime import SHARED_REDIS_CONNECTIONS, shared_redis_client
from tests.services import require_service, service_redis_url
from tests.unit.test_ratelimit import RPM600, SCENARIOS, Scenario, replay_pure
from workers.ratelimit import BucketState, Cost, Limits, Observed, limits_table, reserve

REDIS_URL = service_redis_url(11)
KEY = "anthropic:claude-haiku-5-5"

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis db 11, flushed before and after the test."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:

        def ping() -> None:
            client.ping()

        require_service("redis", ping)
        client.flushdb()
        yield REDIS_URL
        client.flushdb()
    finally:
        client.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_redis_limiter_agrees_with_pure_functions(redis_url: str, scenario: Scenario) -> None:
    clock = [0.0]

    async def run() -> list[tuple[float | None, BucketState]]:
        client = aredis.Redis.from_url(redis_url)
        limiter = RedisRateLimiter(
            client, limits_table({KEY: scenario.limits}), clock=lambda: clock[0]
        )
        out: list[tuple[float | None, BucketState]] = []
        try:
            for now, op, arg in scenario.steps:
                clock[0] = now
                if op == "acquire":
                    assert isinstance(arg, Cost)
                    wait = await limiter.acquire(KEY, *arg.units())
                    out.append((wait, await limiter.state(KEY)))
                else:
                    assert isinstance(arg, Observed)
                    await limiter.adapt(KEY, arg)
                    out.append((None, await limiter.state(KEY)))
        finally:
            await client.aclose()
        return out

    got = asyncio.run(run())
    expected = replay_pure(scenario)
    assert len(got) == len(expected)
    for (gw, gs), (ew, es) in zip(got, expected, strict=True):
        assert gw == (None if ew is None else pytest.approx(ew, abs=1e-9))
        assert gs.tat == pytest.approx(es.tat, abs=1e-9)
        assert gs.learnt_per_min == es.learnt_per_min
        assert [c is None for c in gs.cut_per_min] == [c is None for c in es.cut_per_min]
        assert [c or 0.0 for c in gs.cut_per_min] == pytest.approx(
            [c or 0.0 for c in es.cut_per_min], abs=1e-9
        )
        assert gs.cut_at == pytest.approx(es.cut_at, abs=1e-9)


def test_concurrent_callers_on_separate_connections_share_one_bucket(redis_url: str) -> None:
    """200 acquires from 4 connections at one instant book 200 distinct, evenly spaced slots."""

    async def run() -> list[float]:
        clients = [aredis.Redis.from_url(redis_url) for _ in range(4)]
        limiters = [
            RedisRateLimiter(c, limits_table({KEY: RPM600}), clock=lambda: 500.0) for c in clients
        ]
        try:
            waits = await asyncio.gather(*(limiters[i % 4].acquire(KEY) for i in range(200)))
        finally:
            for c in clients:
                await c.aclose()
        return sorted(waits)

    waits = asyncio.run(run())
    assert waits[:10] == [0.0] * 10  # the burst
    expected = [0.0] * 10 + [round(0.1 * k, 6) for k in range(1, 191)]
    assert [round(w, 6) for w in waits] == expected


def test_default_clock_is_redis_time(redis_url: str) -> None:
    async def run() -> tuple[float, float]:
        client = aredis.Redis.from_url(redis_url)
        limiter = RedisRateLimiter(client, limits_table({KEY: RPM600}))
        try:
            for _ in range(10):
                await limiter.acquire(KEY)
            wait = await limiter.acquire(KEY)
            seconds, micros = await client.time()
            state = await limiter.state(KEY)
        finally:
            await client.aclose()
        return wait, state.tat[0] - (seconds + micros / 1e6)

    wait, ahead = asyncio.run(run())
    assert 0.0 < wait <= 0.1 + 1e-6
    assert 1.0 <= ahead <= 1.2  # 11 calls booked ~1.1 s ahead of Redis' clock


def test_unknown_key_is_not_limited(redis_url: str) -> None:
    async def run() -> float:
        client = aredis.Redis.from_url(redis_url)
        try:
            limiter = RedisRateLimiter(client, limits_table({}))
            return await limiter.acquire("anthropic:other", 1, 10**9, 10**9)
        finally:
            await client.aclose()

    assert asyncio.run(run()) == 0.0


def test_adapt_skips_the_round_trip_only_when_it_could_change_nothing(redis_url: str) -> None:
    async def run() -> list[tuple[float | None, float | None, float | None]]:
        client = aredis.Redis.from_url(redis_url)
        limiter = RedisRateLimiter(client, limits_table({KEY: RPM600}), clock=lambda: 10.0)
        plenty = Observed((60, None, None), (50, None, None))  # far more than a burst left
        learnt = []
        try:
            await limiter.adapt(KEY, plenty)  # first time: sent
            learnt.append((await limiter.state(KEY)).learnt_per_min)
            # another process forgets the learnt limit behind this one's back
            await client.hdel(limiter.prefix + KEY, "l1")
            await limiter.adapt(KEY, plenty)  # same limit, plenty left: skipped
            learnt.append((await limiter.state(KEY)).learnt_per_min)
            await limiter.adapt(KEY, Observed((60, None, None), (0, None, None)))  # none left
            learnt.append((await limiter.state(KEY)).learnt_per_min)
            await client.hdel(limiter.prefix + KEY, "l1")
            limiter.refresh_s = 0.0  # re-sends every time
            await limiter.adapt(KEY, plenty)
            learnt.append((await limiter.state(KEY)).learnt_per_min)
        finally:
            await client.aclose()
        return learnt

    sent, skipped, low, refreshed = asyncio.run(run())
    assert sent == (60, None, None)
    assert skipped == (None, None, None)
    assert low == (60, None, None)
    assert refreshed == (60, None, None)


def test_concurrent_acquires_of_one_process_share_script_runs(redis_url: str) -> None:
    """300 acquires at once on a client with one connection: every one is booked, in
    arrival order, exactly as the pure ``reserve`` booking them one after the other."""
    costs = [Cost(1, 100 * (i % 7), 10 * (i % 3)) for i in range(300)]
    limits = Limits(requests_per_min=600, input_tokens_per_min=60_000, burst_s=2.0)

    async def run() -> list[float]:
        client = aredis.Redis.from_url(redis_url, max_connections=1)
        limiter = RedisRateLimiter(client, limits_table({KEY: limits}), clock=lambda: 50.0)
        limiter.max_batch = 64  # several script runs, each booking up to 64
        try:
            return await asyncio.gather(*(limiter.acquire(KEY, *c.units()) for c in costs))
        finally:
            await client.aclose()

    waits = asyncio.run(run())
    state, expected = BucketState(), []
    for cost in costs:
        state, wait = reserve(limits, state, 50.0, cost)
        expected.append(wait)
    assert waits == pytest.approx(expected, abs=1e-9)
    assert waits[-1] > 20.0  # the queue really was booked far ahead


def test_the_shared_client_queues_a_burst_instead_of_failing(redis_url: str) -> None:
    """More commands at once than the pool holds connections: they wait their turn
    (redis-py 8's default pool raised MaxConnectionsError past 100 at once)."""

    async def run() -> list[object]:
        client = shared_redis_client(redis_url)
        try:
            many = SHARED_REDIS_CONNECTIONS * 4
            return await asyncio.gather(
                *(client.incr("burst") for _ in range(many)), return_exceptions=True
            )
        finally:
            await client.aclose()

    results = asyncio.run(run())
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert sorted(results) == list(range(1, SHARED_REDIS_CONNECTIONS * 4 + 1))  # type: ignore[type-var]

"""The Redis adapters' edges against a real Redis (db 10): the prompt-cache warm store
agrees with the in-memory one and lives by Redis' own expiry; the rate limiter hands
a failed script run's error to every caller of that run and books the next run anyway,
merges headers that arrive while an adapt runs into one more run, and costs no round
trip for a key that is not limited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from tasks.redis_cache_warm import RedisWarmStore
from tasks.redis_ratelimit import RedisRateLimiter
from tests.services import require_service, service_redis_url
from workers.caching import MemoryWarmStore, WarmStore
from workers.ratelimit import Limits, Observed, limits_table

REDIS_URL = service_redis_url(10)
KEY = "anthropic:claude-haiku-5-5"
RPM600 = Limits(requests_per_min=600, burst_s=1.0)
T = TypeVar("T")

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis db 10, flushed before and after the test."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        require_service("redis", lambda: client.ping())
        client.flushdb()
        yield REDIS_URL
        client.flushdb()
    finally:
        client.close()


def with_client(url: str, fn: Callable[[aredis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = aredis.Redis.from_url(url)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


class Counting:
    """A Redis client whose registered scripts count their runs (and may be held)."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self.runs: list[list[str]] = []  # the ARGV of each script run
        self.gate: asyncio.Event | None = None  # set: runs wait for it

    def register_script(self, source: str) -> Callable[..., Awaitable[Any]]:
        script = self.client.register_script(source)

        async def run(keys: list[str], args: list[str]) -> Any:
            self.runs.append(list(args))
            if self.gate is not None:
                await self.gate.wait()
            return await script(keys=keys, args=args)

        return run

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


# -- the warm store ------------------------------------------------------------------------
STEPS: list[tuple[str, str, Any]] = [
    # (operation, key, expected)
    ("claim", "a", "first"),  # cold: this call writes the cache
    ("claim", "a", "wait"),  # ... the others wait for it
    ("claim", "b", "first"),  # another prefix is its own key
    ("done_fail", "a", None),  # the first call failed: nothing is warm
    ("claim", "a", "first"),  # so the next call goes first
    ("done_ok", "a", None),  # written
    ("claim", "a", "warm"),  # every call reads it now
    ("claim", "a", "warm"),
    ("done_ok", "b", None),
    ("claim", "b", "warm"),
]


async def _replay(store: WarmStore) -> list[Any]:
    out: list[Any] = []
    for op, key, _ in STEPS:
        if op == "claim":
            out.append(await store.claim(key, 100.0, 60.0))
        else:
            out.append(await store.done(key, 100.0, op == "done_ok", 600.0))
    return out


def test_the_redis_warm_store_agrees_with_the_memory_store(redis_url: str) -> None:
    expected = [e for _, _, e in STEPS]
    assert asyncio.run(_replay(MemoryWarmStore())) == expected
    assert with_client(redis_url, lambda c: _replay(RedisWarmStore(c))) == expected


def test_warm_state_and_leases_live_by_redis_expiry(redis_url: str) -> None:
    async def run(client: aredis.Redis) -> tuple[list[str], Any, Any]:
        store = RedisWarmStore(client, prefix="t:")
        seen = [await store.claim("k", 0.0, 0.05)]  # a 50 ms lease
        await asyncio.sleep(0.15)
        seen.append(await store.claim("k", 0.0, 60.0))  # the lease ran out: first again
        await store.done("k", 0.0, True, 0.05)  # warm for 50 ms
        seen.append(await store.claim("x", 0.0, 60.0))
        seen.append(await store.claim("k", 0.0, 60.0))
        await asyncio.sleep(0.15)
        seen.append(await store.claim("k", 0.0, 60.0))  # cold again: first
        return seen, await client.pttl("t:lease:k"), await client.exists("t:warm:k")

    seen, lease_ttl, warm = with_client(redis_url, run)
    assert seen == ["first", "first", "first", "warm", "first"]
    assert 0 < lease_ttl <= 60_000  # the last claim's lease, in milliseconds
    assert warm == 0


def test_a_lease_shorter_than_a_millisecond_is_still_a_valid_expiry(redis_url: str) -> None:
    """Redis refuses ``PX 0``: the store rounds up to 1 ms instead of failing the call."""

    async def run(client: aredis.Redis) -> tuple[str, None]:
        store = RedisWarmStore(client)
        first = await store.claim("k", 0.0, 0.0001)
        return first, await store.done("k", 0.0, True, 0.0)

    assert with_client(redis_url, run) == ("first", None)


def test_two_processes_share_warm_state_through_redis_not_through_memory(redis_url: str) -> None:
    async def run(client: aredis.Redis) -> tuple[str, str]:
        # the same warm state seen by two warmers of the fleet (two "processes")
        a, b = RedisWarmStore(client), RedisWarmStore(client)
        await a.claim("k", 0.0, 60.0)
        await a.done("k", 0.0, True, 60.0)
        m1, m2 = MemoryWarmStore(), MemoryWarmStore()
        await m1.claim("k", 0.0, 60.0)
        await m1.done("k", 0.0, True, 60.0)
        return await b.claim("k", 0.0, 60.0), await m2.claim("k", 0.0, 60.0)

    assert with_client(redis_url, run) == ("warm", "first")


# -- the rate limiter --------------------------------------------------------------------------
def test_a_failed_run_fails_each_of_its_callers_and_the_next_run_still_books(
    redis_url: str,
) -> None:
    async def run(client: aredis.Redis) -> tuple[list[Any], float, list[int]]:
        counting = Counting(client)
        limiter = RedisRateLimiter(counting, limits_table({KEY: RPM600}), clock=lambda: 5.0)  # type: ignore[arg-type]
        # the bucket's key holds something that is not a hash: the script errors
        await client.set(limiter.prefix + KEY, "not a hash")
        counting.gate = asyncio.Event()
        waiting = [asyncio.create_task(limiter.acquire(KEY)) for _ in range(3)]
        await asyncio.sleep(0)  # all three join one run, held at the gate
        counting.gate.set()
        failed = await asyncio.gather(*waiting, return_exceptions=True)
        await client.delete(limiter.prefix + KEY)
        after = await limiter.acquire(KEY)
        return failed, after, [len(args) for args in counting.runs]

    failed, after, runs = with_client(redis_url, run)
    # one run booked the three (5 fixed arguments, 3 units each), one the call after
    assert runs == [5 + 3 * 3, 5 + 3]
    assert len(failed) == 3
    assert all(isinstance(e, ResponseError) and "WRONGTYPE" in str(e) for e in failed)
    assert after == 0.0  # a fresh bucket: the first call goes at once


def test_limits_removed_before_the_run_book_nothing(redis_url: str) -> None:
    table: dict[str, Limits] = {KEY: RPM600}

    async def run(client: aredis.Redis) -> tuple[list[float], int, int]:
        counting = Counting(client)
        limiter = RedisRateLimiter(counting, limits_table(table), clock=lambda: 5.0)  # type: ignore[arg-type]
        # acquires queued while the limits still apply, then the limit is dropped
        tasks = [asyncio.create_task(limiter.acquire(KEY)) for _ in range(5)]
        del table[KEY]
        waits = await asyncio.gather(*tasks)
        return list(waits), len(counting.runs), await client.exists(limiter.prefix + KEY)

    waits, runs, exists = with_client(redis_url, run)
    assert (waits, runs, exists) == ([0.0] * 5, 0, 0)


def test_an_unlimited_key_costs_no_round_trip_to_adapt(redis_url: str) -> None:
    async def run(client: aredis.Redis) -> tuple[int, int]:
        counting = Counting(client)
        limiter = RedisRateLimiter(counting, limits_table({}))  # type: ignore[arg-type]
        await limiter.adapt("anthropic:other", Observed((10, None, None), (0, None, None)))
        return len(counting.runs), await client.dbsize()

    assert with_client(redis_url, run) == (0, 0)


def test_headers_arriving_during_an_adapt_are_merged_into_one_more_run(redis_url: str) -> None:
    """Three replies' headers while the first adapt is in flight: the two later ones go
    in one run, with the newer limits and the fewest units left."""

    async def run(client: aredis.Redis) -> tuple[list[list[str]], Any]:
        counting = Counting(client)
        limits = Limits(requests_per_min=600, input_tokens_per_min=60_000, burst_s=1.0)
        limiter = RedisRateLimiter(counting, limits_table({KEY: limits}), clock=lambda: 5.0)  # type: ignore[arg-type]
        counting.gate = asyncio.Event()
        first = asyncio.create_task(
            limiter.adapt(KEY, Observed((500, None, None), (9, None, None)))
        )
        await asyncio.sleep(0)  # the first run is in flight, held at the gate
        await limiter.adapt(KEY, Observed((400, 50_000, None), (3, 100, None)))
        await limiter.adapt(KEY, Observed((None, 40_000, None), (7, None, None)))
        counting.gate.set()
        await first
        return counting.runs, await limiter.state(KEY)

    runs, state = with_client(redis_url, run)
    # ARGV: now, burst, 3 configured, 3 reported limits, 3 remaining
    assert [r[5:] for r in runs] == [
        ["500.0", "", "", "9.0", "", ""],
        ["400.0", "40000.0", "", "3.0", "100.0", ""],
    ]
    assert state.learnt_per_min == (400.0, 40_000.0, None)

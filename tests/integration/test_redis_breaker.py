"""RedisBreakerStore against a real Redis: it agrees with the pure rules step by step,
stays atomic across connections, and runs chaos drills with a real TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis
import redis.asyncio as aredis

from tasks.redis_breaker import RedisBreakerStore
from tests.services import require_service, service_redis_url
from tests.unit.test_breaker import KEY, SCENARIOS, Scenario, replay_pure, replay_store
from workers.breaker import Admission, BreakerPolicy, BreakerState, Transition

REDIS_URL = service_redis_url(9)

pytestmark = pytest.mark.redis

T = TypeVar("T")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis db 9, flushed before and after the test."""
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


def run_with_clients(url: str, fn: Callable[[aredis.Redis, aredis.Redis], Awaitable[T]]) -> T:
    """Run ``fn`` with two separate connections (two "processes"), closing both after."""

    async def main() -> T:
        a = aredis.Redis.from_url(url)
        b = aredis.Redis.from_url(url)
        try:
            return await fn(a, b)
        finally:
            await a.aclose()
            await b.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_redis_store_agrees_with_pure_functions(redis_url: str, scenario: Scenario) -> None:
    async def go(a: aredis.Redis, _: aredis.Redis) -> object:
        return await replay_store(RedisBreakerStore(a, scenario.policy), scenario.steps)

    # Every step's admission/transition and the stored state after it are identical.
    assert run_with_clients(redis_url, go) == replay_pure(scenario.policy, scenario.steps)


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_concurrent_admits_on_half_open_admit_exactly_the_probe_limit(
    redis_url: str, probes: int
) -> None:
    policy = BreakerPolicy(failure_threshold=1, recovery_s=30.0, half_open_probes=probes)

    async def go(a: aredis.Redis, b: aredis.Redis) -> tuple[list[Admission], BreakerState]:
        first, second = RedisBreakerStore(a, policy), RedisBreakerStore(b, policy)
        # Given an open breaker whose recovery has elapsed
        assert (await first.record(KEY, 0.0, ok=False, was_probe=False)) is not None
        # When 20 callers on two connections ask at once
        stores = (first, second)
        results = await asyncio.gather(*(stores[i % 2].admit(KEY, 30.0) for i in range(20)))
        return list(results), await second.snapshot(KEY)

    results, state = run_with_clients(redis_url, go)
    # Then exactly `probes` calls are probes, one transition, the rest rejected
    assert sum(r.probe for r in results) == probes
    assert sum(r.verdict == "rejected" for r in results) == 20 - probes
    transitions = [r.transition for r in results if r.transition is not None]
    assert transitions == [Transition(KEY, "open", "half_open", 30.0, "recovery_elapsed")]
    assert state.state == "half_open"
    assert state.probes_in_flight == probes


def test_concurrent_probe_successes_close_exactly_once(redis_url: str) -> None:
    policy = BreakerPolicy(failure_threshold=1, recovery_s=1.0, half_open_probes=4)

    async def go(a: aredis.Redis, b: aredis.Redis) -> tuple[list[Transition | None], BreakerState]:
        first, second = RedisBreakerStore(a, policy), RedisBreakerStore(b, policy)
        # Given a half-open breaker with 4 probes out
        await first.record(KEY, 0.0, ok=False, was_probe=False)
        for store in (first, second, first, second):
            assert (await store.admit(KEY, 1.0)).probe
        # When all 4 succeed at once on two connections
        stores = (first, second)
        events = await asyncio.gather(
            *(stores[i % 2].record(KEY, 2.0, ok=True, was_probe=True) for i in range(4))
        )
        return list(events), await first.snapshot(KEY)

    events, state = run_with_clients(redis_url, go)
    # Then the breaker closes once (the 2nd success), later successes change nothing
    assert [e.reason for e in events if e is not None] == ["probes_succeeded"]
    assert state == BreakerState()


def test_stores_with_different_prefixes_are_independent(redis_url: str) -> None:
    policy = BreakerPolicy(failure_threshold=1)

    async def go(a: aredis.Redis, b: aredis.Redis) -> tuple[BreakerState, BreakerState]:
        one = RedisBreakerStore(a, policy, prefix="test:one:")
        two = RedisBreakerStore(b, policy, prefix="test:two:")
        await one.record(KEY, 0.0, ok=False, was_probe=False)
        return await one.snapshot(KEY), await two.snapshot(KEY)

    one, two = run_with_clients(redis_url, go)
    assert one.state == "open"
    assert two == BreakerState()


def test_drill_expires_with_its_ttl(redis_url: str) -> None:
    async def go(a: aredis.Redis, b: aredis.Redis) -> None:
        first, second = RedisBreakerStore(a), RedisBreakerStore(b)
        # Given a 200 ms drill set through one connection
        await first.disable(KEY, until=time.time() + 0.2, reason="chaos: provider down")
        # Then the other connection sees it and rejects, leaving the breaker untouched
        assert await second.disabled(KEY, time.time()) == "chaos: provider down"
        assert await second.admit(KEY, 1.0) == Admission("rejected", "disabled")
        assert (await second.admit("other:model", 1.0)).verdict == "allowed"
        assert await second.snapshot(KEY) == BreakerState()
        # When the TTL runs out (polled, bounded at 3 s)
        deadline = time.monotonic() + 3.0
        while await second.disabled(KEY, time.time()) is not None:
            assert time.monotonic() < deadline, "drill did not expire"
            await asyncio.sleep(0.02)
        # Then calls go through again
        assert (await second.admit(KEY, 1.0)).verdict == "allowed"

    run_with_clients(redis_url, go)


def test_clear_ends_a_drill_and_a_past_until_sets_none(redis_url: str) -> None:
    async def go(a: aredis.Redis, b: aredis.Redis) -> None:
        first, second = RedisBreakerStore(a, clock=lambda: 1000.0), RedisBreakerStore(b)
        # Given a long drill
        await first.disable(KEY, until=1000.0 + 3600, reason="drill")
        assert 0 < await a.pttl("cascade:breaker:drill:" + KEY) <= 3_600_000
        assert (await second.admit(KEY, 1.0)).verdict == "rejected"
        # When it is cleared from the other connection, it is gone
        await second.clear(KEY)
        assert await first.disabled(KEY, 1.0) is None
        assert (await first.admit(KEY, 1.0)).verdict == "allowed"
        # and a drill whose `until` already passed is not set at all
        await first.disable(KEY, until=999.0, reason="too late")
        assert await second.disabled(KEY, 1.0) is None

    run_with_clients(redis_url, go)


def test_a_plain_success_costs_no_round_trip(redis_url: str) -> None:
    async def go(a: aredis.Redis, _: aredis.Redis) -> tuple[object, int]:
        store = RedisBreakerStore(a)
        # When a call that was not a probe succeeds on a fresh breaker
        event = await store.record(KEY, 5.0, ok=True, was_probe=False)
        # Then nothing was written (the script never ran)
        return event, await a.exists("cascade:breaker:state:" + KEY)

    assert run_with_clients(redis_url, go) == (None, 0)


def test_closed_verdict_is_reused_for_its_ttl_and_dropped_by_a_local_failure(
    redis_url: str,
) -> None:
    policy = BreakerPolicy(failure_threshold=1, recovery_s=600.0)

    async def go(a: aredis.Redis, b: aredis.Redis) -> list[str]:
        cached = RedisBreakerStore(a, policy, closed_ttl_s=0.3)
        other = RedisBreakerStore(b, policy)
        seen = [(await cached.admit(KEY, 1.0)).verdict]
        # Given another process opens the breaker
        await other.record(KEY, 2.0, ok=False, was_probe=False)
        assert (await other.admit(KEY, 2.0)).verdict == "rejected"
        # Then this process still admits within the TTL, and rejects once it has run out
        seen.append((await cached.admit(KEY, 2.0)).verdict)
        await asyncio.sleep(0.35)
        seen.append((await cached.admit(KEY, 3.0)).verdict)
        # And a failure recorded here drops the reuse at once
        await other.clear(KEY)
        await b.delete("cascade:breaker:state:" + KEY)
        seen.append((await cached.admit(KEY, 4.0)).verdict)
        await cached.record(KEY, 5.0, ok=False, was_probe=False)
        seen.append((await cached.admit(KEY, 5.0)).verdict)
        return seen

    assert run_with_clients(redis_url, go) == [
        "allowed",
        "allowed",
        "rejected",
        "allowed",
        "rejected",
    ]


def test_an_expired_verdict_is_renewed_by_one_admit_while_the_rest_reuse_it(
    redis_url: str,
) -> None:
    async def go(a: aredis.Redis, _: aredis.Redis) -> tuple[int, int, int, set[str]]:
        store = RedisBreakerStore(a, BreakerPolicy(), closed_ttl_s=0.2)
        real, delay, asked = store._admit, [0.0], [0]

        async def slow(**kwargs: list[str]) -> list[bytes]:
            asked[0] += 1
            await asyncio.sleep(delay[0])
            return await real(**kwargs)  # type: ignore[no-any-return]

        store._admit = slow  # type: ignore[assignment]
        await store.admit(KEY, 1.0)
        # Given the reused verdict has run out and Redis answers in 100 ms
        await asyncio.sleep(0.25)
        delay[0] = 0.1
        # When 20 calls are admitted at once, then one asks Redis and all are allowed
        verdicts = {
            a.verdict for a in await asyncio.gather(*(store.admit(KEY, 2.0) for _ in range(20)))
        }
        burst = asked[0]
        # Given Redis hangs on the next renewal
        await asyncio.sleep(0.25)
        delay[0] = 0.6
        renewing = asyncio.create_task(store.admit(KEY, 3.0))
        await asyncio.sleep(0.05)
        await store.admit(KEY, 3.0)  # reuses the old verdict: no second question
        while_renewing = asked[0]
        # Then once one more TTL has passed, a call asks Redis itself
        await asyncio.sleep(0.3)
        await store.admit(KEY, 4.0)
        await renewing
        return burst, while_renewing, asked[0], verdicts

    burst, while_renewing, after, verdicts = run_with_clients(redis_url, go)
    assert verdicts == {"allowed"}
    assert burst == 2  # the first admit, then one for the 20
    assert while_renewing == 3
    assert after == 4

"""A model over its rate limit must not hold the executor's call slots: its calls wait
for their booked start before they take a slot, so another model's calls go at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from workers.engine import RealtimeExecutor
from workers.paced import RateLimitedProvider
from workers.providers.base import ClassifyRequest, Reply, Usage
from workers.ratelimit import Limits, MemoryRateLimiter, limits_table
from workers.retry import RetryPolicy

SLOW, FREE = "model-slow", "model-free"  # limited to 6,000/min (0.01 s apart); unlimited
REQUEST = ClassifyRequest(
    provider="anthropic",
    model=SLOW,
    system="s",
    user="u",
    labels=("a", "b"),
    max_tokens=16,
    mechanism="forced_tool",
)


class Api:
    """Answers after a moment and notes the order in which the calls finished."""

    def __init__(self) -> None:
        self.finished: list[str] = []

    async def classify(self, request: ClassifyRequest) -> Reply:
        await asyncio.sleep(0.002)
        self.finished.append(request.model)
        return Reply("end_turn", {"label": "a"}, "", Usage(1, 1))

    async def aclose(self) -> None:
        return None


def test_calls_waiting_for_their_rate_limit_leave_the_slots_to_other_models() -> None:
    # Given 4 call slots, 40 calls of a model limited to a burst of 2 then one per 10 ms
    # (about 0.4 s of queue), and, behind them, 4 calls of an unlimited model
    api = Api()
    limiter = MemoryRateLimiter(
        limits_table({f"anthropic:{SLOW}": Limits(requests_per_min=6000, burst_s=0.02)})
    )
    provider = RateLimitedProvider(api, limiter)
    executor = RealtimeExecutor(lambda _: provider, RetryPolicy(), concurrency=4)
    slow = [replace(REQUEST, user=f"s{i}") for i in range(40)]
    free = [replace(REQUEST, model=FREE, user=f"f{i}") for i in range(4)]
    # When they are all handed to the executor at once
    results = asyncio.run(executor.execute([*slow, *free]))
    # Then every call was answered, and the unlimited model's calls did not queue
    # behind the limited one's: all four finished before the limited model's 10th
    assert all(tries[-1].reply is not None for tries in results)
    assert api.finished.count(SLOW) == 40
    tenth_slow = [i for i, m in enumerate(api.finished) if m == SLOW][9]
    assert max(i for i, m in enumerate(api.finished) if m == FREE) < tenth_slow

"""The rate limiter's pure GCRA (plain-float clock), header parsing, the memory limiter
and the wrapping provider.

``SCENARIOS`` and ``replay_pure`` are shared with
``tests/integration/test_redis_ratelimit.py``, which checks the Redis limiter
agrees with the pure functions step by step.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from workers.paced import RateLimitedProvider
from workers.providers.base import ClassifyRequest, ProviderError, Reply, TransientError, Usage
from workers.ratelimit import (
    CUT,
    CUT_HOLD_S,
    FLOOR,
    RECOVER_PER_S,
    BucketState,
    Cost,
    Limits,
    MemoryRateLimiter,
    Observed,
    adapt,
    available,
    could_lower,
    effective_per_min,
    limits_table,
    parse_rate_headers,
    parse_reset,
    reserve,
)

RPM600 = Limits(requests_per_min=600)  # spacing 0.1 s, burst 1 s = 10 calls
TOKENS = Limits(requests_per_min=600, input_tokens_per_min=6000, output_tokens_per_min=600)
NONE = (None, None, None)


def st(r: float = 0.0, i: float = 0.0, o: float = 0.0) -> BucketState:
    return BucketState((r, i, o))


# --- reserve ----------------------------------------------------------------------------

# (limits, state, now, cost, expected wait, expected tat)
RESERVE_ROWS: list[tuple[Limits, BucketState, float, Cost, float, tuple[float, float, float]]] = [
    # an empty bucket: no wait, the next arrival is one spacing later
    (RPM600, st(), 100.0, Cost(), 0.0, (100.1, 0.0, 0.0)),
    # the 10th call of a burst still goes at once (tat 100.9 -> 101.0)
    (RPM600, st(100.9), 100.0, Cost(), 0.0, (101.0, 0.0, 0.0)),
    # the 11th waits one spacing: the burst of 1 s is used up
    (RPM600, st(101.0), 100.0, Cost(), 0.1, (101.1, 0.0, 0.0)),
    # a booked queue far ahead: wait until our slot, and book after it
    (RPM600, st(105.0), 100.0, Cost(), 4.1, (105.1, 0.0, 0.0)),
    # a stale tat in the past counts from now
    (RPM600, st(50.0), 100.0, Cost(), 0.0, (100.1, 0.0, 0.0)),
    # input tokens are the bottleneck: 600 tokens need 6 s at 100/s, more than the burst,
    # so the call waits until the input bucket is full again (tat 105) and books 6 s
    (TOKENS, st(100.0, 105.0), 100.0, Cost(1, 600), 5.0, (105.1, 111.0, 0.0)),
    # a call bigger than the burst goes when the bucket is full, and pushes tat ahead
    (TOKENS, st(), 100.0, Cost(1, 600, 5), 0.0, (100.1, 106.0, 100.5)),
    # a zero-unit dimension is not touched even when its bucket is far ahead
    (TOKENS, st(0.0, 0.0, 500.0), 100.0, Cost(1, 0, 0), 0.0, (100.1, 0.0, 500.0)),
    # an unlimited dimension is never a reason to wait
    (RPM600, st(0.0, 999.0, 999.0), 100.0, Cost(1, 10_000, 10_000), 0.0, (100.1, 999.0, 999.0)),
    # several calls at once (requests=3) book three spacings
    (RPM600, st(), 100.0, Cost(3), 0.0, (100.3, 0.0, 0.0)),
]


@pytest.mark.parametrize(("limits", "state", "now", "cost", "wait", "tat"), RESERVE_ROWS)
def test_reserve(
    limits: Limits,
    state: BucketState,
    now: float,
    cost: Cost,
    wait: float,
    tat: tuple[float, float, float],
) -> None:
    new, got = reserve(limits, state, now, cost)
    assert got == pytest.approx(wait)
    assert new.tat == pytest.approx(tat)


def test_reserve_holds_the_rate_over_a_long_run() -> None:
    """Many callers asking at once: booked start times never exceed burst + rate * time."""
    state = BucketState()
    starts = []
    for _ in range(2000):
        state, wait = reserve(RPM600, state, 0.0, Cost())
        starts.append(wait)
    for t in (1.0, 10.0, 60.0, 120.0):
        booked = sum(1 for s in starts if s < t)
        assert booked <= 10 + 10 * t + 1e-9
        assert booked >= 10 * t  # and the limiter does not under-use the limit
    assert starts == sorted(starts)


@pytest.mark.parametrize("value", [0, -1.0])
def test_limits_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="requests_per_min"):
        Limits(requests_per_min=value)
    with pytest.raises(ValueError, match="burst_s"):
        Limits(requests_per_min=1, burst_s=value)


# --- adapt ------------------------------------------------------------------------------

# (limits, state, now, observed, expected state)
ADAPT_ROWS: list[tuple[Limits, BucketState, float, Observed, BucketState]] = [
    # plenty left (more than our 1 s burst): nothing changes
    (RPM600, st(), 100.0, Observed(NONE, (500, None, None)), st()),
    # only 2 requests left: available drops to 2 (tat = now + burst - 2 * spacing)
    (RPM600, st(), 100.0, Observed(NONE, (2, None, None)), st(100.8)),
    # nothing left: the full burst must refill first
    (RPM600, st(), 100.0, Observed(NONE, (0, None, None)), st(101.0)),
    # we already think fewer are left than the API says: keep ours (never raise)
    (RPM600, st(100.95), 100.0, Observed(NONE, (5, None, None)), st(100.95)),
    # a lower reported limit is learnt; remaining then counts at the lower rate (1/s)
    (
        RPM600,
        st(),
        100.0,
        Observed((60, None, None), (0, None, None)),
        BucketState((101.0, 0.0, 0.0), (60, None, None)),
    ),
    # the API reports our limit or more again: forget the learnt one
    (
        RPM600,
        BucketState((0.0, 0.0, 0.0), (60, None, None)),
        100.0,
        Observed((1000, None, None), NONE),
        st(),
    ),
    # a dimension we do not limit is never limited by a header
    (RPM600, st(), 100.0, Observed((None, 10, None), (None, 0, None)), st()),
    # output tokens: 100 left at 600/min (spacing 0.1 s): burst 1 s = 10 < 100, no change
    (TOKENS, st(), 100.0, Observed(NONE, (None, None, 100)), st()),
    # output tokens: 4 left -> tat_o = 100 + 1 - 0.4
    (TOKENS, st(), 100.0, Observed(NONE, (None, None, 4)), st(0.0, 0.0, 100.6)),
]


@pytest.mark.parametrize(("limits", "state", "now", "seen", "expected"), ADAPT_ROWS)
def test_adapt(
    limits: Limits, state: BucketState, now: float, seen: Observed, expected: BucketState
) -> None:
    got = adapt(limits, state, now, seen)
    assert got.tat == pytest.approx(expected.tat)
    assert got.learnt_per_min == expected.learnt_per_min


def test_adapt_then_reserve_waits_for_the_api() -> None:
    state = adapt(RPM600, BucketState(), 100.0, Observed(NONE, (0, None, None)))
    assert available(RPM600, state, 100.0, 0) == 0
    _, wait = reserve(RPM600, state, 100.0, Cost())
    assert wait == pytest.approx(60 / (600 * CUT))  # one spacing at the cut rate


def test_little_left_cuts_the_rate_once_per_hold_and_it_climbs_back() -> None:
    # Given 600/min (a burst of 10 requests)
    fresh = BucketState()
    # a reply saying 10 are left (a full burst) cuts nothing
    assert adapt(RPM600, fresh, 100.0, Observed(NONE, (10, None, None))).cut_per_min == NONE
    # When one says 3 are left: the rate is cut to 3/4 of itself
    cut = adapt(RPM600, fresh, 100.0, Observed(NONE, (3, None, None)))
    assert cut.cut_per_min == (600 * CUT, None, None)
    assert cut.cut_at[0] == 100.0
    assert effective_per_min(RPM600, cut, 0, 100.0) == 450.0
    # replies within the hold (sent before the cut) say the same: no second cut
    held = adapt(RPM600, cut, 100.0 + CUT_HOLD_S / 2, Observed(NONE, (0, None, None)))
    assert held.cut_per_min == cut.cut_per_min
    # the rate climbs back by 1 % of the limit a second ...
    assert effective_per_min(RPM600, cut, 0, 110.0) == pytest.approx(450 + 600 * RECOVER_PER_S * 10)
    # ... and after the hold, a shortage cuts again, from where it had climbed to
    later = 100.0 + CUT_HOLD_S
    again = adapt(RPM600, cut, later, Observed(NONE, (0, None, None)))
    climbed = 450 + 600 * RECOVER_PER_S * CUT_HOLD_S
    assert again.cut_per_min[0] == pytest.approx(climbed * CUT)
    # back at the limit once it has climbed all the way
    back = later + (600 - climbed * CUT) / (600 * RECOVER_PER_S)
    assert effective_per_min(RPM600, again, 0, back + 0.01) == 600.0
    # cut after cut, it settles where a hold's climb makes up for a cut, above the floor
    state = fresh
    for k in range(100):
        state = adapt(RPM600, state, 100.0 + k * CUT_HOLD_S, Observed(NONE, (0, None, None)))
    climb = 600 * RECOVER_PER_S * CUT_HOLD_S
    assert state.cut_per_min[0] == pytest.approx(CUT * climb / (1 - CUT))
    # and a cut never goes below the floor
    low = BucketState(cut_per_min=(1.0, None, None), cut_at=(100.0, 0.0, 0.0))
    floored = adapt(RPM600, low, 100.0 + CUT_HOLD_S, Observed(NONE, (0, None, None)))
    assert floored.cut_per_min[0] == 600 * FLOOR


# --- headers ------------------------------------------------------------------------------

HEADER_ROWS: list[tuple[dict[str, str], Observed | None]] = [
    # no rate-limit headers at all
    ({"request-id": "req_1"}, None),
    # the three families, limit and remaining (reset is ignored: GCRA refills continuously)
    (
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "7990",
        },
        Observed((50, 40000, 8000), (49, 39000, 7990)),
    ),
    # names are case-insensitive; unreadable and negative numbers are ignored
    (
        {
            "Anthropic-RateLimit-Requests-Remaining": "3",
            "anthropic-ratelimit-input-tokens-remaining": "lots",
            "anthropic-ratelimit-output-tokens-remaining": "-5",
        },
        Observed(NONE, (3, None, None)),
    ),
    # only a reset header: nothing usable
    ({"anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z"}, None),
]


@pytest.mark.parametrize(("headers", "expected"), HEADER_ROWS)
def test_parse_rate_headers(headers: dict[str, str], expected: Observed | None) -> None:
    assert parse_rate_headers(headers) == expected


@pytest.mark.parametrize(
    ("raw", "now", "expected"),
    [
        ("1970-01-01T00:01:40Z", 90.0, 10.0),  # 100 s after the epoch, now 90 s
        ("1970-01-01T00:01:40+00:00", 120.0, 0.0),  # already past: no wait
        ("soon", 0.0, None),  # unreadable
        (None, 0.0, None),  # absent
    ],
)
def test_parse_reset(raw: str | None, now: float, expected: float | None) -> None:
    assert parse_reset(raw, now) == expected


# --- shared scenarios (memory and Redis limiters) ----------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    limits: Limits
    # (now, "acquire", Cost) or (now, "adapt", Observed)
    steps: list[tuple[float, str, Cost | Observed]]


SCENARIOS = [
    Scenario("burst_then_spaced", RPM600, [(1000.0, "acquire", Cost())] * 14),
    Scenario(
        "tokens_bound",
        TOKENS,
        [(1000.0, "acquire", Cost(1, 300, 20)), (1000.5, "acquire", Cost(1, 300, 20))] * 3,
    ),
    Scenario(
        "adapt_lowers",
        RPM600,
        [
            (1000.0, "acquire", Cost()),
            (1000.0, "adapt", Observed((60, None, None), (1, None, None))),
            (1000.1, "acquire", Cost()),
            (1000.2, "acquire", Cost()),
            (1001.0, "adapt", Observed((600, None, None), (500, None, None))),
            (1001.0, "acquire", Cost()),
        ],
    ),
    Scenario(
        "cut_hold_recover",
        RPM600,
        [
            (1000.0, "acquire", Cost()),
            (1000.0, "adapt", Observed(NONE, (3, None, None))),  # cut to 450/min
            (1000.5, "acquire", Cost()),
            (1001.0, "adapt", Observed(NONE, (0, None, None))),  # held: no second cut
            (1001.5, "acquire", Cost()),
            (1003.0, "adapt", Observed(NONE, (1, None, None))),  # cut again, from 468/min
            (1003.0, "acquire", Cost()),
            (1030.0, "acquire", Cost()),  # climbing back
            (1100.0, "acquire", Cost()),  # back at the limit
        ],
    ),
]


def replay_pure(scenario: Scenario) -> list[tuple[float | None, BucketState]]:
    state = BucketState()
    out: list[tuple[float | None, BucketState]] = []
    for now, op, arg in scenario.steps:
        if op == "acquire":
            assert isinstance(arg, Cost)
            state, wait = reserve(scenario.limits, state, now, arg)
            out.append((wait, state))
        else:
            assert isinstance(arg, Observed)
            state = adapt(scenario.limits, state, now, arg)
            out.append((None, state))
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_memory_limiter_agrees_with_pure_functions(scenario: Scenario) -> None:
    clock = [0.0]
    key = "anthropic:claude-haiku-5-5"
    limiter = MemoryRateLimiter(limits_table({key: scenario.limits}), clock=lambda: clock[0])

    async def run() -> list[tuple[float | None, BucketState]]:
        out: list[tuple[float | None, BucketState]] = []
        for now, op, arg in scenario.steps:
            clock[0] = now
            if op == "acquire":
                assert isinstance(arg, Cost)
                wait = await limiter.acquire(key, *arg.units())
                out.append((wait, limiter.state(key)))
            else:
                assert isinstance(arg, Observed)
                await limiter.adapt(key, arg)
                out.append((None, limiter.state(key)))
        return out

    assert asyncio.run(run()) == replay_pure(scenario)


def test_memory_limiter_leaves_unknown_keys_alone() -> None:
    limiter = MemoryRateLimiter(limits_table({}), clock=lambda: 0.0)
    assert asyncio.run(limiter.acquire("anthropic:other", 1, 10**9, 10**9)) == 0.0


# --- the wrapping provider ----------------------------------------------------------------


class Recorder:
    """A provider that answers (with ``headers`` as the reply's rate limits) or raises ``error``."""

    def __init__(
        self, headers: dict[str, str] | None = None, error: ProviderError | None = None
    ) -> None:
        self.calls = 0
        self.headers = headers
        self.error = error

    async def classify(self, request: ClassifyRequest) -> Reply:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Reply("end_turn", {"label": "a"}, "", Usage(10, 5), rate_limits=self.headers)

    async def aclose(self) -> None:
        return None


REQUEST = ClassifyRequest(
    provider="anthropic",
    model="claude-haiku-5-5",
    system="s" * 400,
    user="u" * 400,
    labels=("a", "b"),
    max_tokens=200,
    mechanism="forced_tool",
)


def test_limited_provider_sleeps_as_told_then_delegates() -> None:
    # Given a limiter at 600/min (a burst of 10) and a recording provider
    clock = [50.0]
    slept: list[float] = []
    limiter = MemoryRateLimiter(
        limits_table({"anthropic:claude-haiku-5-5": RPM600}), clock=lambda: clock[0]
    )

    async def sleep(s: float) -> None:
        slept.append(s)

    inner = Recorder()
    wrapped = RateLimitedProvider(inner, limiter, sleep=sleep)
    # When 12 calls go out at the same instant
    for _ in range(12):
        asyncio.run(wrapped.classify(REQUEST))
    # Then all were delegated, and the last two were told to wait one and two spacings
    assert inner.calls == 12
    assert slept == pytest.approx([0.1, 0.2])
    state = limiter.state("anthropic:claude-haiku-5-5")
    assert state.tat[0] == pytest.approx(51.2)


def test_limited_provider_adapts_to_reply_headers() -> None:
    limiter = MemoryRateLimiter(
        limits_table({"anthropic:claude-haiku-5-5": RPM600}), clock=lambda: 100.0
    )
    inner = Recorder({"anthropic-ratelimit-requests-remaining": "0"})

    async def sleep(s: float) -> None:
        return None

    asyncio.run(RateLimitedProvider(inner, limiter, sleep=sleep).classify(REQUEST))
    # the API says none left: the whole burst must refill first
    assert limiter.state("anthropic:claude-haiku-5-5").tat[0] == pytest.approx(101.0)


async def _no_sleep(s: float) -> None:
    return None


def test_limited_provider_adapts_to_an_errors_headers_then_reraises() -> None:
    # Given a 429 whose headers say the API allows only 60 requests a minute, none left
    limiter = MemoryRateLimiter(
        limits_table({"anthropic:claude-haiku-5-5": RPM600}), clock=lambda: 100.0
    )
    error = TransientError(
        "rate_limit_error: slow down",
        status=429,
        rate_limits={
            "anthropic-ratelimit-requests-limit": "60",
            "anthropic-ratelimit-requests-remaining": "0",
        },
    )
    wrapped = RateLimitedProvider(Recorder(error=error), limiter, sleep=_no_sleep)
    # When the call fails with it
    with pytest.raises(TransientError) as raised:
        asyncio.run(wrapped.classify(REQUEST))
    # Then the same error reaches the caller, and the limiter learnt the lower limit
    # and that nothing is left: the next call waits a whole second's burst at 60/min
    assert raised.value is error
    state = limiter.state("anthropic:claude-haiku-5-5")
    assert state.learnt_per_min[0] == 60
    assert state.tat[0] == pytest.approx(101.0)
    assert asyncio.run(limiter.acquire("anthropic:claude-haiku-5-5")) == pytest.approx(1.0)


def test_limited_provider_ignores_an_error_without_headers() -> None:
    limiter = MemoryRateLimiter(
        limits_table({"anthropic:claude-haiku-5-5": RPM600}), clock=lambda: 100.0
    )
    wrapped = RateLimitedProvider(Recorder(error=TransientError("boom")), limiter, sleep=_no_sleep)
    with pytest.raises(TransientError):
        asyncio.run(wrapped.classify(REQUEST))
    # only the booking of the call itself: one spacing past the clock
    assert limiter.state("anthropic:claude-haiku-5-5").tat[0] == pytest.approx(100.1)


class BrokenStore(MemoryRateLimiter):
    async def adapt(self, key: str, seen: Observed) -> None:
        raise ConnectionError("store unreachable")


def test_a_store_error_while_adapting_keeps_the_reply_and_the_error() -> None:
    # Given a limiter whose store fails on adapt
    limiter = BrokenStore(limits_table({"anthropic:claude-haiku-5-5": RPM600}), clock=lambda: 1.0)
    headers = {"anthropic-ratelimit-requests-remaining": "0"}
    # Then a reply that arrived is still returned ...
    reply = asyncio.run(
        RateLimitedProvider(Recorder(headers), limiter, sleep=_no_sleep).classify(REQUEST)
    )
    assert reply.structured == {"label": "a"}
    # ... and a call's own error is still the one raised
    error = TransientError("overloaded", status=529, rate_limits=headers)
    wrapped = RateLimitedProvider(Recorder(error=error), limiter, sleep=_no_sleep)
    with pytest.raises(TransientError) as raised:
        asyncio.run(wrapped.classify(REQUEST))
    assert raised.value is error


def test_could_lower_is_false_only_when_adapt_leaves_tat_alone() -> None:
    rng = random.Random(7)
    limits = Limits(requests_per_min=600, input_tokens_per_min=60_000, burst_s=2.0)
    # a full burst: 20 requests, 2,000 input tokens
    assert not could_lower(limits, Observed(remaining=(20, 2000, 5)))  # output: unlimited
    assert could_lower(limits, Observed(remaining=(19, None, None)))
    assert could_lower(limits, Observed(remaining=(None, 1999, None)))
    for _ in range(500):
        now = rng.uniform(0, 100)
        state = BucketState(
            (rng.uniform(0, 110), rng.uniform(0, 110), rng.uniform(0, 110)),
            (rng.choice([None, 60.0]), None, None),
        )
        remaining = (rng.uniform(0, 40), rng.uniform(0, 4000), None)
        seen = Observed(limit=(state.learnt_per_min[0], None, None), remaining=remaining)
        if not could_lower(limits, seen):
            assert adapt(limits, state, now, seen).tat == state.tat

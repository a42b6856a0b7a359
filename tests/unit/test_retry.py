from __future__ import annotations

import asyncio
import random

import pytest

from workers.providers.base import (
    CallTag,
    ClassifyRequest,
    ContextError,
    PermanentError,
    ProviderError,
    Reply,
    SpendLimitError,
    TransientError,
    Usage,
)
from workers.retry import LeaseLost, RetryPolicy, Try, backoff_delay, call_with_retry

REQUEST = ClassifyRequest(
    provider="anthropic",
    model="claude-haiku-5-5",
    system="sys",
    user="Classify this item.\n<item>\nhi\n</item>",
    labels=("a", "b"),
    max_tokens=100,
    mechanism="forced_tool",
)
REPLY = Reply(
    stop_reason="tool_use",
    structured={"label": "a", "confidence": 0.9, "reason": "r"},
    text="",
    usage=Usage(10, 5),
    request_id="req_ok",
)


def overloaded(retry_after_s: float | None = None) -> TransientError:
    return TransientError("overloaded", status=529, retry_after_s=retry_after_s)


def rate_limited(retry_after_s: float | None = None) -> TransientError:
    return TransientError("rate limited", status=429, retry_after_s=retry_after_s)


# ---------------------------------------------------------------------------------------
# backoff_delay: pure
# ---------------------------------------------------------------------------------------

POLICY = RetryPolicy(max_attempts=10, base_s=0.5, cap_s=4.0, max_retry_after_s=30.0)


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [
        # after the first failure: base * 2^0
        (1, 0.5),
        # doubling: base * 2^1
        (2, 1.0),
        # base * 2^2
        (3, 2.0),
        # base * 2^3 reaches the cap exactly
        (4, 4.0),
        # base * 2^4 = 8 is capped at 4
        (5, 4.0),
        # far past the cap, still capped
        (9, 4.0),
    ],
)
def test_full_jitter_stays_within_zero_and_the_capped_exponential(
    failures: int, ceiling: float
) -> None:
    rng = random.Random(1234)

    delays = [backoff_delay(POLICY, failures, None, rng) for _ in range(500)]

    assert all(d is not None and 0.0 <= d <= ceiling for d in delays)
    # full jitter spreads over the whole range, not just near the ceiling
    values = [d for d in delays if d is not None]
    assert min(values) < ceiling * 0.1
    assert max(values) > ceiling * 0.9


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_delay(POLICY, n, None, random.Random(7)) for n in range(1, 6)]
    second = [backoff_delay(POLICY, n, None, random.Random(7)) for n in range(1, 6)]

    assert first == second


def test_jitter_draws_uniformly_from_the_ceiling() -> None:
    """The delay is rng.uniform(0, ceiling): same seed, same number."""
    expected = random.Random(99).uniform(0.0, 2.0)

    assert backoff_delay(POLICY, 3, None, random.Random(99)) == expected


BACKOFF_TABLE = [
    # the last allowed attempt failed: stop
    (RetryPolicy(max_attempts=3), 3, None, None),
    # past the last attempt: stop
    (RetryPolicy(max_attempts=3), 4, None, None),
    # max_attempts=1 means no retry at all
    (RetryPolicy(max_attempts=1), 1, None, None),
    # retry-after within the cap is honoured exactly, no jitter
    (RetryPolicy(max_retry_after_s=30.0), 1, 12.5, 12.5),
    # retry-after exactly at the cap is still honoured
    (RetryPolicy(max_retry_after_s=30.0), 1, 30.0, 30.0),
    # retry-after above the cap: the server says "not now", so fall back instead of waiting
    (RetryPolicy(max_retry_after_s=30.0), 1, 30.5, None),
    # retry-after is honoured even above the backoff cap_s (the server knows best)
    (RetryPolicy(cap_s=1.0, max_retry_after_s=30.0), 1, 10.0, 10.0),
    # retry-after 0 means "now"
    (RetryPolicy(), 1, 0.0, 0.0),
    # retry-after does not extend the attempt count
    (RetryPolicy(max_attempts=2), 2, 1.0, None),
]


@pytest.mark.parametrize(("policy", "failures", "retry_after", "expected"), BACKOFF_TABLE)
def test_backoff_delay_table(
    policy: RetryPolicy, failures: int, retry_after: float | None, expected: float | None
) -> None:
    assert backoff_delay(policy, failures, retry_after, random.Random(0)) == expected


# ---------------------------------------------------------------------------------------
# call_with_retry with a scripted provider, a recording sleep and a fake clock
# ---------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedProvider:
    """A Provider that plays a script: each call raises or returns the next entry.

    The last entry repeats when the script runs out. Each call takes ``call_s`` on the clock.
    """

    def __init__(
        self, script: list[ProviderError | Reply], clock: FakeClock, call_s: float = 0.25
    ) -> None:
        self.script = script
        self.clock = clock
        self.call_s = call_s
        self.calls: list[ClassifyRequest] = []
        self.closed = False

    async def classify(self, request: ClassifyRequest) -> Reply:
        entry = self.script[min(len(self.calls), len(self.script) - 1)]
        self.calls.append(request)
        self.clock.now += self.call_s
        if isinstance(entry, ProviderError):
            raise entry
        return entry

    async def aclose(self) -> None:
        self.closed = True


class RecordingSleep:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.now += delay


def run(
    script: list[ProviderError | Reply], policy: RetryPolicy, seed: int = 0
) -> tuple[list[Try], ScriptedProvider, RecordingSleep]:
    clock = FakeClock()
    provider = ScriptedProvider(script, clock)
    sleep = RecordingSleep(clock)
    tries = asyncio.run(
        call_with_retry(
            provider, REQUEST, policy, sleep=sleep, rng=random.Random(seed), clock=clock
        )
    )
    return tries, provider, sleep


def test_success_on_the_first_try() -> None:
    tries, provider, sleep = run([REPLY], RetryPolicy())

    assert tries == [Try(REPLY, None, 250)]
    assert provider.calls == [REQUEST]
    assert sleep.delays == []


def test_a_429_storm_makes_exactly_max_attempts_calls() -> None:
    # Given a provider that always answers 429
    error = rate_limited()

    # When it is called under a 4-attempt policy
    tries, provider, sleep = run([error], RetryPolicy(max_attempts=4))

    # Then it is called 4 times, sleeps between calls only, and returns every try
    assert len(provider.calls) == 4
    assert len(sleep.delays) == 3
    assert [t.error for t in tries] == [error] * 4
    assert all(t.reply is None for t in tries)


def test_the_sleeps_follow_the_seeded_backoff() -> None:
    policy = RetryPolicy(max_attempts=4, base_s=1.0, cap_s=10.0)

    _, _, sleep = run([overloaded()], policy, seed=42)

    rng = random.Random(42)
    assert sleep.delays == [backoff_delay(policy, n, None, rng) for n in (1, 2, 3)]


@pytest.mark.parametrize(
    "error",
    [
        # model retired: retrying cannot help
        PermanentError("model not found", status=404),
        # bad request
        PermanentError("invalid request", status=400),
        # a context error is permanent for this model
        ContextError("prompt is too long", status=400),
        # the spend limit must stop at once
        SpendLimitError("spend limit reached", status=400),
    ],
)
def test_a_non_transient_error_makes_exactly_one_call(error: ProviderError) -> None:
    tries, provider, sleep = run([error, REPLY], RetryPolicy(max_attempts=5))

    assert len(provider.calls) == 1
    assert sleep.delays == []
    assert [t.error for t in tries] == [error]


def test_success_after_two_transient_failures_returns_three_tries() -> None:
    # Given two transient failures, then a reply
    script: list[ProviderError | Reply] = [overloaded(), rate_limited(), REPLY]

    # When called with room for 3 attempts
    tries, provider, sleep = run(script, RetryPolicy(max_attempts=3))

    # Then all three tries are returned, the last with the reply
    assert len(tries) == 3
    assert [t.error is not None for t in tries] == [True, True, False]
    assert tries[-1].reply is REPLY
    assert len(provider.calls) == 3
    assert len(sleep.delays) == 2


def test_retry_after_is_the_slept_delay() -> None:
    # Given a 429 with retry-after 7s, then a reply
    script: list[ProviderError | Reply] = [rate_limited(retry_after_s=7.0), REPLY]

    # When called
    tries, _, sleep = run(script, RetryPolicy())

    # Then exactly 7s were slept, without jitter
    assert sleep.delays == [7.0]
    assert tries[-1].reply is REPLY


def test_retry_after_above_the_cap_stops_without_sleeping() -> None:
    tries, provider, sleep = run(
        [rate_limited(retry_after_s=60.0), REPLY], RetryPolicy(max_retry_after_s=30.0)
    )

    assert len(provider.calls) == 1
    assert sleep.delays == []
    assert tries[0].error is not None


def test_the_total_time_budget_stops_retrying() -> None:
    # Given a server that always says "retry after 4s" and a 10s total budget
    policy = RetryPolicy(max_attempts=100, max_total_s=10.0, max_retry_after_s=30.0)

    # When called (each call takes 0.25s on the fake clock)
    tries, provider, sleep = run([rate_limited(retry_after_s=4.0)], policy)

    # Then it stops before a sleep would cross the budget:
    # t=0.25 +4 -> 4.25, call -> 4.5 +4 -> 8.5, call -> 8.75 (+4 = 12.75 > 10: stop)
    assert sleep.delays == [4.0, 4.0]
    assert len(provider.calls) == 3
    assert len(tries) == 3


def test_the_budget_counts_the_planned_delay() -> None:
    """A delay that would end exactly at the budget is still taken."""
    policy = RetryPolicy(max_attempts=5, max_total_s=5.25, max_retry_after_s=30.0)

    _, provider, sleep = run([rate_limited(retry_after_s=5.0), REPLY], policy)

    assert sleep.delays == [5.0]
    assert len(provider.calls) == 2


def test_latency_is_measured_on_the_injected_clock() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([overloaded(), REPLY], clock, call_s=1.5)
    sleep = RecordingSleep(clock)

    tries = asyncio.run(
        call_with_retry(
            provider, REQUEST, RetryPolicy(), sleep=sleep, rng=random.Random(0), clock=clock
        )
    )

    # the sleep between the tries is not part of either try's latency
    assert [t.latency_ms for t in tries] == [1500, 1500]


def test_the_same_request_is_sent_on_every_try() -> None:
    _, provider, _ = run([overloaded(), overloaded(), REPLY], RetryPolicy(max_attempts=3))

    assert provider.calls == [REQUEST, REQUEST, REQUEST]


# ---------------------------------------------------------------------------------------
# call_with_retry: the journal (each try written before it is sent), pacing, surprises
# ---------------------------------------------------------------------------------------

TAGGED = ClassifyRequest(
    provider=REQUEST.provider,
    model=REQUEST.model,
    system=REQUEST.system,
    user=REQUEST.user,
    labels=REQUEST.labels,
    max_tokens=REQUEST.max_tokens,
    mechanism=REQUEST.mechanism,
    tag=CallTag(job_id=1, item_pk=2, first_step=3, tier_index=1, tier="small", role="primary"),
)


class Journal:
    """Records what the retry loop tells it, in order; ``lose_at`` raises LeaseLost there."""

    def __init__(self, events: list[tuple[object, ...]], lose_at: int | None = None) -> None:
        self.events = events
        self.lose_at = lose_at

    async def sending(self, request: ClassifyRequest, n: int) -> None:
        if n == self.lose_at:
            raise LeaseLost(f"try {n}")
        self.events.append(("sending", n))

    def returned(self, request: ClassifyRequest, n: int, attempt: Try) -> None:
        self.events.append(("returned", n, attempt))


class LoggingProvider(ScriptedProvider):
    """A scripted provider that also logs each call into the shared event list."""

    def __init__(
        self, script: list[ProviderError | Reply], events: list[tuple[object, ...]]
    ) -> None:
        super().__init__(script, FakeClock())
        self.events = events

    async def classify(self, request: ClassifyRequest) -> Reply:
        self.events.append(("classify",))
        return await super().classify(request)


def run_journaled(
    request: ClassifyRequest,
    provider: ScriptedProvider,
    journal: Journal,
    policy: RetryPolicy | None = None,
) -> list[Try]:
    return asyncio.run(
        call_with_retry(
            provider,
            request,
            policy or RetryPolicy(max_attempts=3),
            sleep=RecordingSleep(provider.clock),
            rng=random.Random(0),
            clock=provider.clock,
            journal=journal,
        )
    )


def test_each_try_is_journaled_before_it_is_sent_and_when_it_returns() -> None:
    events: list[tuple[object, ...]] = []
    provider = LoggingProvider([overloaded(), REPLY], events)

    tries = run_journaled(TAGGED, provider, Journal(events))

    assert events == [
        ("sending", 0),
        ("classify",),
        ("returned", 0, tries[0]),
        ("sending", 1),
        ("classify",),
        ("returned", 1, tries[1]),
    ]
    assert tries[1].reply == REPLY


def test_an_untagged_request_is_not_journaled() -> None:
    events: list[tuple[object, ...]] = []
    provider = LoggingProvider([REPLY], events)

    run_journaled(REQUEST, provider, Journal(events))

    assert events == [("classify",)]


@pytest.mark.parametrize(
    ("lose_at", "calls"),
    [
        (0, 0),  # the item was taken before the first try: nothing is sent
        (1, 1),  # taken while waiting to retry: the retry is not sent
    ],
)
def test_a_lost_lease_stops_before_the_request_leaves(lose_at: int, calls: int) -> None:
    events: list[tuple[object, ...]] = []
    provider = LoggingProvider([overloaded(), REPLY], events)

    with pytest.raises(LeaseLost, match=f"try {lose_at}"):
        run_journaled(TAGGED, provider, Journal(events, lose_at=lose_at))

    assert len(provider.calls) == calls


class Exploding(ScriptedProvider):
    def __init__(self, message: str) -> None:
        super().__init__([REPLY], FakeClock())
        self.message = message

    async def classify(self, request: ClassifyRequest) -> Reply:
        self.calls.append(request)
        raise ValueError(self.message)


def test_an_unexpected_exception_is_one_transient_try_and_is_not_retried() -> None:
    events: list[tuple[object, ...]] = []
    provider = Exploding("the SDK could not parse it")

    tries = run_journaled(TAGGED, provider, Journal(events), RetryPolicy(max_attempts=5))

    assert len(provider.calls) == 1  # a bug does not get better on a retry
    [attempt] = tries
    assert attempt.reply is None and isinstance(attempt.error, TransientError)
    assert attempt.error.message == "internal error: ValueError: the SDK could not parse it"
    assert events == [("sending", 0), ("returned", 0, attempt)]


def test_an_unexpected_exceptions_message_is_cut_to_500_characters() -> None:
    tries = run_journaled(REQUEST, Exploding("x" * 2000), Journal([]))

    error = tries[0].error
    assert error is not None
    assert len(error.message) == 500
    assert error.message.startswith("internal error: ValueError: xxx")


class PacedProvider(LoggingProvider):
    async def ready(self, request: ClassifyRequest) -> None:
        self.events.append(("ready",))


def test_a_paced_provider_is_made_ready_before_every_try_and_before_its_row() -> None:
    events: list[tuple[object, ...]] = []
    provider = PacedProvider([rate_limited(), REPLY], events)

    tries = run_journaled(TAGGED, provider, Journal(events))

    assert [e[0] for e in events] == [
        "ready", "sending", "classify", "returned",
        "ready", "sending", "classify", "returned",
    ]  # fmt: skip
    assert tries[-1].reply == REPLY

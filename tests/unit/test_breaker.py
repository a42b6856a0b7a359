"""The breaker's pure transitions (plain-float clock) and the memory store.

``SCENARIOS``, ``replay_pure`` and ``replay_store`` are shared with
``tests/integration/test_redis_breaker.py``, which checks the Redis store agrees
with the pure functions step by step.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from workers import breaker
from workers.breaker import (
    Admission,
    BreakerPolicy,
    BreakerState,
    Transition,
    admit,
    record_failure,
    record_success,
)
from workers.stores import BreakerStore, MemoryBreakerStore

POLICY = BreakerPolicy()  # threshold 5 in 60 s, recovery 30 s, 2 probes, 2 successes to close
KEY = "anthropic:claude-haiku-5-5"


def closed(*failures: float) -> BreakerState:
    return BreakerState(state="closed", failures=failures)


def open_(opened_at: float | None, *failures: float) -> BreakerState:
    return BreakerState(state="open", failures=failures, opened_at=opened_at)


def half_open(probes: int, successes: int = 0, opened_at: float = 100.0) -> BreakerState:
    return BreakerState(
        state="half_open",
        opened_at=opened_at,
        probes_in_flight=probes,
        probe_successes=successes,
    )


# --- admit ----------------------------------------------------------------------------

# (state, now, expected state, verdict, transition reason or None)
ADMIT_ROWS: list[tuple[BreakerState, float, BreakerState, str, str | None]] = [
    # closed lets every call through and does not change
    (closed(), 0.0, closed(), "allowed", None),
    # failures below the threshold do not block
    (closed(1, 2, 3, 4), 5.0, closed(1, 2, 3, 4), "allowed", None),
    # open, recovery not yet elapsed (29.999 s of 30)
    (open_(100.0), 129.999, open_(100.0), "rejected", None),
    # open, recovery exactly elapsed: becomes half_open, this call is the first probe
    (open_(100.0), 130.0, half_open(1), "probe", "recovery_elapsed"),
    # open long ago: same, and window failures are kept as they were
    (
        open_(100.0, 99.0),
        1000.0,
        BreakerState("half_open", (99.0,), 100.0, 1, 0),
        "probe",
        "recovery_elapsed",
    ),
    # open with an unknown opened_at counts recovery from now: rejected
    (open_(None), 5.0, open_(None), "rejected", None),
    # half_open with a free probe slot admits a probe
    (half_open(1), 131.0, half_open(2), "probe", None),
    # half_open keeps probe successes while admitting more probes
    (half_open(0, 1), 131.0, half_open(1, 1), "probe", None),
    # half_open with all probe slots taken rejects
    (half_open(2), 131.0, half_open(2), "rejected", None),
]


@pytest.mark.parametrize(("state", "now", "expected", "verdict", "reason"), ADMIT_ROWS)
def test_admit(
    state: BreakerState, now: float, expected: BreakerState, verdict: str, reason: str | None
) -> None:
    new, admission = admit(POLICY, state, now, key=KEY)
    assert new == expected
    assert admission.verdict == verdict
    assert admission.allowed is (verdict != "rejected")
    assert admission.probe is (verdict == "probe")
    if reason is None:
        assert admission.transition is None
    else:
        assert admission.transition == Transition(KEY, state.state, new.state, now, reason)


# --- record_success / record_failure ---------------------------------------------------

# (state, now, ok, was_probe, expected state, transition reason or None)
RECORD_ROWS: list[tuple[BreakerState, float, bool, bool, BreakerState, str | None]] = [
    # a failure in closed is remembered
    (closed(1, 2, 3), 10.0, False, False, closed(1, 2, 3, 10), None),
    # the threshold-th failure within the window opens, keeping the failures
    (closed(1, 2, 3, 4), 10.0, False, False, open_(10.0, 1, 2, 3, 4, 10), "failure_threshold"),
    # a failure exactly window_s old has left the window: 4 in window, stays closed
    (closed(0, 1, 2, 3), 60.0, False, False, closed(1, 2, 3, 60), None),
    # a success that is not a probe changes nothing, not even old failures (the next
    # failure drops them): stores skip it without a round trip
    (closed(30, 50), 100.0, True, False, closed(30, 50), None),
    # a late probe result after closing counts like any other call
    (closed(1, 2, 3, 4), 10.0, False, True, open_(10.0, 1, 2, 3, 4, 10), "failure_threshold"),
    # first probe success: one fewer in flight, one more success, still half_open
    (half_open(2), 131.0, True, True, half_open(1, 1), None),
    # enough probe successes close the breaker and clear everything
    (half_open(1, 1), 132.0, True, True, closed(), "probes_succeeded"),
    # a failed probe reopens with a fresh opened_at
    (half_open(2, 1), 133.0, False, True, open_(133.0), "probe_failed"),
    # a non-probe failure in half_open was admitted before opening: ignored
    (half_open(2), 133.0, False, False, half_open(2), None),
    # a non-probe success in half_open does not count as a probe success
    (half_open(2), 133.0, True, False, half_open(2), None),
    # stale failure while open is ignored (does not extend opened_at)
    (open_(100.0), 110.0, False, False, open_(100.0), None),
    # stale success while open is ignored
    (open_(100.0), 110.0, True, False, open_(100.0), None),
    # open drops failures that left the window as it goes (at a failure)
    (open_(100.0, 10, 99), 110.0, False, False, open_(100.0, 99), None),
]


@pytest.mark.parametrize(("state", "now", "ok", "was_probe", "expected", "reason"), RECORD_ROWS)
def test_record(
    state: BreakerState,
    now: float,
    ok: bool,
    was_probe: bool,
    expected: BreakerState,
    reason: str | None,
) -> None:
    fn = record_success if ok else record_failure
    new, event = fn(POLICY, state, now, was_probe, key=KEY)
    assert new == expected
    if reason is None:
        assert event is None
    else:
        assert event == Transition(KEY, state.state, new.state, now, reason)


# --- scripted sequences (shared with the Redis integration test) ------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    policy: BreakerPolicy
    # ("admit", now) | ("ok", now, was_probe) | ("fail", now, was_probe)
    steps: tuple[tuple[Any, ...], ...]
    # per step: an admit's verdict (":reason" if it changed state); a record's reason or "-"
    expected: tuple[str, ...]


def F(now: float, probe: bool = False) -> tuple[Any, ...]:
    return ("fail", now, probe)


def S(now: float, probe: bool = False) -> tuple[Any, ...]:
    return ("ok", now, probe)


def A(now: float) -> tuple[Any, ...]:
    return ("admit", now)


SCENARIOS: list[Scenario] = [
    Scenario(
        "threshold opens, recovery then probes",
        POLICY,
        (F(0), F(1), F(2), F(3), F(4), A(10), A(33.9), A(34), A(34.5), A(35)),
        (
            "-",
            "-",
            "-",
            "-",
            "failure_threshold",
            "rejected",
            "rejected",
            "probe:recovery_elapsed",
            "probe",
            "rejected",
        ),
    ),
    Scenario(
        "old failures leave the window",
        POLICY,
        (F(0), F(10), F(20), F(30), F(60), F(65), A(66), F(70), A(71)),
        # at 60 the failure at 0 is exactly window_s old: still 4 in window
        ("-", "-", "-", "-", "-", "failure_threshold", "rejected", "-", "rejected"),
    ),
    Scenario(
        "full recovery closes and forgets",
        POLICY,
        (
            F(0),
            F(0),
            F(0),
            F(0),
            F(0),
            A(30),
            A(30),
            A(30),
            S(31, True),
            S(32, True),
            A(33),
            F(34),
            A(35),
        ),
        (
            "-",
            "-",
            "-",
            "-",
            "failure_threshold",
            "probe:recovery_elapsed",
            "probe",
            "rejected",
            "-",
            "probes_succeeded",
            "allowed",
            "-",
            "allowed",
        ),
    ),
    Scenario(
        "failed probe reopens with a fresh opened_at",
        POLICY,
        (F(0), F(1), F(2), F(3), F(4), A(34), F(35, True), A(36), A(64.9), A(65), S(66, True)),
        (
            "-",
            "-",
            "-",
            "-",
            "failure_threshold",
            "probe:recovery_elapsed",
            "probe_failed",
            "rejected",
            "rejected",
            "probe:recovery_elapsed",
            "-",
        ),
    ),
    Scenario(
        "stale non-probe results are ignored",
        BreakerPolicy(failure_threshold=2, recovery_s=10),
        (F(0), F(1), F(2), S(3), A(11), F(12), S(12), A(13), S(14, True), S(15, True)),
        (
            "-",
            "failure_threshold",
            "-",
            "-",
            "probe:recovery_elapsed",
            "-",
            "-",
            "probe",
            "-",
            "probes_succeeded",
        ),
    ),
    Scenario(
        "more successes needed than probe slots",
        BreakerPolicy(
            failure_threshold=1, recovery_s=5, half_open_probes=1, probe_successes_to_close=3
        ),
        (F(0), A(5), A(5), S(6, True), A(6), S(7, True), A(7), A(7), S(8, True), A(8)),
        (
            "failure_threshold",
            "probe:recovery_elapsed",
            "rejected",
            "-",
            "probe",
            "-",
            "probe",
            "rejected",
            "probes_succeeded",
            "allowed",
        ),
    ),
    Scenario(
        "float timestamps at the window edge",
        BreakerPolicy(failure_threshold=3, window_s=0.3, recovery_s=0.1),
        (F(0.1), F(0.2), F(0.4), F(0.45), A(0.5), A(0.55), S(0.6, True), S(0.7, True)),
        # 0.4 - 0.1 == 0.30000000000000004 >= 0.3: the first failure has left the window
        (
            "-",
            "-",
            "-",
            "failure_threshold",
            "rejected",
            "probe:recovery_elapsed",
            "-",
            "probes_succeeded",
        ),
    ),
]

Step = tuple[Admission | Transition | None, BreakerState]


def replay_pure(policy: BreakerPolicy, steps: tuple[tuple[Any, ...], ...]) -> list[Step]:
    state = BreakerState()
    out: list[Step] = []
    for op, now, *rest in steps:
        result: Admission | Transition | None
        if op == "admit":
            state, result = admit(policy, state, now, key=KEY)
        else:
            state, result = breaker.record(policy, state, now, op == "ok", rest[0], key=KEY)
        out.append((result, state))
    return out


async def replay_store(store: BreakerStore, steps: tuple[tuple[Any, ...], ...]) -> list[Step]:
    out: list[Step] = []
    for op, now, *rest in steps:
        result: Admission | Transition | None
        if op == "admit":
            result = await store.admit(KEY, now)
        else:
            result = await store.record(KEY, now, op == "ok", rest[0])
        out.append((result, await store.snapshot(KEY)))
    return out


def summarize(results: list[Step]) -> tuple[str, ...]:
    def one(result: Admission | Transition | None) -> str:
        if isinstance(result, Admission):
            t = result.transition
            return result.verdict if t is None else f"{result.verdict}:{t.reason}"
        return "-" if result is None else result.reason

    return tuple(one(result) for result, _ in results)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario_pure(scenario: Scenario) -> None:
    assert len(scenario.steps) == len(scenario.expected)
    assert summarize(replay_pure(scenario.policy, scenario.steps)) == scenario.expected


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario_memory_store_agrees_with_pure(scenario: Scenario) -> None:
    async def main() -> list[Step]:
        return await replay_store(MemoryBreakerStore(scenario.policy), scenario.steps)

    assert asyncio.run(main()) == replay_pure(scenario.policy, scenario.steps)


# --- values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [closed(), closed(0.1, 2.5), open_(7.25, 1, 2), open_(None), half_open(2, 1)],
)
def test_state_round_trips_through_json(state: BreakerState) -> None:
    data = json.loads(json.dumps(state.to_dict()))
    assert BreakerState.from_dict(data) == state


def test_from_dict_rejects_unknown_state() -> None:
    with pytest.raises(ValueError, match="unknown breaker state"):
        BreakerState.from_dict({**closed().to_dict(), "state": "ajar"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"half_open_probes": 0},
        {"probe_successes_to_close": 0},
        {"window_s": 0.0},
        {"recovery_s": -1.0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**kwargs)


# --- memory store -----------------------------------------------------------------------


def test_memory_store_concurrent_admits_on_half_open_admit_exactly_the_probe_limit() -> None:
    async def main() -> tuple[list[Admission], BreakerState]:
        store = MemoryBreakerStore(POLICY)
        # Given an open breaker whose recovery has elapsed
        for t in range(5):
            await store.record(KEY, float(t), ok=False, was_probe=False)
        # When 20 callers ask at once
        results = await asyncio.gather(*(store.admit(KEY, 100.0) for _ in range(20)))
        return list(results), await store.snapshot(KEY)

    results, state = asyncio.run(main())
    # Then exactly half_open_probes are probes, and one of them carried the transition
    assert sum(a.probe for a in results) == POLICY.half_open_probes
    assert sum(a.transition is not None for a in results) == 1
    assert state.state == "half_open"
    assert state.probes_in_flight == POLICY.half_open_probes


def test_memory_store_drill_rejects_until_it_expires() -> None:
    async def main() -> None:
        store = MemoryBreakerStore(POLICY)
        # Given a drill on one key until t=100
        await store.disable(KEY, until=100.0, reason="chaos: provider down")
        # Then that key is rejected while the drill lasts, with the drill's reason visible
        assert await store.disabled(KEY, 50.0) == "chaos: provider down"
        assert await store.admit(KEY, 50.0) == Admission("rejected", "disabled")
        # and other keys are not affected
        assert (await store.admit("other:model", 50.0)).verdict == "allowed"
        # and the breaker itself is untouched
        assert await store.snapshot(KEY) == BreakerState()
        # When the drill's time is up, calls go through again
        assert await store.disabled(KEY, 100.0) is None
        assert (await store.admit(KEY, 100.0)).verdict == "allowed"

    asyncio.run(main())


def test_memory_store_clear_ends_a_drill() -> None:
    async def main() -> None:
        store = MemoryBreakerStore(POLICY)
        await store.disable(KEY, until=1e9, reason="drill")
        assert (await store.admit(KEY, 1.0)).verdict == "rejected"
        await store.clear(KEY)
        assert await store.disabled(KEY, 1.0) is None
        assert (await store.admit(KEY, 1.0)).verdict == "allowed"
        await store.clear(KEY)  # clearing again is harmless

    asyncio.run(main())


def test_memory_store_keys_are_independent() -> None:
    async def main() -> tuple[BreakerState, BreakerState]:
        store = MemoryBreakerStore(BreakerPolicy(failure_threshold=1))
        event = await store.record(KEY, 1.0, ok=False, was_probe=False)
        assert event == Transition(KEY, "closed", "open", 1.0, "failure_threshold")
        return await store.snapshot(KEY), await store.snapshot("other:model")

    mine, other = asyncio.run(main())
    assert mine.state == "open"
    assert other == BreakerState()

"""A circuit breaker per key (e.g. ``"anthropic:claude-haiku-5-5"``), as pure values.

No I/O and no clock: every function takes ``now`` (seconds, any monotonic-enough
float the caller chooses) and returns a new :class:`BreakerState` plus a decision.
Stores (memory, Redis) apply these same rules; ``tasks/redis_breaker.py`` mirrors
them in Lua, and an integration test checks the two agree step by step.

States::

    closed --(failure_threshold failures within window_s)--> open
    open --(admit after recovery_s)--> half_open (that admit is the first probe)
    half_open --(a probe fails)--> open (opened_at = now)
    half_open --(probe_successes_to_close probe successes)--> closed (failures cleared)

Rules worth knowing:

- ``record_failure`` first drops failures older than the window (``now - t >= window_s``).
- The success of a call that was not a probe changes nothing: it is the common case,
  and stores can skip it without a round trip (old failures go at the next failure).
- Results of calls that are not probes, reported while the breaker is open or
  half-open, are ignored: they were admitted before the breaker opened.
- In ``closed`` a result's ``was_probe`` does not matter (a late probe result
  after the breaker closed counts like any other call).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Literal, TypeAlias

StateName: TypeAlias = Literal["closed", "open", "half_open"]
Verdict: TypeAlias = Literal["allowed", "probe", "rejected"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
STATES: Final[tuple[StateName, ...]] = (CLOSED, OPEN, HALF_OPEN)

ALLOWED: Final = "allowed"
PROBE: Final = "probe"
REJECTED: Final = "rejected"

# Transition reasons (stable values; log and store them as-is).
REASON_THRESHOLD: Final = "failure_threshold"
REASON_RECOVERY: Final = "recovery_elapsed"
REASON_PROBE_FAILED: Final = "probe_failed"
REASON_PROBES_OK: Final = "probes_succeeded"

# Admission reasons: a closed or an open breaker is its own reason.
ADMIT_CLOSED: Final = CLOSED
ADMIT_OPEN: Final = OPEN
ADMIT_PROBE: Final = "half_open_probe"
ADMIT_PROBE_LIMIT: Final = "probe_limit"
ADMIT_DISABLED: Final = "disabled"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5
    window_s: float = 60.0
    recovery_s: float = 30.0
    half_open_probes: int = 2
    probe_successes_to_close: int = 2

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be >= 1")
        if self.probe_successes_to_close < 1:
            raise ValueError("probe_successes_to_close must be >= 1")
        if self.window_s <= 0 or self.recovery_s < 0:
            raise ValueError("window_s must be > 0 and recovery_s >= 0")


@dataclass(frozen=True, slots=True)
class BreakerState:
    state: StateName = CLOSED
    failures: tuple[float, ...] = ()  # failure timestamps inside the window, oldest first
    opened_at: float | None = None
    probes_in_flight: int = 0
    probe_successes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the same shape the Redis store keeps)."""
        return {
            "state": self.state,
            "failures": list(self.failures),
            "opened_at": self.opened_at,
            "probes_in_flight": self.probes_in_flight,
            "probe_successes": self.probe_successes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerState:
        state = data["state"]
        if state not in STATES:
            raise ValueError(f"unknown breaker state: {state!r}")
        opened_at = data.get("opened_at")
        return cls(
            state=state,
            failures=tuple(float(t) for t in data.get("failures") or ()),
            opened_at=None if opened_at is None else float(opened_at),
            probes_in_flight=int(data.get("probes_in_flight", 0)),
            probe_successes=int(data.get("probe_successes", 0)),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """An event: ``key`` moved ``from_state -> to_state`` at ``at`` because of ``reason``."""

    key: str
    from_state: StateName
    to_state: StateName
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    reason: str
    transition: Transition | None = None  # set when admitting moved open -> half_open

    @property
    def allowed(self) -> bool:
        """True for ``allowed`` and ``probe``: the call may go ahead."""
        return self.verdict != REJECTED

    @property
    def probe(self) -> bool:
        return self.verdict == PROBE


def _prune(policy: BreakerPolicy, failures: tuple[float, ...], now: float) -> tuple[float, ...]:
    return tuple(t for t in failures if now - t < policy.window_s)


def admit(
    policy: BreakerPolicy, state: BreakerState, now: float, *, key: str = ""
) -> tuple[BreakerState, Admission]:
    """May a call go ahead now? Returns the new state and the admission."""
    if state.state == CLOSED:
        return state, Admission(ALLOWED, ADMIT_CLOSED)
    if state.state == OPEN:
        opened_at = now if state.opened_at is None else state.opened_at
        if now - opened_at < policy.recovery_s:
            return state, Admission(REJECTED, ADMIT_OPEN)
        new = replace(state, state=HALF_OPEN, probes_in_flight=1, probe_successes=0)
        event = Transition(key, OPEN, HALF_OPEN, now, REASON_RECOVERY)
        return new, Admission(PROBE, ADMIT_PROBE, event)
    # half_open
    if state.probes_in_flight < policy.half_open_probes:
        new = replace(state, probes_in_flight=state.probes_in_flight + 1)
        return new, Admission(PROBE, ADMIT_PROBE)
    return state, Admission(REJECTED, ADMIT_PROBE_LIMIT)


def record_success(
    policy: BreakerPolicy, state: BreakerState, now: float, was_probe: bool, *, key: str = ""
) -> tuple[BreakerState, Transition | None]:
    """A call admitted earlier succeeded. Only a probe's success can change the state."""
    if state.state != HALF_OPEN or not was_probe:
        return state, None
    successes = state.probe_successes + 1
    if successes >= policy.probe_successes_to_close:
        closed = BreakerState(state=CLOSED)
        return closed, Transition(key, HALF_OPEN, CLOSED, now, REASON_PROBES_OK)
    in_flight = max(0, state.probes_in_flight - 1)
    return replace(state, probes_in_flight=in_flight, probe_successes=successes), None


def record_failure(
    policy: BreakerPolicy, state: BreakerState, now: float, was_probe: bool, *, key: str = ""
) -> tuple[BreakerState, Transition | None]:
    """A call admitted earlier failed (in a way that should count against the provider)."""
    failures = _prune(policy, state.failures, now)
    if state.state == CLOSED:
        failures = (*failures, now)
        if len(failures) >= policy.failure_threshold:
            opened = BreakerState(state=OPEN, failures=failures, opened_at=now)
            return opened, Transition(key, CLOSED, OPEN, now, REASON_THRESHOLD)
        return replace(state, failures=failures), None
    if state.state == HALF_OPEN and was_probe:
        reopened = BreakerState(state=OPEN, failures=failures, opened_at=now)
        return reopened, Transition(key, HALF_OPEN, OPEN, now, REASON_PROBE_FAILED)
    return replace(state, failures=failures), None


def record(
    policy: BreakerPolicy,
    state: BreakerState,
    now: float,
    ok: bool,
    was_probe: bool,
    *,
    key: str = "",
) -> tuple[BreakerState, Transition | None]:
    """``record_success`` or ``record_failure`` by ``ok``."""
    fn = record_success if ok else record_failure
    return fn(policy, state, now, was_probe, key=key)

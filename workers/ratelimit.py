"""Rate limits per (provider, model) that the whole fleet honours: the pure core.

Each key has three limits per minute — requests, input tokens, output tokens —
and each is a GCRA (generic cell rate algorithm, a token bucket stored as one
number): the *theoretical arrival time* ``tat`` of the next unit. A limit of
``L`` per minute spaces units ``T = 60 / L`` seconds apart and tolerates a
burst of ``burst_s`` seconds' worth of units.

:func:`reserve` is *reserve-then-wait*: it always books the call and returns
how long the caller must sleep before sending it, so every caller makes exactly
one round trip to the store, callers queue up fairly, and the booked start times
never exceed the rate. A call bigger than the burst is let through when the
bucket is full (it could never fit otherwise) and pushes later calls back.

:func:`adapt` takes what the API's ``anthropic-ratelimit-*`` headers say is
left (:func:`parse_rate_headers`) and lowers what we think is left to match, and
lowers the limit itself when the API reports a smaller one. It never raises it
above the configured limit. When the API says less than one burst is left (someone
else spends from the same limit, or it counts differently), lowering what is left
only spends our burst: the calls already booked still go at our full rate into an
empty bucket, a 429 each. So the rate is also *cut* to ``CUT`` of itself (at most
once per ``CUT_HOLD_S``: the replies already in flight report the same shortage),
and climbs back linearly by ``RECOVER_PER_S`` of the limit a second (additive
increase, multiplicative decrease, as TCP does). The API reporting plenty left
never cuts, so a fleet alone on its limit runs at the full configured rate.

Stores: :class:`MemoryRateLimiter` here (one process, the embedded runtime);
``tasks/redis_ratelimit.py`` runs the same rules in one Lua script per call, so
every worker process shares one bucket per key. :class:`RateLimitedProvider`
wraps any :class:`~workers.providers.base.Provider` to acquire before each call.

Time is injected (a ``clock``), never read here except as a default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final, Protocol

import structlog

DIMENSIONS: Final = ("requests", "input_tokens", "output_tokens")
# anthropic-ratelimit-<header name>-{limit,remaining,reset} -> our dimension
HEADER_DIMENSIONS: Final = {
    "requests": "requests",
    "input-tokens": "input_tokens",
    "output-tokens": "output_tokens",
}
HEADER_PREFIX: Final = "anthropic-ratelimit-"

# A request readied (booked, waited for) but not sent is held this long at most.
READY_TTL_S: Final = 600.0
# Waits shorter than this are float noise (tat + need - tau a hair above now): no wait.
EPSILON_S: Final = 1e-9
# The back-off when the API says less than a burst is left (see the module docstring).
CUT: Final = 0.75  # the rate after a cut, as a share of the rate before it
CUT_HOLD_S: Final = 2.0  # at most one cut per this many seconds
RECOVER_PER_S: Final = 0.01  # a cut rate climbs back by this share of the limit a second
FLOOR: Final = 0.05  # a cut never goes below this share of the limit

log = structlog.stdlib.get_logger("cascade.ratelimit")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits for one key; ``None`` means unlimited in that dimension."""

    requests_per_min: float | None = None
    input_tokens_per_min: float | None = None
    output_tokens_per_min: float | None = None
    # Burst tolerance in seconds of rate: 1.0 lets one second's worth go at once.
    burst_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("requests_per_min", "input_tokens_per_min", "output_tokens_per_min"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if self.burst_s <= 0:
            raise ValueError(f"burst_s must be positive, got {self.burst_s!r}")

    def per_min(self) -> tuple[float | None, float | None, float | None]:
        return (self.requests_per_min, self.input_tokens_per_min, self.output_tokens_per_min)


@dataclass(frozen=True, slots=True)
class Cost:
    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0

    def units(self) -> tuple[int, int, int]:
        return (self.requests, self.input_tokens, self.output_tokens)


@dataclass(frozen=True, slots=True)
class BucketState:
    """Per dimension: the theoretical arrival time, a lower limit learnt from the API,
    and the rate right after the last cut (None: never cut) with when it was made."""

    tat: tuple[float, float, float] = (0.0, 0.0, 0.0)
    learnt_per_min: tuple[float | None, float | None, float | None] = (None, None, None)
    cut_per_min: tuple[float | None, float | None, float | None] = (None, None, None)
    cut_at: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Observed:
    """What one response's rate-limit headers said, per dimension (None: not sent)."""

    limit: tuple[float | None, float | None, float | None] = (None, None, None)
    remaining: tuple[float | None, float | None, float | None] = (None, None, None)


def recovering_per_min(limits: Limits, state: BucketState, d: int, now: float) -> float | None:
    """A cut rate as it has climbed back by ``now``; None once it is back at the limit."""
    configured, cut = limits.per_min()[d], state.cut_per_min[d]
    if configured is None or cut is None:
        return None
    rate = cut + configured * RECOVER_PER_S * max(now - state.cut_at[d], 0.0)
    return rate if rate < configured else None


def effective_per_min(limits: Limits, state: BucketState, d: int, now: float) -> float | None:
    configured = limits.per_min()[d]
    if configured is None:
        return None  # we only ever lower a limit we were given
    lower = (state.learnt_per_min[d], recovering_per_min(limits, state, d, now))
    return min([configured, *(r for r in lower if r is not None)])


def reserve(
    limits: Limits, state: BucketState, now: float, cost: Cost
) -> tuple[BucketState, float]:
    """Book one call of ``cost``; returns the new state and the seconds to wait before it."""
    units = cost.units()
    start = now
    spacing: list[float] = [0.0, 0.0, 0.0]
    for d in range(3):
        rate = effective_per_min(limits, state, d, now)
        if rate is None or units[d] <= 0:
            continue
        spacing[d] = 60.0 / rate
        need = units[d] * spacing[d]
        tau = max(limits.burst_s, need)  # a call bigger than the burst fits a full bucket
        start = max(start, state.tat[d] + need - tau)
    tat = tuple(
        max(state.tat[d], start) + units[d] * spacing[d] if spacing[d] else state.tat[d]
        for d in range(3)
    )
    wait = start - now
    return replace(state, tat=(tat[0], tat[1], tat[2])), wait if wait > EPSILON_S else 0.0


def available(limits: Limits, state: BucketState, now: float, d: int) -> float:
    """Units of dimension ``d`` that could go right now (math.inf when unlimited)."""
    rate = effective_per_min(limits, state, d, now)
    if rate is None:
        return math.inf
    spacing = 60.0 / rate
    return max(0.0, (now + limits.burst_s - max(state.tat[d], now)) / spacing)


def adapt(limits: Limits, state: BucketState, now: float, seen: Observed) -> BucketState:
    """Lower our view to what the API says: a smaller limit, or fewer units left now
    (and, with less than a burst left, cut the rate)."""
    learnt = list(state.learnt_per_min)
    tat = list(state.tat)
    cut = list(state.cut_per_min)
    cut_at = list(state.cut_at)
    for d in range(3):
        reported = seen.limit[d]
        configured = limits.per_min()[d]
        if reported is not None and configured is not None:
            # Remember a lower limit; forget it when the API reports ours or more again.
            learnt[d] = reported if reported < configured else None
    lowered = replace(state, learnt_per_min=(learnt[0], learnt[1], learnt[2]))
    for d in range(3):
        remaining = seen.remaining[d]
        rate = effective_per_min(limits, lowered, d, now)
        configured = limits.per_min()[d]
        if remaining is None or rate is None or configured is None:
            continue
        if remaining < available(limits, lowered, now, d):
            spacing = 60.0 / rate
            tat[d] = max(tat[d], now + limits.burst_s - max(remaining, 0.0) * spacing)
        held = cut[d] is not None and now - cut_at[d] < CUT_HOLD_S
        if remaining < limits.burst_s * rate / 60.0 and not held:
            cut[d], cut_at[d] = max(rate * CUT, configured * FLOOR), now
    return replace(
        lowered,
        tat=(tat[0], tat[1], tat[2]),
        cut_per_min=(cut[0], cut[1], cut[2]),
        cut_at=(cut_at[0], cut_at[1], cut_at[2]),
    )


def could_lower(limits: Limits, seen: Observed) -> bool:
    """Whether ``seen.remaining`` could lower a bucket whatever its state.

    :func:`adapt` moves ``tat`` only when fewer units are left than :func:`available`,
    and cuts the rate only when fewer than a burst at the current rate are left; both
    are at most a full burst at the configured rate; so when every dimension
    has at least that much left, only a changed limit can make adapt do anything. A
    shared store uses this to skip the round trip on most replies (the API usually
    reports far more left than one burst).
    """
    return any(
        remaining is not None
        and configured is not None
        and remaining < limits.burst_s * configured / 60.0
        for remaining, configured in zip(seen.remaining, limits.per_min(), strict=True)
    )


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_rate_headers(headers: Mapping[str, str]) -> Observed | None:
    """``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining}``.

    Header names are matched case-insensitively. Returns None when none is present.
    (The ``-reset`` headers are not needed: a GCRA refills continuously at the limit.)
    """
    lowered = {k.lower(): v for k, v in headers.items() if k.lower().startswith(HEADER_PREFIX)}
    if not lowered:
        return None
    limit: list[float | None] = [None, None, None]
    remaining: list[float | None] = [None, None, None]
    for name, dim in HEADER_DIMENSIONS.items():
        d = DIMENSIONS.index(dim)
        limit[d] = _number(lowered.get(f"{HEADER_PREFIX}{name}-limit"))
        remaining[d] = _number(lowered.get(f"{HEADER_PREFIX}{name}-remaining"))
    if all(v is None for v in (*limit, *remaining)):
        return None
    return Observed((limit[0], limit[1], limit[2]), (remaining[0], remaining[1], remaining[2]))


def parse_reset(raw: str | None, now: float) -> float | None:
    """Seconds until an RFC 3339 ``-reset`` time (for callers that want it); None if unreadable."""
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(when.timestamp() - now, 0.0)


def limiter_key(provider: str, model: str) -> str:
    return f"{provider}:{model}"


# -- the interface and the memory store ----------------------------------------------
class RateLimiter(Protocol):
    """Shared limits per key. ``acquire`` books a call and says how long to wait first."""

    async def acquire(
        self, key: str, requests: int = 1, input_tokens: int = 0, output_tokens: int = 0
    ) -> float: ...

    async def adapt(self, key: str, seen: Observed) -> None: ...


LimitsFor = Callable[[str], Limits | None]


def limits_table(table: Mapping[str, Limits]) -> LimitsFor:
    """Limits by key; a key not in ``table`` is not limited."""
    return table.get


@dataclass
class MemoryRateLimiter:
    """Buckets in a dict: one process, one event loop (the embedded runtime).

    Every method is synchronous inside (no await between read and write), so no lock.
    """

    limits_for: LimitsFor
    clock: Clock = time.monotonic
    _states: dict[str, BucketState] = field(default_factory=dict)

    async def acquire(
        self, key: str, requests: int = 1, input_tokens: int = 0, output_tokens: int = 0
    ) -> float:
        limits = self.limits_for(key)
        if limits is None:
            return 0.0
        state = self._states.get(key, BucketState())
        new, wait = reserve(
            limits, state, self.clock(), Cost(requests, input_tokens, output_tokens)
        )
        self._states[key] = new
        return wait

    async def adapt(self, key: str, seen: Observed) -> None:
        limits = self.limits_for(key)
        if limits is None:
            return
        state = self._states.get(key, BucketState())
        self._states[key] = adapt(limits, state, self.clock(), seen)

    def state(self, key: str) -> BucketState:
        return self._states.get(key, BucketState())

"""Where breaker state lives: one interface, a memory store for the embedded runtime.

The Redis store (``tasks/redis_breaker.py``) implements the same Protocol for the
distributed runtime. Both apply the pure rules of :mod:`workers.breaker`.

Chaos drills: ``disable(key, until, reason)`` makes every ``admit`` for ``key``
rejected (reason ``"disabled"``) until ``until``, without touching the breaker
state; ``clear(key)`` ends the drill early; ``disabled(key, now)`` returns the
drill's reason while it is active.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from workers import breaker
from workers.breaker import Admission, BreakerPolicy, BreakerState, Transition


class BreakerStore(Protocol):
    async def admit(self, key: str, now: float) -> Admission: ...

    async def record(
        self, key: str, now: float, ok: bool, was_probe: bool
    ) -> Transition | None: ...

    async def snapshot(self, key: str) -> BreakerState: ...

    async def disable(self, key: str, until: float, reason: str) -> None: ...

    async def clear(self, key: str) -> None: ...

    async def disabled(self, key: str, now: float) -> str | None: ...


class MemoryBreakerStore:
    """Breakers in a dict, guarded by one ``asyncio.Lock`` (one event loop, one process)."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._states: dict[str, BreakerState] = {}
        self._drills: dict[str, tuple[float, str]] = {}  # key -> (until, reason)
        self._lock = asyncio.Lock()

    def _drill(self, key: str, now: float) -> str | None:
        drill = self._drills.get(key)
        if drill is None:
            return None
        until, reason = drill
        if now >= until:
            del self._drills[key]
            return None
        return reason

    async def admit(self, key: str, now: float) -> Admission:
        async with self._lock:
            if self._drill(key, now) is not None:
                return Admission(breaker.REJECTED, breaker.ADMIT_DISABLED)
            state = self._states.get(key, BreakerState())
            new, admission = breaker.admit(self.policy, state, now, key=key)
            self._states[key] = new
            return admission

    async def record(self, key: str, now: float, ok: bool, was_probe: bool) -> Transition | None:
        async with self._lock:
            state = self._states.get(key, BreakerState())
            new, event = breaker.record(self.policy, state, now, ok, was_probe, key=key)
            self._states[key] = new
            return event

    async def snapshot(self, key: str) -> BreakerState:
        async with self._lock:
            return self._states.get(key, BreakerState())

    async def disable(self, key: str, until: float, reason: str) -> None:
        async with self._lock:
            self._drills[key] = (until, reason)

    async def clear(self, key: str) -> None:
        async with self._lock:
            self._drills.pop(key, None)

    async def disabled(self, key: str, now: float) -> str | None:
        async with self._lock:
            return self._drill(key, now)

"""Prompt caching of the stable prefix: when to mark it, and warming it before fan-out.

Every call of a pipeline sends the same prefix (the answer tool's schema, then the
system prompt: instructions, label list, worked examples, the guard) and only the
item's text after it. The Messages API caches a marked prefix when it is at least
the model's minimum cacheable length (anthropic-api-facts.md §7): reads then cost
about a tenth of the input price, writes a premium (1.25x for 5 minutes, 2x for 1 hour).

- :class:`CachePlan` decides, per (tier, model, mechanism), whether a request marks
  its prefix and with which TTL. Pure, memoised; the estimate is characters / 4.
- :class:`CacheWarmer` sits at the call boundary. When a (model, prefix) is not
  known to be warm, one call goes first and the others wait for it, so a fleet of
  workers with many slots writes the cache once rather than once per slot. The warm
  state lives in a :class:`WarmStore`: Redis for the fleet (``tasks/redis_cache_warm.py``),
  memory in the embedded runtime (:class:`MemoryWarmStore`). It expires with the TTL.

The executor wraps each request::

    ticket = await warmer.before_call(request)    # may wait for the first call
    ...the call (with its retries)...
    await warmer.after_call(ticket, replied)      # the first call reports the write

A warmer never stops traffic for long: a store error, a first call that fails, or one
that takes longer than ``lease_s`` lets the waiting calls go.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal, Protocol

import structlog

from workers.pipeline import ClaudeTier
from workers.providers.base import ClassifyRequest, Mechanism

log = structlog.stdlib.get_logger("cascade.cache")

TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
# Characters of the answer tool (name, description, schema without the labels) and the
# request's framing that sit in the prefix beside the system prompt.
TOOL_OVERHEAD_CHARS = 420
CHARS_PER_TOKEN = 4

Claim = Literal["warm", "first", "wait"]


def prefix_tokens(system: str, labels: tuple[str, ...] | list[str]) -> int:
    """Estimated tokens of the cacheable prefix: the system prompt and the answer tool."""
    chars = len(system) + TOOL_OVERHEAD_CHARS + len(json.dumps(list(labels)))
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class PrefixCheck:
    """Whether a tier's prefix is long enough to cache on a model, and by how much."""

    model: str
    tokens: int  # the estimated prefix
    min_tokens: int  # the model's minimum cacheable length

    @property
    def cacheable(self) -> bool:
        return self.tokens >= self.min_tokens

    @property
    def short_by(self) -> int:
        return max(self.min_tokens - self.tokens, 0)


class CachePlan:
    """Which TTL a request marks its prefix with, if any (memoised per tier/model/mechanism)."""

    def __init__(
        self,
        system: Callable[[Mechanism], str],
        labels: tuple[str, ...],
        min_tokens: Callable[[str], int],
    ) -> None:
        self._system = system
        self._labels = labels
        self._min_tokens = min_tokens
        self._ttls: dict[tuple[str, str, str], str | None] = {}

    def check(self, model: str, mechanism: Mechanism) -> PrefixCheck:
        tokens = prefix_tokens(self._system(mechanism), self._labels)
        return PrefixCheck(model, tokens, self._min_tokens(model))

    def ttl(self, tier: ClaudeTier, model: str, mechanism: Mechanism) -> str | None:
        """The TTL to mark with; None when the tier has ``cache = "off"`` or the prefix
        is shorter than the model caches (the API would silently not cache it)."""
        key = (tier.name, model, mechanism)
        if key not in self._ttls:
            on = tier.cache == "auto" and self.check(model, mechanism).cacheable
            self._ttls[key] = tier.ttl if on else None
        return self._ttls[key]


def warm_key(request: ClassifyRequest) -> str | None:
    """The (model, prefix) a request writes to or reads from; None if it marks nothing."""
    if request.cache_ttl is None:
        return None
    h = hashlib.blake2b(digest_size=12)
    for part in (request.provider, request.model, request.mechanism, request.cache_ttl):
        h.update(part.encode())
        h.update(b"\0")
    h.update(json.dumps(list(request.labels)).encode())
    h.update(b"\0")
    h.update(request.system.encode())
    return f"{request.provider}:{request.model}:{h.hexdigest()}"


class WarmStore(Protocol):
    """Fleet-wide warm state per key. ``claim``: "warm" (go), "first" (you go first;
    report with ``done``), "wait" (another call is first and has not finished)."""

    async def claim(self, key: str, now: float, lease_s: float) -> Claim: ...

    async def done(self, key: str, now: float, ok: bool, ttl_s: float) -> None: ...


class MemoryWarmStore:
    """Warm state in a dict (one process, one event loop): the embedded runtime."""

    def __init__(self) -> None:
        self._warm_until: dict[str, float] = {}
        self._lease_until: dict[str, float] = {}

    async def claim(self, key: str, now: float, lease_s: float) -> Claim:
        if self._warm_until.get(key, 0.0) > now:
            return "warm"
        if self._lease_until.get(key, 0.0) > now:
            return "wait"
        self._lease_until[key] = now + lease_s
        return "first"

    async def done(self, key: str, now: float, ok: bool, ttl_s: float) -> None:
        self._lease_until.pop(key, None)
        if ok:
            self._warm_until[key] = now + ttl_s


@dataclass(frozen=True, slots=True)
class Ticket:
    """A call's place in the warm-up: ``first`` calls report back in ``after_call``."""

    key: str
    ttl_s: float
    first: bool


@dataclass(eq=False)
class CacheWarmer:
    """One call per cold (model, prefix) goes first; the others wait until it is written.

    Within a process, calls waiting on a key wait on one event, woken the moment the
    first call reports; only one of them asks the store (polling every ``poll_s``)
    while a call in another process is first. ``margin_s`` is taken off the TTL, so
    the warm state ends a little before the API's cache could (a read refreshes the
    API's TTL; after our state ends one call goes first again, and reads: harmless).
    """

    store: WarmStore
    _: KW_ONLY
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    lease_s: float = 15.0
    poll_s: float = 0.02
    margin_s: float = 5.0
    # after a store error, calls go without warming for this long: a hung store costs
    # one timeout per this long, not one per call
    bypass_s: float = 30.0
    # key -> until: no store round trip then
    _local_warm: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    # key -> set when its first call ends
    _pending: dict[str, asyncio.Event] = field(default_factory=dict, init=False, repr=False)
    _bypass_until: float = field(default=0.0, init=False, repr=False)

    async def before_call(self, request: ClassifyRequest) -> Ticket | None:
        """Return when this request may go; a ticket if it must report back."""
        key = warm_key(request)
        if key is None or request.cache_ttl is None:
            return None
        ttl_s = max(TTL_SECONDS[request.cache_ttl] - self.margin_s, 1.0)
        give_up = self.clock() + self.lease_s
        while True:
            now = self.clock()
            if self._local_warm.get(key, 0.0) > now or self._bypass_until > now:
                return None
            pending = self._pending.get(key)
            if pending is None:
                break
            try:  # another call of this process leads: wait for it to report
                await asyncio.wait_for(pending.wait(), max(give_up - self.clock(), 0.001))
            except TimeoutError:
                return None
        event = self._pending[key] = asyncio.Event()
        try:
            ticket = await self._lead(key, ttl_s, give_up)
        except BaseException:
            self._release(key, event)
            raise
        if ticket is None:
            self._release(key, event)
        return ticket

    async def _lead(self, key: str, ttl_s: float, give_up: float) -> Ticket | None:
        while True:
            now = self.clock()
            try:
                claim = await self.store.claim(key, now, self.lease_s)
            except Exception as exc:  # fail open: caching is an optimisation
                log.warning("cascade.cache.store_error", key=key, error=repr(exc))
                self._bypass_until = self.clock() + self.bypass_s
                return None
            if claim == "warm":
                # seen warm: this process skips the store for a while (a tenth of the TTL)
                self._local_warm[key] = now + ttl_s / 10
                return None
            if claim == "first":
                return Ticket(key, ttl_s, True)
            if now >= give_up:
                return None
            await self.sleep(self.poll_s)

    def _release(self, key: str, event: asyncio.Event) -> None:
        if self._pending.get(key) is event:
            del self._pending[key]
        event.set()

    async def after_call(self, ticket: Ticket | None, replied: bool) -> None:
        """The first call reports whether a reply came (so the prefix was written)."""
        if ticket is None or not ticket.first:
            return
        now = self.clock()
        try:
            await self.store.done(ticket.key, now, replied, ticket.ttl_s)
        except Exception as exc:
            log.warning("cascade.cache.store_error", key=ticket.key, error=repr(exc))
            self._bypass_until = self.clock() + self.bypass_s
        else:
            if replied:
                self._local_warm[ticket.key] = now + ticket.ttl_s / 10
                log.info("cascade.cache.warmed", key=ticket.key)
            else:
                # The first call failed (after its retries): the model is in trouble, so the
                # waiting calls go now rather than fail one after another behind a new leader.
                self._local_warm[ticket.key] = now + self.bypass_s
        event = self._pending.get(ticket.key)
        if event is not None:
            self._release(ticket.key, event)

"""The rate limiter for the distributed runtime: one GCRA bucket per key in Redis.

Implements :class:`workers.ratelimit.RateLimiter`. Every booking is one Lua script, so
every worker process on every machine books from the same bucket atomically (no
read-modify-write races) in one round trip; the acquires of one process that arrive
together share that script run (see :class:`RedisRateLimiter`). The scripts
re-implement :func:`workers.ratelimit.reserve` and :func:`workers.ratelimit.adapt`;
an integration test replays the same tables through both and compares them.

Time: by default the script reads Redis' own clock (``TIME``), so workers on
machines with skewed clocks still share one timeline; tests inject a ``clock``,
whose value is then passed in instead. The limits are passed as arguments on
every call, so they are configured in one place (the caller's settings).

Key: ``{prefix}{key}`` (``prefix`` defaults to ``cascade:rate:``), a hash with
``t1..t3`` (theoretical arrival times for requests, input and output tokens),
``l1..l3`` (a lower per-minute limit learnt from the API's headers) and ``c1..c3``
with ``a1..a3`` (the rate after the last cut, and when: see
:func:`workers.ratelimit.adapt`). It expires after an hour without use.

:meth:`RedisRateLimiter.adapt` runs on every reply that carries rate-limit headers,
so it skips the round trip when the script could not change anything: nothing is
below a burst's worth (:func:`workers.ratelimit.could_lower`) and the limits are
the ones this process last sent, less than ``refresh_s`` ago (re-sent at least that
often, in case another process or an expiry changed the learnt limit meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as redis

from workers.ratelimit import (
    CUT,
    CUT_HOLD_S,
    FLOOR,
    RECOVER_PER_S,
    BucketState,
    Cost,
    LimitsFor,
    Observed,
    could_lower,
)

_PRELUDE = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local burst = tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 't1', 't2', 't3', 'l1', 'l2', 'l3',
                     'c1', 'c2', 'c3', 'a1', 'a2', 'a3')
local tat = {tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0}
local learnt = {tonumber(h[4]), tonumber(h[5]), tonumber(h[6])}
local cut = {tonumber(h[7]), tonumber(h[8]), tonumber(h[9])}
local cut_at = {tonumber(h[10]) or 0, tonumber(h[11]) or 0, tonumber(h[12]) or 0}
local configured = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local function rate(d)                            -- workers.ratelimit.effective_per_min
  local c = configured[d]
  if c == nil then return nil end
  local r = c
  if learnt[d] ~= nil and learnt[d] < r then r = learnt[d] end
  if cut[d] ~= nil then
    local back = cut[d] + c * @RECOVER_PER_S@ * math.max(now - cut_at[d], 0)
    if back < c and back < r then r = back end
  end
  return r
end
local function num(x) return string.format('%.17g', x) end
""".replace("@RECOVER_PER_S@", repr(RECOVER_PER_S))

# ARGV: now|'' , burst, 3 configured per-minute limits ('' = none), then 3 units per call
# for one or more calls, booked in that order at the same ``now``.
# Returns the seconds each must wait, as strings.
_RESERVE = (
    _PRELUDE
    + """
local waits = {}
for base = 6, #ARGV - 2, 3 do
  local units = {tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])}
  local start = now
  local spacing = {0, 0, 0}
  for d = 1, 3 do
    local r = rate(d)
    if r ~= nil and units[d] > 0 then
      spacing[d] = 60 / r
      local need = units[d] * spacing[d]
      local tau = math.max(burst, need)
      start = math.max(start, tat[d] + need - tau)
    end
  end
  for d = 1, 3 do
    if spacing[d] > 0 then
      tat[d] = math.max(tat[d], start) + units[d] * spacing[d]
    end
  end
  local wait = start - now
  if wait <= 1e-9 then wait = 0 end               -- float noise (workers.ratelimit.EPSILON_S)
  waits[#waits + 1] = num(wait)
end
redis.call('HSET', KEYS[1], 't1', num(tat[1]), 't2', num(tat[2]), 't3', num(tat[3]))
redis.call('EXPIRE', KEYS[1], 3600)
return waits
"""
)

# ARGV: now|'', burst, 3 configured limits, 3 reported limits, 3 remaining ('' = not sent).
_ADAPT = (
    _PRELUDE
    + """
for d = 1, 3 do
  local reported = tonumber(ARGV[5 + d])
  if reported ~= nil and configured[d] ~= nil then
    if reported < configured[d] then learnt[d] = reported else learnt[d] = nil end
  end
end
for d = 1, 3 do
  local remaining = tonumber(ARGV[8 + d])
  local r = rate(d)
  if remaining ~= nil and r ~= nil then
    local spacing = 60 / r
    local avail = math.max(0, (now + burst - math.max(tat[d], now)) / spacing)
    if remaining < avail then
      tat[d] = math.max(tat[d], now + burst - math.max(remaining, 0) * spacing)
    end
    local held = cut[d] ~= nil and now - cut_at[d] < @CUT_HOLD_S@
    if remaining < burst * r / 60 and not held then
      cut[d] = math.max(r * @CUT@, configured[d] * @FLOOR@)
      cut_at[d] = now
    end
  end
end
redis.call('HSET', KEYS[1], 't1', num(tat[1]), 't2', num(tat[2]), 't3', num(tat[3]))
for d = 1, 3 do
  if learnt[d] ~= nil then
    redis.call('HSET', KEYS[1], 'l' .. d, num(learnt[d]))
  else
    redis.call('HDEL', KEYS[1], 'l' .. d)
  end
  if cut[d] ~= nil then
    redis.call('HSET', KEYS[1], 'c' .. d, num(cut[d]), 'a' .. d, num(cut_at[d]))
  end
end
redis.call('EXPIRE', KEYS[1], 3600)
return 1
""".replace("@CUT_HOLD_S@", repr(CUT_HOLD_S))
    .replace("@CUT@", repr(CUT))
    .replace("@FLOOR@", repr(FLOOR))
)


def _arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _float(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    return float(raw.decode() if isinstance(raw, bytes) else raw)


def _merge(older: Observed, newer: Observed) -> Observed:
    """Two replies' headers as one: the newer limits, the fewer units left."""

    def low(a: float | None, b: float | None) -> float | None:
        return a if b is None else b if a is None else min(a, b)

    limit = tuple(n if n is not None else o for o, n in zip(older.limit, newer.limit, strict=True))
    left = tuple(low(o, n) for o, n in zip(older.remaining, newer.remaining, strict=True))
    return Observed((limit[0], limit[1], limit[2]), (left[0], left[1], left[2]))


@dataclass
class _Line:
    """One key's acquires waiting for the next script run, and whether one is running."""

    waiting: list[tuple[Cost, asyncio.Future[float]]] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None


class RedisRateLimiter:
    """Implements :class:`workers.ratelimit.RateLimiter` on one Redis database.

    Per key, a process has at most one reserve script and one adapt script in flight:
    acquires that arrive while one runs are booked together by the next run (in
    arrival order, at one ``now``: the same as one after the other), and headers that
    arrive while an adapt runs are merged into the next. So the limiter holds at most
    two connections per key whatever CASCADE_CONCURRENCY is (a pool of 100, redis-py's
    default, ran out at 128 calls in flight: each acquire failed with
    ``MaxConnectionsError`` and its item went to the fallback model), and the Redis
    round trips per call fall as the load rises.
    """

    def __init__(
        self,
        client: redis.Redis,
        limits_for: LimitsFor,
        *,
        prefix: str = "cascade:rate:",
        clock: Callable[[], float] | None = None,
        refresh_s: float = 5.0,
        max_batch: int = 256,
    ) -> None:
        self.client = client
        self.limits_for = limits_for
        self.prefix = prefix
        self.clock = clock
        self.refresh_s = refresh_s  # 0: never skip an adapt
        self.max_batch = max_batch  # acquires booked by one script run at most
        # key -> (the limits last sent by this process, time.monotonic() when sent)
        self._sent: dict[str, tuple[tuple[float | None, float | None, float | None], float]] = {}
        self._lines: dict[str, _Line] = {}
        # key -> headers that arrived while an adapt of the key ran (None: none yet)
        self._adapting: dict[str, Observed | None] = {}
        self._reserve = client.register_script(_RESERVE)
        self._adapt = client.register_script(_ADAPT)

    def _now(self) -> str:
        return "" if self.clock is None else repr(float(self.clock()))

    async def acquire(
        self, key: str, requests: int = 1, input_tokens: int = 0, output_tokens: int = 0
    ) -> float:
        if self.limits_for(key) is None:
            return 0.0
        line = self._lines.setdefault(key, _Line())
        booked: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        line.waiting.append((Cost(requests, input_tokens, output_tokens), booked))
        if line.runner is None:
            line.runner = asyncio.create_task(self._book(key, line))
        return await booked

    async def _book(self, key: str, line: _Line) -> None:
        """Book what waits on ``key`` until nothing does, one script run at a time."""
        try:
            while line.waiting:
                batch = line.waiting[: self.max_batch]
                del line.waiting[: self.max_batch]
                try:
                    waits = await self._reserve_many(key, [cost for cost, _ in batch])
                except Exception as exc:  # every caller of this run sees the store's error
                    for _, booked in batch:
                        if not booked.done():
                            booked.set_exception(exc)
                    continue
                for (_, booked), wait in zip(batch, waits, strict=True):
                    if not booked.done():  # a caller cancelled meanwhile leaves its slot unused
                        booked.set_result(wait)
        finally:
            line.runner = None
            for _, booked in line.waiting:  # only when this task itself was cancelled
                booked.cancel()
            line.waiting.clear()

    async def _reserve_many(self, key: str, costs: list[Cost]) -> list[float]:
        limits = self.limits_for(key)
        if limits is None:  # the limits changed meanwhile: nothing to wait for
            return [0.0] * len(costs)
        args = [self._now(), repr(float(limits.burst_s)), *(_arg(v) for v in limits.per_min())]
        args += [str(int(u)) for cost in costs for u in cost.units()]
        raw = await self._reserve(keys=[self.prefix + key], args=args)
        return [_float(w) or 0.0 for w in raw]

    async def adapt(self, key: str, seen: Observed) -> None:
        limits = self.limits_for(key)
        if limits is None:
            return
        sent = self._sent.get(key)
        if (
            sent is not None
            and sent[0] == seen.limit
            and time.monotonic() - sent[1] < self.refresh_s
            and not could_lower(limits, seen)
        ):
            return  # the script would change nothing: no round trip
        if key in self._adapting:  # one runs: the next run takes these headers too
            pending = self._adapting[key]
            self._adapting[key] = seen if pending is None else _merge(pending, seen)
            return
        self._adapting[key] = None
        try:
            next_seen: Observed | None = seen
            while next_seen is not None:
                await self._adapt_once(key, next_seen)
                next_seen, self._adapting[key] = self._adapting[key], None
        finally:
            del self._adapting[key]

    async def _adapt_once(self, key: str, seen: Observed) -> None:
        limits = self.limits_for(key)
        if limits is None:
            return
        args = [
            self._now(),
            repr(float(limits.burst_s)),
            *(_arg(v) for v in limits.per_min()),
            *(_arg(v) for v in seen.limit),
            *(_arg(v) for v in seen.remaining),
        ]
        await self._adapt(keys=[self.prefix + key], args=args)
        self._sent[key] = (seen.limit, time.monotonic())

    async def state(self, key: str) -> BucketState:
        fields = ["t1", "t2", "t3", "l1", "l2", "l3", "c1", "c2", "c3", "a1", "a2", "a3"]
        raw = await self.client.hmget(self.prefix + key, fields)
        t = [_float(v) or 0.0 for v in raw[:3]]
        learnt = [_float(v) for v in raw[3:6]]
        cut = [_float(v) for v in raw[6:9]]
        cut_at = [_float(v) or 0.0 for v in raw[9:]]
        return BucketState(
            (t[0], t[1], t[2]),
            (learnt[0], learnt[1], learnt[2]),
            (cut[0], cut[1], cut[2]),
            (cut_at[0], cut_at[1], cut_at[2]),
        )

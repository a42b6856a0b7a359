"""The rate limiter for the distributed runtime: one GCRA bucket per key in Redis.

Implements :class:`workers.ratelimit.RateLimiter`. Each call is one Lua script, so
every worker process on every machine books from the same bucket atomically (no
read-modify-write races) in one round trip. The scripts re-implement
:func:`workers.ratelimit.reserve` and :func:`workers.ratelimit.adapt`; an
integration test replays the same tables through both and compares them.

Time: by default the script reads Redis' own clock (``TIME``), so workers on
machines with skewed clocks still share one timeline; tests inject a ``clock``,
whose value is then passed in instead. The limits are passed as arguments on
every call, so they are configured in one place (the caller's settings).

Key: ``{prefix}{key}`` (``prefix`` defaults to ``cascade:rate:``), a hash with
``t1..t3`` (theoretical arrival times for requests, input and output tokens) and
``l1..l3`` (a lower per-minute limit learnt from the API's headers). It expires
after an hour without use.

:meth:`RedisRateLimiter.adapt` runs on every reply that carries rate-limit headers,
so it skips the round trip when the script could not change anything: nothing is
below a burst's worth (:func:`workers.ratelimit.could_lower`) and the limits are
the ones this process last sent, less than ``refresh_s`` ago (re-sent at least that
often, in case another process or an expiry changed the learnt limit meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as redis

from workers.ratelimit import BucketState, Cost, LimitsFor, Observed, could_lower

_PRELUDE = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local burst = tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 't1', 't2', 't3', 'l1', 'l2', 'l3')
local tat = {tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0}
local learnt = {tonumber(h[4]), tonumber(h[5]), tonumber(h[6])}
local configured = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local function rate(d)
  local c = configured[d]
  if c == nil then return nil end
  if learnt[d] ~= nil and learnt[d] < c then return learnt[d] end
  return c
end
local function num(x) return string.format('%.17g', x) end
"""

# ARGV: now|'' , burst, 3 configured per-minute limits ('' = none), 3 units.
# Returns the seconds to wait, as a string.
_RESERVE = (
    _PRELUDE
    + """
local units = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
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
redis.call('HSET', KEYS[1], 't1', num(tat[1]), 't2', num(tat[2]), 't3', num(tat[3]))
redis.call('EXPIRE', KEYS[1], 3600)
local wait = start - now
if wait <= 1e-9 then wait = 0 end                 -- float noise (workers.ratelimit.EPSILON_S)
return num(wait)
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
  end
end
redis.call('HSET', KEYS[1], 't1', num(tat[1]), 't2', num(tat[2]), 't3', num(tat[3]))
for d = 1, 3 do
  if learnt[d] ~= nil then
    redis.call('HSET', KEYS[1], 'l' .. d, num(learnt[d]))
  else
    redis.call('HDEL', KEYS[1], 'l' .. d)
  end
end
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""
)


def _arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _float(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    return float(raw.decode() if isinstance(raw, bytes) else raw)


class RedisRateLimiter:
    """Implements :class:`workers.ratelimit.RateLimiter` on one Redis database."""

    def __init__(
        self,
        client: redis.Redis,
        limits_for: LimitsFor,
        *,
        prefix: str = "cascade:rate:",
        clock: Callable[[], float] | None = None,
        refresh_s: float = 5.0,
    ) -> None:
        self.client = client
        self.limits_for = limits_for
        self.prefix = prefix
        self.clock = clock
        self.refresh_s = refresh_s  # 0: never skip an adapt
        # key -> (the limits last sent by this process, time.monotonic() when sent)
        self._sent: dict[str, tuple[tuple[float | None, float | None, float | None], float]] = {}
        self._reserve = client.register_script(_RESERVE)
        self._adapt = client.register_script(_ADAPT)

    def _now(self) -> str:
        return "" if self.clock is None else repr(float(self.clock()))

    async def acquire(
        self, key: str, requests: int = 1, input_tokens: int = 0, output_tokens: int = 0
    ) -> float:
        limits = self.limits_for(key)
        if limits is None:
            return 0.0
        cost = Cost(requests, input_tokens, output_tokens)
        args = [
            self._now(),
            repr(float(limits.burst_s)),
            *(_arg(v) for v in limits.per_min()),
            *(str(int(u)) for u in cost.units()),
        ]
        raw = await self._reserve(keys=[self.prefix + key], args=args)
        return float(raw.decode() if isinstance(raw, bytes) else raw)

    async def adapt(self, key: str, seen: Observed) -> None:
        limits = self.limits_for(key)
        if limits is None:
            return
        now = time.monotonic()
        sent = self._sent.get(key)
        if (
            sent is not None
            and sent[0] == seen.limit
            and now - sent[1] < self.refresh_s
            and not could_lower(limits, seen)
        ):
            return  # the script would change nothing: no round trip
        args = [
            self._now(),
            repr(float(limits.burst_s)),
            *(_arg(v) for v in limits.per_min()),
            *(_arg(v) for v in seen.limit),
            *(_arg(v) for v in seen.remaining),
        ]
        await self._adapt(keys=[self.prefix + key], args=args)
        self._sent[key] = (seen.limit, now)

    async def state(self, key: str) -> BucketState:
        raw = await self.client.hmget(self.prefix + key, ["t1", "t2", "t3", "l1", "l2", "l3"])
        t = [_float(v) or 0.0 for v in raw[:3]]
        learnt = [_float(v) for v in raw[3:]]
        return BucketState((t[0], t[1], t[2]), (learnt[0], learnt[1], learnt[2]))

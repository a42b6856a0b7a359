"""The breaker store for the distributed runtime: state in Redis, updated atomically.

Each operation is one Lua script, so every worker process sees one breaker per key
(no read-modify-write races). The scripts re-implement the pure rules of
:mod:`workers.breaker` (an integration test runs the same scripted sequences through
both and compares them step by step). Time is passed in by the caller (the injected
clock), never read from Redis; the policy is passed as arguments, so it is configured
in one place.

Keys (``prefix`` defaults to ``cascade:breaker:``):

- ``{prefix}state:{key}``: the JSON of :meth:`BreakerState.to_dict`.
- ``{prefix}drill:{key}``: a chaos drill, ``SET key reason PX ms``. Its lifetime is
  Redis' own TTL (computed from ``clock()`` at ``disable`` time), so ``disabled``'s
  ``now`` is not consulted here, unlike in the memory store.

Two round trips per model call would cost a worker about a tenth of its CPU, so the
common case costs none: the success of a call that was not a probe changes nothing
(:func:`workers.breaker.record_success`) and is not sent, and with ``closed_ttl_s``
set, an ``allowed`` verdict from a closed breaker is reused by this process for that
long (real time, not the injected clock). When it runs out, one admit asks Redis again
and the calls that come meanwhile keep the old verdict, for at most one more
``closed_ttl_s``: on a busy event loop the round trip takes milliseconds, and every call
in it used to ask too (32 % of admits went to Redis instead of 7 %, with 64 slots and
2 ms of CPU per call). A breaker that another process opens is then seen here within
twice ``closed_ttl_s``; a failure recorded here, or a drill started here, drops the
reuse at once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence

import redis.asyncio as redis

from workers import breaker
from workers.breaker import Admission, BreakerPolicy, BreakerState, StateName, Transition

# Shared by both scripts: decode/encode the state and drop old failures.
# Numbers are written with %.17g so floats round-trip exactly (cjson keeps only 14
# digits, and encodes an empty table as {} rather than []).
_PRELUDE = """
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local recovery = tonumber(ARGV[4])
local max_probes = tonumber(ARGV[5])
local to_close = tonumber(ARGV[6])

local function load()
  local raw = redis.call('GET', KEYS[1])
  if not raw then
    return {state = 'closed', failures = {}, opened_at = nil, probes = 0, successes = 0}
  end
  local d = cjson.decode(raw)
  local opened = d.opened_at
  if opened == cjson.null then opened = nil end
  return {state = d.state, failures = d.failures or {}, opened_at = opened,
          probes = d.probes_in_flight or 0, successes = d.probe_successes or 0}
end

local function num(x) return string.format('%.17g', x) end

local function save(s)
  local f = {}
  for i, t in ipairs(s.failures) do f[i] = num(t) end
  local opened = 'null'
  if s.opened_at then opened = num(s.opened_at) end
  redis.call('SET', KEYS[1], '{"state":"' .. s.state .. '","failures":[' ..
    table.concat(f, ',') .. '],"opened_at":' .. opened ..
    ',"probes_in_flight":' .. string.format('%d', s.probes) ..
    ',"probe_successes":' .. string.format('%d', s.successes) .. '}')
end

-- keep failures with now - t < window (same test as workers.breaker._prune)
local function prune(failures)
  local kept = {}
  for _, t in ipairs(failures) do
    if now - t < window then kept[#kept + 1] = t end
  end
  return kept
end
"""

# KEYS: state, drill. Returns {verdict, reason, from, to, transition_reason}
# (from/to/transition_reason are '' when the state did not change).
_ADMIT = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'rejected', 'disabled', '', '', ''}        -- chaos drill: state untouched
end
local s = load()
if s.state == 'closed' then
  return {'allowed', 'closed', '', '', ''}
end
if s.state == 'open' then
  local opened = s.opened_at or now
  if now - opened < recovery then
    return {'rejected', 'open', '', '', ''}
  end
  s.state = 'half_open'; s.probes = 1; s.successes = 0  -- this call is the first probe
  save(s)
  return {'probe', 'half_open_probe', 'open', 'half_open', 'recovery_elapsed'}
end
if s.probes < max_probes then                      -- half_open: bounded probes
  s.probes = s.probes + 1
  save(s)
  return {'probe', 'half_open_probe', '', '', ''}
end
return {'rejected', 'probe_limit', '', '', ''}
"""
)

# KEYS: state. ARGV[7] = '1' if ok, ARGV[8] = '1' if was_probe.
# Returns {from, to, reason} on a state change, else {}.
_RECORD = (
    _PRELUDE
    + """
local ok = ARGV[7] == '1'
local was_probe = ARGV[8] == '1'
local s = load()
local from = s.state
if ok then                                       -- only a probe's success changes anything
  if s.state == 'half_open' and was_probe then
    s.successes = s.successes + 1
    if s.successes >= to_close then              -- enough probes: close, forget failures
      save({state = 'closed', failures = {}, opened_at = nil, probes = 0, successes = 0})
      return {from, 'closed', 'probes_succeeded'}
    end
    s.probes = math.max(0, s.probes - 1)
    save(s)
  end
  return {}
end
s.failures = prune(s.failures)
if s.state == 'closed' then
  s.failures[#s.failures + 1] = now
  if #s.failures >= threshold then               -- too many failures in the window
    save({state = 'open', failures = s.failures, opened_at = now, probes = 0, successes = 0})
    return {from, 'open', 'failure_threshold'}
  end
elseif s.state == 'half_open' and was_probe then  -- a failed probe reopens
  save({state = 'open', failures = s.failures, opened_at = now, probes = 0, successes = 0})
  return {from, 'open', 'probe_failed'}
end
save(s)                                          -- stale non-probe results are ignored
return {}
"""
)


_CLOSED = Admission(breaker.ALLOWED, breaker.ADMIT_CLOSED)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state_name(value: str) -> StateName:
    for name in breaker.STATES:
        if name == value:
            return name
    raise ValueError(f"unknown breaker state from Redis: {value!r}")


class RedisBreakerStore:
    """Implements :class:`workers.stores.BreakerStore` on one Redis database."""

    def __init__(
        self,
        client: redis.Redis,
        policy: BreakerPolicy | None = None,
        prefix: str = "cascade:breaker:",
        clock: Callable[[], float] = time.time,
        closed_ttl_s: float = 0.0,
    ) -> None:
        self.client = client
        self.policy = policy or BreakerPolicy()
        self.prefix = prefix
        self.clock = clock  # only for drill TTLs
        self.closed_ttl_s = closed_ttl_s
        self._closed_until: dict[str, float] = {}  # key -> time.monotonic() deadline
        self._asking: set[str] = set()  # keys whose reused verdict one admit is renewing
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)

    def _state_key(self, key: str) -> str:
        return f"{self.prefix}state:{key}"

    def _drill_key(self, key: str) -> str:
        return f"{self.prefix}drill:{key}"

    def _args(self, now: float) -> list[str]:
        p = self.policy
        return [
            repr(float(now)),
            str(p.failure_threshold),
            repr(float(p.window_s)),
            repr(float(p.recovery_s)),
            str(p.half_open_probes),
            str(p.probe_successes_to_close),
        ]

    def _transition(self, key: str, now: float, parts: Sequence[str]) -> Transition:
        from_state, to_state, reason = parts
        return Transition(key, _state_name(from_state), _state_name(to_state), now, reason)

    async def admit(self, key: str, now: float) -> Admission:
        if key in self._closed_until:
            left = self._closed_until[key] - time.monotonic()
            # Renewing: the old verdict serves for at most one more TTL (a hung Redis
            # must not keep a fail-closed fleet open).
            if left > 0 or (key in self._asking and left > -self.closed_ttl_s):
                return _CLOSED
            self._asking.add(key)
        try:
            raw = await self._admit(
                keys=[self._state_key(key), self._drill_key(key)], args=self._args(now)
            )
        finally:
            self._asking.discard(key)
        verdict, reason, *event = [_text(v) for v in raw]
        transition = self._transition(key, now, event) if event[0] else None
        if verdict == breaker.ALLOWED:
            if self.closed_ttl_s > 0 and reason == breaker.ADMIT_CLOSED:
                self._closed_until[key] = time.monotonic() + self.closed_ttl_s
            return Admission(breaker.ALLOWED, reason, transition)
        self._closed_until.pop(key, None)
        if verdict == breaker.PROBE:
            return Admission(breaker.PROBE, reason, transition)
        if verdict == breaker.REJECTED:
            return Admission(breaker.REJECTED, reason, transition)
        raise ValueError(f"unknown admission verdict from Redis: {verdict!r}")

    async def record(self, key: str, now: float, ok: bool, was_probe: bool) -> Transition | None:
        if ok and not was_probe:
            return None  # changes nothing (see the module docstring)
        if not ok:
            self._closed_until.pop(key, None)
        args = [*self._args(now), "1" if ok else "0", "1" if was_probe else "0"]
        raw = await self._record(keys=[self._state_key(key)], args=args)
        parts = [_text(v) for v in raw]
        return self._transition(key, now, parts) if parts else None

    async def snapshot(self, key: str) -> BreakerState:
        raw = await self.client.get(self._state_key(key))
        if raw is None:
            return BreakerState()
        return BreakerState.from_dict(json.loads(raw))

    async def disable(self, key: str, until: float, reason: str) -> None:
        self._closed_until.pop(key, None)
        ms = math.ceil((until - self.clock()) * 1000)
        if ms <= 0:
            await self.client.delete(self._drill_key(key))
            return
        await self.client.set(self._drill_key(key), reason, px=ms)

    async def clear(self, key: str) -> None:
        await self.client.delete(self._drill_key(key))

    async def disabled(self, key: str, now: float) -> str | None:
        raw = await self.client.get(self._drill_key(key))
        return None if raw is None else _text(raw)

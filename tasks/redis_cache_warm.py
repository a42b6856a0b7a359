"""The fleet's prompt-cache warm state in Redis (:class:`workers.caching.WarmStore`).

Two keys per (model, prefix) — ``{prefix}warm:{key}`` while the cache is written and
``{prefix}lease:{key}`` while one call is writing it — both living by Redis' own
expiry (``PX``), like the breaker's drills: the TTL is the cache's, the lease the
longest a first call may keep the others waiting. ``claim`` is one Lua script (one
round trip, no race between "is it warm" and "then I go first").
"""

from __future__ import annotations

import math

import redis.asyncio as redis

from workers.caching import CacheWarmer, Claim, MemoryWarmStore

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'warm' end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 'first' end
return 'wait'
"""


class RedisWarmStore:
    def __init__(self, client: redis.Redis, prefix: str = "cascade:cache:") -> None:
        self._client = client
        self._prefix = prefix
        self._claim = client.register_script(_CLAIM)

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}warm:{key}", f"{self._prefix}lease:{key}"]

    async def claim(self, key: str, now: float, lease_s: float) -> Claim:
        raw = await self._claim(keys=self._keys(key), args=[max(math.ceil(lease_s * 1000), 1)])
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        if value == "warm":
            return "warm"
        return "first" if value == "first" else "wait"

    async def done(self, key: str, now: float, ok: bool, ttl_s: float) -> None:
        warm, lease = self._keys(key)
        async with self._client.pipeline(transaction=True) as pipe:
            if ok:
                pipe.set(warm, "1", px=max(math.ceil(ttl_s * 1000), 1))
            pipe.delete(lease)
            await pipe.execute()


def cache_warmer(client: redis.Redis | None) -> CacheWarmer:
    """A warmer shared through Redis when the fleet shares one (``client``), else in memory."""
    if client is not None:
        return CacheWarmer(RedisWarmStore(client))
    return CacheWarmer(MemoryWarmStore())

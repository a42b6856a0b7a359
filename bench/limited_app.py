"""The Celery app with every model call going through the fleet-wide Redis rate limiter.

``celery -A bench.limited_app worker ...``. A stand-in for the wiring the lead will do
in ``tasks/runtime.py``: it wraps ``Runtime.provider`` so each provider is a
:class:`workers.ratelimit.RateLimitedProvider` over a
:class:`tasks.redis_ratelimit.RedisRateLimiter` (built lazily, inside the worker
process's event loop). Limits come from ``CASCADE_BENCH_RATE_LIMITS``, a JSON object
``{"anthropic:claude-haiku-5-5": {"requests_per_min": 600}}``; the Redis URL from
``CASCADE_BENCH_LIMITER_URL``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis.asyncio as aredis

import tasks.jobs  # noqa: F401  (registers the tasks)
from tasks import runtime
from tasks.app import app
from tasks.redis_ratelimit import RedisRateLimiter
from workers.paced import RateLimitedProvider
from workers.providers.base import Provider
from workers.ratelimit import Limits, limits_table

__all__ = ["app"]

_original = runtime.Runtime.provider


def _limits() -> dict[str, Limits]:
    raw = json.loads(os.environ.get("CASCADE_BENCH_RATE_LIMITS", "{}"))
    return {key: Limits(**value) for key, value in raw.items()}


def _provider(self: Any, name: str) -> Provider:
    found = self._providers.get(name)
    if isinstance(found, RateLimitedProvider):
        return found
    inner = _original(self, name)
    client = aredis.Redis.from_url(os.environ["CASCADE_BENCH_LIMITER_URL"])
    limiter = RedisRateLimiter(client, limits_table(_limits()))
    wrapped = RateLimitedProvider(inner, limiter, output_share=0.25)
    self._providers[name] = wrapped
    return wrapped


runtime.Runtime.provider = _provider  # type: ignore[method-assign]

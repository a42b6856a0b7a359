"""Per-process resources: database, event loop, model clients, prices, engines.

Built lazily on first use in each process and dropped in ``worker_process_init``,
so a prefork child never inherits its parent's connections, loop or clients.
One event loop and one client per provider per process, reused by every task.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from celery.signals import worker_process_init, worker_process_shutdown
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.lifecycle import Phase
from common.settings import Settings, get_settings
from models.db import make_engine, make_sessionmaker
from models.repo import job_by_ref
from tasks import metrics
from tasks.redis_cache_warm import cache_warmer
from workers.breaker import BreakerPolicy
from workers.engine import Engine, RealtimeExecutor
from workers.paced import RateLimitedProvider
from workers.pipeline import LocalTier, Pipeline, RulesTier, parse_pipeline
from workers.pricing import PriceTable
from workers.providers.base import Provider
from workers.ratelimit import (
    Limits,
    MemoryRateLimiter,
    RateLimiter,
    limits_table,
)
from workers.retry import RetryPolicy
from workers.stores import BreakerStore, MemoryBreakerStore

T = TypeVar("T")


def worker_name() -> str:
    """This process, as breaker events and logs name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def tier_batch_size(settings: Settings, pipeline: Pipeline, tier_index: int, phase: str) -> int:
    tier = pipeline.tiers[tier_index]
    if phase == Phase.TIER and isinstance(tier, RulesTier | LocalTier):
        return settings.free_batch_size
    return settings.batch_size


# Connections of a process's shared Redis client; more callers wait for one.
SHARED_REDIS_CONNECTIONS = 64


def shared_redis_client(url: str) -> aioredis.Redis:
    """The client for fleet-wide state (breakers, rate limits).

    Short timeouts, so a Redis that is down costs a call a second at most (the breaker's
    ``CASCADE_BREAKER_STORE_DOWN`` decides what happens then); a pooled connection that
    died with a Redis restart is pinged before use and reconnected once at once, so the
    first commands after Redis is back succeed instead of failing one per connection.
    The pool blocks (up to a second) when all its connections are in use: redis-py 8's
    default pool raises ``MaxConnectionsError`` at once past 100, which 128 calls in
    flight reached (every breaker check and rate-limit booking of the burst failed).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=SHARED_REDIS_CONNECTIONS,
        timeout=1.0,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        health_check_interval=2,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = make_engine(settings.database_url)
        self.sessions = make_sessionmaker(self.db)
        self.prices = PriceTable.load(settings.prices_file)
        self.policy = RetryPolicy(
            max_attempts=settings.max_call_attempts,
            base_s=settings.retry_base_s,
            cap_s=settings.retry_cap_s,
        )
        self.loop = asyncio.new_event_loop()
        self._loop_thread: threading.Thread | None = None
        # per-process parts built on first use by other modules (the worker pool)
        self.extras: dict[str, object] = {}
        self._on_close: list[Callable[[], None]] = []
        self._providers: dict[str, Provider] = {}
        self._engines: dict[int, Engine] = {}
        self._executor: RealtimeExecutor | None = None
        self._breakers: BreakerStore | None = None
        self._redis: aioredis.Redis | None = None
        self._limiter: RateLimiter | None = None

    def start_loop(self) -> asyncio.AbstractEventLoop:
        """The process's event loop, running in its own thread from now on."""
        if self._loop_thread is None:
            self._loop_thread = threading.Thread(
                target=self.loop.run_forever, name="cascade-loop", daemon=True
            )
            self._loop_thread.start()
        return self.loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the process's loop and wait for it (never from the loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self.start_loop()).result()

    def on_close(self, fn: Callable[[], None]) -> None:
        self._on_close.append(fn)

    def provider(self, name: str) -> Provider:
        found = self._providers.get(name)
        if found is None:
            from workers.providers.anthropic import AnthropicProvider  # heavy import: lazy

            key = self.settings.anthropic_api_key
            found = AnthropicProvider(
                provider=name,
                api_key=key.get_secret_value() if key else None,
                base_url=self.settings.anthropic_base_url,
                timeout_s=self.settings.call_timeout_s,
            )
            if self.settings.rate_limits:
                found = RateLimitedProvider(found, self.limiter(), on_wait=metrics.rate_limit_wait)
            self._providers[name] = found
        return found

    def _shared_redis(self, url: str) -> aioredis.Redis:
        if self._redis is None:
            self._redis = shared_redis_client(url)
        return self._redis

    def limiter(self) -> RateLimiter:
        """Rate limits per model, shared by the fleet through Redis (in memory when embedded)."""
        if self._limiter is None:
            table = limits_table(
                {key: Limits(**spec) for key, spec in self.settings.rate_limits.items()}
            )
            url = self.settings.shared_redis_url
            if url:
                from tasks.redis_ratelimit import RedisRateLimiter

                self._limiter = RedisRateLimiter(self._shared_redis(url), table)
            else:
                self._limiter = MemoryRateLimiter(table)
        return self._limiter

    def breakers(self) -> BreakerStore:
        if self._breakers is None:
            s = self.settings
            policy = BreakerPolicy(
                failure_threshold=s.breaker_failures,
                window_s=s.breaker_window_s,
                recovery_s=s.breaker_recovery_s,
                half_open_probes=s.breaker_probes,
                probe_successes_to_close=s.breaker_probes,
            )
            url = s.shared_redis_url
            if url:
                from tasks.redis_breaker import RedisBreakerStore

                self._breakers = RedisBreakerStore(
                    self._shared_redis(url), policy, closed_ttl_s=s.breaker_closed_ttl_ms / 1000
                )
            else:
                self._breakers = MemoryBreakerStore(policy)
        return self._breakers

    def executor(self) -> RealtimeExecutor:
        if self._executor is None:
            url = self.settings.shared_redis_url
            self._executor = RealtimeExecutor(
                self.provider,
                self.policy,
                self.settings.concurrency,
                breakers=self.breakers(),
                allow_when_store_down=self.settings.breaker_store_down == "allow",
                warmer=cache_warmer(self._shared_redis(url) if url else None),
            )
        return self._executor

    def engine_for(self, job_id: int, pipeline: Pipeline | None = None) -> Engine:
        """The job's engine, built once per process from the job's pipeline.

        ``pipeline``: the job's own, for a job created in a transaction not yet committed.
        """
        engine = self._engines.get(job_id)
        if engine is None:
            if pipeline is None:
                with self.sessions() as session:
                    job = job_by_ref(session, job_id)
                    if job is None:
                        raise LookupError(f"job {job_id} does not exist")
                    pipeline = parse_pipeline(job.pipeline, f"job {job_id}")
            engine = Engine(
                pipeline,
                self.prices,
                self.executor(),
                job_id=job_id,
                tries_per_call=self.settings.max_call_attempts,
            )
            self._engines[job_id] = engine
        return engine

    def batch_size(self, job_id: int, tier_index: int, phase: str = Phase.TIER) -> int:
        """Item ids per message for this tier visit: larger where the tier is free."""
        pipeline = self.engine_for(job_id).pipeline
        return tier_batch_size(self.settings, pipeline, tier_index, phase)

    def close(self) -> None:
        for fn in self._on_close:
            fn()
        self._on_close = []

        async def _close() -> None:
            for provider in self._providers.values():
                await provider.aclose()
            if self._redis is not None:
                await self._redis.aclose()

        if not self.loop.is_closed():
            if self._loop_thread is not None:
                self.run(_close())
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._loop_thread.join(10)
            else:
                self.loop.run_until_complete(_close())
            self.loop.close()
        self.db.dispose()


_local = threading.local()


def get_runtime() -> Runtime:
    """This thread's runtime (one per worker process; the embedded worker thread has its own)."""
    rt: Runtime | None = getattr(_local, "runtime", None)
    if rt is None:
        rt = Runtime(get_settings())
        _local.runtime = rt
    return rt


def reset_runtime() -> None:
    rt: Runtime | None = getattr(_local, "runtime", None)
    _local.runtime = None
    if rt is not None:
        rt.close()


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Anything inherited from the parent belongs to the parent: forget it, build anew.
    _local.runtime = None


@worker_process_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    reset_runtime()

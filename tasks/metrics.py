"""Prometheus metrics of the workers (prefork: multiprocess mode).

``prometheus_client`` decides how it stores values when it is first imported, so
this module is imported only after ``PROMETHEUS_MULTIPROC_DIR`` is set — by
``start_metrics_server`` in the worker's main process, before it forks. A process
that never started the server records nothing (``enabled()`` is false).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from common.lifecycle import NOT_SENT, Role, Verdict
from tasks.queues import queue_keys
from workers.records import ItemResult

_enabled = False
_metrics: dict[str, Any] = {}
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


def enabled() -> bool:
    return _enabled or bool(os.environ.get("CASCADE_METRICS_ENABLED"))


def _define() -> dict[str, Any]:
    if not _metrics:
        from prometheus_client import Counter, Gauge, Histogram

        _metrics.update(
            items=Counter(
                "cascade_items", "Items leaving a tier, by decision", ["tier", "decision"]
            ),
            escalations=Counter("cascade_escalations", "Items escalated from a tier", ["tier"]),
            fallbacks=Counter(
                "cascade_fallbacks", "Calls served by a fallback link", ["tier", "link"]
            ),
            calls=Counter("cascade_calls", "Model calls by outcome", ["model", "outcome"]),
            cost=Counter("cascade_cost_usd", "Spend on model calls (USD)", ["model"]),
            latency=Histogram(
                "cascade_call_latency_seconds",
                "Model call latency",
                ["tier"],
                buckets=CALL_BUCKETS,
            ),
            ratelimit_waits=Counter(
                "cascade_ratelimit_waits", "Calls held back by the fleet rate limiter", ["limit"]
            ),
            ratelimit_wait=Counter(
                "cascade_ratelimit_wait_seconds",
                "Time calls waited for the rate limiter",
                ["limit"],
            ),
            breaker=Gauge(
                "cascade_breaker_open",
                "1 while a breaker is open or half-open",
                ["breaker"],
                multiprocess_mode="livemax",
            ),
        )
    return _metrics


def record(tier: str, results: Sequence[ItemResult], decisions: Sequence[str]) -> None:
    """Count one settled tier visit."""
    if not enabled():
        return
    m = _define()
    for decision in decisions:
        m["items"].labels(tier, decision).inc()
        if decision == Verdict.ESCALATE:
            m["escalations"].labels(tier).inc()
    for r in results:
        for s in r.steps:
            if s.role == Role.RULES:
                continue
            m["calls"].labels(s.model, s.outcome).inc()
            m["cost"].labels(s.model).inc(s.cost_nanos / 1e9)
            if s.outcome not in NOT_SENT:  # a step that sent nothing took no time
                m["latency"].labels(tier).observe(s.latency_ms / 1000)
            if s.role == Role.FALLBACK and s.decision is not None:
                m["fallbacks"].labels(tier, f"{s.provider}:{s.model}").inc()


def rate_limit_wait(key: str, seconds: float) -> None:
    if enabled():
        m = _define()
        m["ratelimit_waits"].labels(key).inc()
        m["ratelimit_wait"].labels(key).inc(seconds)


def breaker_state(key: str, state: str) -> None:
    if enabled():
        _define()["breaker"].labels(key).set(0 if state == "closed" else 1)


class QueueDepth:
    """Messages waiting in each queue, read from the Redis broker at scrape time."""

    def __init__(self, broker_url: str, queues: Sequence[str]) -> None:
        self.broker_url = broker_url
        self.queues = list(queues)

    def collect(self) -> Any:
        import redis
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "cascade_queue_depth", "Messages waiting in a queue", labels=["queue"]
        )
        client = redis.Redis.from_url(self.broker_url, socket_timeout=2)
        try:
            for queue in self.queues:
                depth = sum(int(client.llen(key)) for key in queue_keys(queue))
                family.add_metric([queue], float(depth))
        except redis.RedisError:
            return
        finally:
            client.close()
        yield family


def start_metrics_server(port: int) -> str:
    """In the worker's main process, before the pool forks: serve every process's metrics."""
    global _enabled
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="cascade-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.environ["CASCADE_METRICS_ENABLED"] = "1"
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    from common.settings import get_settings

    settings = get_settings()
    if settings.broker_url.startswith(("redis://", "rediss://")):
        registry.register(QueueDepth(settings.broker_url, settings.queues.split(",")))
    start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104 - scraped by Prometheus
    _enabled = True
    return directory


def child_exit(pid: int) -> None:
    if enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

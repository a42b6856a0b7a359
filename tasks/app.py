"""The Celery app. ``celery -A tasks.app worker -Q tier.small`` works as-is.

Configuration is read from the settings when Celery first needs it (``on_configure``),
not at import time.

Delivery guarantees (see README "When things fail"):
- late acks and reject-on-worker-lost: a task whose worker died is delivered again;
- prefetch 1: a worker holds at most one batch it has not started;
- Redis visibility timeout 1 h: an unacked message comes back after that; every
  countdown we set is far below it. Redelivery is harmless: tasks claim items in
  the database, and Postgres, not the broker, is the source of truth; the sweeper
  re-sends whatever a lost message left behind.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import structlog
from celery import Celery
from celery.signals import setup_logging, task_prerun, worker_init, worker_process_shutdown

from common.logs import configure_logging
from common.settings import get_settings
from models.errors import DB_TRANSIENT, with_db_retry
from tasks.queues import CONTROL_QUEUE, FALLBACK_QUEUE, NORMAL, PRIORITY_STEPS

VISIBILITY_TIMEOUT_S = 3600
P = ParamSpec("P")
T = TypeVar("T")


class CascadeCelery(Celery):
    def on_configure(self) -> None:  # type: ignore[override]
        settings = get_settings()
        transport: dict[str, Any] = {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "priority_steps": list(PRIORITY_STEPS),
        }
        if settings.embedded:
            transport["polling_interval"] = 0.01
        self.conf.update(
            broker_url=settings.broker_url,
            broker_transport_options=transport,
            broker_connection_retry_on_startup=True,
            task_serializer="json",
            accept_content=["json"],
            task_ignore_result=True,
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,
            task_default_queue=CONTROL_QUEUE,
            task_default_priority=NORMAL,
            task_create_missing_queues=True,
            worker_hijack_root_logger=False,
            worker_redirect_stdouts=False,
            beat_schedule={
                # on the fallback queue: every deployment runs a worker for it
                "sweep": {
                    "task": "cascade.sweep",
                    "schedule": 60.0,
                    "options": {"queue": FALLBACK_QUEUE},
                },
                # keeps report_daily fast; it is exact without it (models/rollup.py)
                "rollup": {
                    "task": "cascade.rollup",
                    "schedule": 300.0,
                    "options": {"queue": FALLBACK_QUEUE},
                },
                **_backfill_beat(),
            },
        )


def beat_job(job: Callable[P, T]) -> Callable[P, T | None]:
    """A job beat starts (sweep, rollup, batch recovery, backfills): a database that
    is away is retried for about 6 s; then the job logs one line and waits for its
    next turn, rather than fail with a traceback."""

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> T | None:
        try:
            return with_db_retry(lambda: job(*args, **kwargs), tries=5, base_s=0.4, sleep=_sleep)
        except DB_TRANSIENT as exc:
            structlog.get_logger("cascade.beat").error(
                "cascade.beat.database_unavailable",
                job=job.__name__,
                error=type(exc).__name__,
                detail=(str(exc).strip().splitlines() or [""])[0][:200],
                then="skipped until its next turn",
            )
            return None

    return run


_sleep = time.sleep


def _backfill_beat() -> dict[str, Any]:
    """The batch recovery poll and each configured nightly backfill (beat)."""
    from celery.schedules import crontab

    from workers.backfills import load_backfills  # reads CASCADE_BACKFILLS_FILE

    options = {"queue": FALLBACK_QUEUE}  # which every deployment consumes
    entries: dict[str, Any] = {
        "poll-open-batches": {
            "task": "cascade.poll_open_batches",
            "schedule": 300.0,
            "options": options,
        }
    }
    try:
        backfills = load_backfills()
    except ValueError as exc:  # a bad backfills file must not stop the workers
        structlog.get_logger("cascade.app").error("cascade.backfill.config_invalid", error=str(exc))
        return entries
    for b in backfills:
        hour, minute = b.at.split(":")
        entries[f"backfill-{b.name}"] = {
            "task": "cascade.backfill",
            "schedule": crontab(hour=int(hour), minute=int(minute)),
            "args": (b.name,),
            "options": options,
        }
    return entries


# Infrastructure failures only (database gone, connection reset). Model-call
# failures never reach Celery: the retry policy and fallback chain own them.
INFRA_RETRY: dict[str, Any] = {
    "autoretry_for": DB_TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 20,
}

app = CascadeCelery("cascade", include=["tasks.jobs", "tasks.batches", "tasks.backfill"])


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Connecting here stops Celery from configuring logging itself: its records go
    # through structlog's processors like ours.
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level or "INFO")


@worker_init.connect
def _start_metrics(**_: Any) -> None:
    # The SDK costs ~2 s to import: pay it once in the parent, before the pool forks,
    # never on a child's event loop in the middle of a batch.
    import workers.providers.anthropic  # noqa: F401

    port = get_settings().metrics_port
    if port:
        from tasks.metrics import start_metrics_server

        start_metrics_server(port)


@worker_process_shutdown.connect
def _child_gone(pid: int | None = None, **_: Any) -> None:
    if pid is not None:
        from tasks.metrics import child_exit

        child_exit(pid)


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))

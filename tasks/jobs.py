"""The Celery tasks: thin wrappers that resolve ids, call the flow and publish follow-ups."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import worker_process_init

from common.lifecycle import Phase
from common.logs import get_logger
from tasks.app import INFRA_RETRY, app, beat_job
from tasks.flow import process
from tasks.messages import Message
from tasks.pool import pool_of
from tasks.publish import publish, sweep_once
from tasks.runtime import get_runtime

log = get_logger("cascade.tasks")


@worker_process_init.connect
def _start_pool(**_: Any) -> None:
    # Each worker process renews its leases and sweeps from the start, not from its
    # first model call: a process that replaced a killed one brings its items back.
    if get_runtime().settings.sweep_every_s:
        pool_of(get_runtime())


@app.task(name="cascade.run_tier", bind=True, **INFRA_RETRY)
def run_tier(self: Task[Any, Any], job_id: int, tier_index: int, ids: list[int]) -> None:
    rt = get_runtime()
    publish(rt, process(rt, Message(Phase.TIER, job_id, tier_index, ids)))


@app.task(name="cascade.run_fallback", bind=True, **INFRA_RETRY)
def run_fallback(self: Task[Any, Any], job_id: int, tier_index: int, ids: list[int]) -> None:
    rt = get_runtime()
    publish(rt, process(rt, Message(Phase.FALLBACK, job_id, tier_index, ids)))


@app.task(name="cascade.sweep")
@beat_job
def sweep() -> int:
    return sweep_once(get_runtime())


@app.task(name="cascade.rollup")
@beat_job
def rollup() -> int:
    """Refresh the report_daily rollup (beat, every 5 minutes); returns the new watermark."""
    from models.rollup import refresh

    done = refresh(get_runtime().sessions)
    if done.batches:
        log.info("cascade.rollup.refreshed", before=done.before, after=done.after)
    return done.after

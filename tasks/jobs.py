"""The Celery tasks: thin wrappers that resolve ids, call the flow and publish follow-ups."""

from __future__ import annotations

from typing import Any

from celery import Task

from common.logs import get_logger
from models import repo, reuse
from models.errors import DB_TRANSIENT
from tasks.app import FALLBACK_QUEUE, app, tier_queue
from tasks.flow import Message, chunks, process
from tasks.runtime import Runtime, get_runtime

log = get_logger("cascade.tasks")
# Infrastructure failures only (database gone, connection reset). Model-call
# failures never reach Celery: the retry policy and fallback chain own them.
INFRA_RETRY: dict[str, Any] = {
    "autoretry_for": DB_TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 20,
}


def queue_for(rt: Runtime, msg: Message) -> str:
    if msg.phase == "fallback":
        return FALLBACK_QUEUE
    tier = rt.engine_for(msg.job_id).pipeline.tiers[msg.tier_index]
    return tier_queue(tier.name)


def publish(rt: Runtime, messages: list[Message]) -> None:
    for msg in messages:
        task = run_fallback if msg.phase == "fallback" else run_tier
        task.apply_async(
            args=(msg.job_id, msg.tier_index, msg.ids),
            queue=queue_for(rt, msg),
            countdown=msg.countdown or None,
            # Celery would otherwise repr every id for the message's header: half the
            # cost of sending a batch of 1,000
            argsrepr=f"({msg.job_id}, {msg.tier_index}, <{len(msg.ids)} ids>)",
            kwargsrepr="{}",
        )


@app.task(name="cascade.run_tier", bind=True, **INFRA_RETRY)
def run_tier(self: Task[Any, Any], job_id: int, tier_index: int, ids: list[int]) -> None:
    rt = get_runtime()
    publish(rt, process(rt, Message("tier", job_id, tier_index, ids)))


@app.task(name="cascade.run_fallback", bind=True, **INFRA_RETRY)
def run_fallback(self: Task[Any, Any], job_id: int, tier_index: int, ids: list[int]) -> None:
    rt = get_runtime()
    publish(rt, process(rt, Message("fallback", job_id, tier_index, ids)))


def sweep_once(rt: Runtime, idle_s: int = 120) -> int:
    """Re-send items no message is carrying (lost message, dead worker). Returns items re-sent."""
    with rt.sessions.begin() as session:
        # A deferred item waits in 'fallback' for its countdown: leave it that long.
        fallback_idle = max(idle_s, int(rt.settings.defer_cap_s) + 60)
        reuse.rescue(session)  # repeats whose source settled without handing its decision on
        strays = repo.strays(session, idle_s=idle_s, fallback_idle_s=fallback_idle)
    messages = [
        Message(s.phase, s.job_id, s.tier_index, chunk)
        for s in strays
        for chunk in chunks(s.ids, rt.batch_size(s.job_id, s.tier_index, s.phase))
    ]
    publish(rt, messages)
    count = sum(len(m.ids) for m in messages)
    if count:
        log.warning("cascade.sweep.resent", items=count, messages=len(messages))
    return count


@app.task(name="cascade.sweep")
def sweep() -> int:
    return sweep_once(get_runtime())


@app.task(name="cascade.rollup")
def rollup() -> int:
    """Refresh the report_daily rollup (beat, every 5 minutes); returns the new watermark."""
    from models.rollup import refresh

    done = refresh(get_runtime().sessions)
    if done.batches:
        log.info("cascade.rollup.refreshed", before=done.before, after=done.after)
    return done.after

"""The doorbell: publishing follow-up messages after the ledger has committed, and
re-ringing for items no message carries (the sweeper).

Postgres is the source of truth and the broker only a doorbell, so a publish that
fails is never fatal: it is retried with backoff for a few seconds (a broker restart,
a dropped connection), and what still cannot be sent is marked in the ledger for the
next sweep, which every worker process runs every ``CASCADE_SWEEP_EVERY_S`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from common.lifecycle import Phase
from common.logs import get_logger
from models import ledger, pgbulk, reuse
from tasks.app import app
from tasks.fleet import queue_depths
from tasks.messages import Message, chunks, released_messages
from tasks.queues import FALLBACK_QUEUE, NORMAL, URGENT, tier_queue
from tasks.runtime import Runtime

log = get_logger("cascade.publish")
TASKS = {Phase.TIER: "cascade.run_tier", Phase.FALLBACK: "cascade.run_fallback"}
# Backoff between publish tries: about 6 s in all before the items are left to the sweeper.
PUBLISH_DELAYS_S = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
# Items waiting this long at a tier whose queue is empty were lost with their message
# (a broker restarted empty): longer than a publish's retries, shorter than a lease.
QUIET_S = 15


def queue_for(rt: Runtime, msg: Message) -> str:
    if msg.phase == Phase.FALLBACK:
        return FALLBACK_QUEUE
    tier = rt.engine_for(msg.job_id).pipeline.tiers[msg.tier_index]
    return tier_queue(tier.name)


def send(rt: Runtime, msg: Message) -> None:
    """One message on its queue (no retry)."""
    app.send_task(
        TASKS[Phase(msg.phase)],
        args=(msg.job_id, msg.tier_index, msg.ids),
        queue=queue_for(rt, msg),
        countdown=msg.countdown or None,
        priority=URGENT if msg.urgent else NORMAL,
        # Celery would otherwise repr every id for the message's header: half the
        # cost of sending a batch of 1,000
        argsrepr=f"({msg.job_id}, {msg.tier_index}, <{len(msg.ids)} ids>)",
        kwargsrepr="{}",
    )


def publish(
    rt: Runtime,
    messages: Sequence[Message],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send each message, retrying a broker failure; returns how many could not be sent.

    The items of a message that could not be sent are marked for the next sweep.
    """
    unsent: list[int] = []
    for msg in messages:
        for delay in (*PUBLISH_DELAYS_S, None):
            try:
                send(rt, msg)
                break
            except Exception as exc:  # kombu's OperationalError, a reset connection, ...
                if delay is None:
                    log.error(
                        "cascade.publish.failed",
                        job_id=msg.job_id,
                        items=len(msg.ids),
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )
                    unsent += msg.ids
                    break
                log.warning("cascade.publish.retry", delay_s=delay, error=type(exc).__name__)
                sleep(delay)
    if unsent:
        _mark_unsent(rt, unsent)
    return len(unsent)


def _mark_unsent(rt: Runtime, ids: list[int]) -> None:
    try:
        with rt.sessions.begin() as session:
            ledger.mark_unsent(session, ids)
    except Exception as exc:  # the sweeper still finds them once they are idle
        log.error("cascade.publish.unmarked", items=len(ids), error=type(exc).__name__)


def sweep_once(
    rt: Runtime,
    idle_s: int = 120,
    *,
    shared: bool = False,
    depths: Callable[[list[str]], dict[str, int]] | None = queue_depths,
) -> int:
    """Re-send items no message is carrying (lost message, dead worker). Returns items re-sent.

    Items waiting at a tier, or for the fallback chain without having been deferred,
    whose queue is empty (``depths``, the broker's count per queue) are re-sent after
    ``QUIET_S``, not ``idle_s``: a broker that restarted empty lost their messages.
    ``shared``: a worker's own periodic sweep; it skips when another process holds the
    fleet's sweep lock.
    """
    with rt.sessions.begin() as session:
        if shared and not ledger.try_sweep_lock(session):
            return 0
        pgbulk.analyze_if_unseen(session)  # tables the workers filled since it was empty
        # A deferred item waits in 'fallback' for its countdown: leave it that long.
        fallback_idle = max(idle_s, int(rt.settings.defer_cap_s) + 60)
        # repeats whose source settled without handing its decision on (models.reuse)
        freed = released_messages(reuse.rescue(session))
        quiet = _unqueued(rt, ledger.waiting_tiers(session, idle_s=QUIET_S), depths)
        strays = ledger.strays(
            session,
            idle_s=idle_s,
            fallback_idle_s=fallback_idle,
            quiet=quiet,
            quiet_idle_s=QUIET_S,
        )
    messages = [replace(m, urgent=True) for m in freed] + [
        Message(s.phase, s.job_id, s.tier_index, chunk, urgent=True)
        for s in strays
        for chunk in chunks(s.ids, rt.batch_size(s.job_id, s.tier_index, s.phase))
    ]
    publish(rt, messages)
    count = sum(len(m.ids) for m in messages)
    if count:
        log.warning("cascade.sweep.resent", items=count, messages=len(messages))
    return count


def _unqueued(
    rt: Runtime,
    waiting: list[tuple[int, int, Phase]],
    depths: Callable[[list[str]], dict[str, int]] | None,
) -> list[tuple[int, int, Phase]]:
    """The (job, tier, phase) triples of ``waiting`` whose queue holds no message."""
    if not waiting or depths is None:
        return []
    queues = {w: queue_for(rt, Message(w[2], w[0], w[1], [])) for w in waiting}
    try:
        counts = depths(sorted(set(queues.values())))
    except Exception as exc:  # no broker: the idle rule still finds them
        log.warning("cascade.sweep.depths_unknown", error=type(exc).__name__)
        return []
    return [w for w, q in queues.items() if not counts.get(q, 0)]

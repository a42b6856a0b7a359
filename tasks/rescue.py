"""Nothing stranded: put a job's items back on their queues when no message carries them.

The embedded runtime's broker lives in memory, so whatever an interrupted run had
queued or leased died with it: the next run of `cascade submit` or `cascade resume`
on the job sends all of it again (:func:`resend_embedded`). In the distributed runtime
the broker survives, so only what no message can still carry is re-queued
(:func:`requeue_distributed`): items at a tier whose queue is empty, or idle longer
than the sweeper waits. A duplicate message is harmless (claims are in the database).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from common.lifecycle import Phase
from common.logs import get_logger
from models import jobctl
from models.repo import utcnow
from tasks.messages import Message, chunks
from tasks.publish import publish, queue_for
from tasks.runtime import Runtime

log = get_logger("cascade.rescue")
SWEEP_IDLE_S = 120  # as `cascade sweep`


def _send(rt: Runtime, job_id: int, groups: list[jobctl.Waiting]) -> int:
    messages = [
        Message(Phase(g.phase), job_id, g.tier_index, c)
        for g in groups
        for c in chunks(g.ids, rt.batch_size(job_id, g.tier_index, g.phase))
    ]
    publish(rt, messages)
    count = sum(len(m.ids) for m in messages)
    if count:
        log.info("cascade.rescue.resent", job_id=job_id, items=count, messages=len(messages))
    return count


def resend_embedded(rt: Runtime, job_id: int, started: datetime) -> int:
    """Every item of the job this process has not touched since ``started`` (its own
    start): queued or leased by an earlier process, whose broker is gone."""
    with rt.sessions.begin() as session:
        groups = jobctl.uncarried(session, job_id, before=started, release_leases=True)
    return _send(rt, job_id, groups)


def requeue_distributed(rt: Runtime, job_id: int, depths: dict[str, int]) -> int:
    """Items at a tier whose queue is empty (``depths``: messages per queue; a queue not
    in it counts as empty), items idle longer than the sweeper waits at the others, and
    long-idle fallback items go back on their queue."""
    now = utcnow()
    idle = now - timedelta(seconds=SWEEP_IDLE_S)
    deferred = now - timedelta(seconds=max(SWEEP_IDLE_S, rt.settings.defer_cap_s + 60))
    tiers = range(len(rt.engine_for(job_id).pipeline.tiers))
    empty = [t for t in tiers if not depths.get(queue_for(rt, _probe(job_id, t)), 0)]
    busy = [t for t in tiers if t not in empty]
    with rt.sessions.begin() as session:
        groups = jobctl.uncarried(
            session, job_id, before=now, release_leases=False, fallback_before=deferred, tiers=empty
        )
        if busy:
            groups += jobctl.uncarried(
                session, job_id, before=idle, release_leases=False, fallback_before=deferred,
                tiers=busy,
            )  # fmt: skip
    return _send(rt, job_id, groups)


def _probe(job_id: int, tier_index: int) -> Message:
    return Message(Phase.TIER, job_id, tier_index, [])

"""A tier visit's two ends: claim its items, and after it, record it and say what
comes next.

:func:`claim` takes a message's items under a lease, with the drills in force;
:func:`settle_and_route` writes a visit's results under its claim's token (for what is
settled a batch at a time: a collected Message Batch, budget holds); :func:`route`
logs, counts and returns the follow-up messages, to be published once the database
has committed. The worker pool settles its items one by one (:mod:`tasks.writer`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from common.lifecycle import FINAL_VERDICTS, STOPS_JOB
from common.logs import get_logger
from models import ledger, repo
from models.errors import with_db_retry
from models.ledger import Claimed, Settled
from models.resilience import active_drills
from tasks import metrics
from tasks.messages import Message, follow_ups, released_messages
from tasks.rows import attempt_rows, settled_of
from tasks.runtime import Runtime
from workers.decision import Escalate, GiveUp
from workers.records import ItemResult

log = get_logger("cascade.flow")


@dataclass(frozen=True, slots=True)
class Claim:
    token: str
    items: list[Claimed]
    disabled: dict[str, str]  # the drills in force: what each disables


def claim(rt: Runtime, msg: Message, *, lease_s: int) -> Claim:
    """The message's items that are still waiting, under a new lease token."""
    token = ledger.new_token()
    with rt.sessions.begin() as session:
        items = ledger.claim(
            session,
            msg.job_id,
            msg.tier_index,
            msg.ids,
            phase=msg.phase,
            token=token,
            lease_s=lease_s,
        )
        disabled = active_drills(session) if items else {}
    if not items:
        log.info("cascade.batch.nothing_to_do", job_id=msg.job_id, tier_index=msg.tier_index)
    return Claim(token, items, dict(disabled))


def settle_and_route(
    rt: Runtime, msg: Message, tier_name: str, token: str, results: Sequence[ItemResult]
) -> list[Message]:
    """Write the results of a tier visit under the claim's token; return the follow-ups.

    For what is settled a batch at a time (a collected Message Batch, budget holds).
    """
    settled = [settled_of(msg.tier_index, tier_name, r) for r in results]
    pipeline = rt.engine_for(msg.job_id).pipeline
    rows = attempt_rows(msg.job_id, results)

    def write() -> tuple[list[Settled], list[Message]]:
        with rt.sessions.begin() as session:
            kept = ledger.settle(session, token, rows, settled, drop_text=not pipeline.store_text)
            spent = sum(s.cost_nanos + s.calibration_nanos for s in kept)
            repo.add_spend(session, msg.job_id, pipeline.name, spent)
            stopped = [s for s in kept if s.decision in STOPS_JOB]
            if stopped:
                repo.pause_job(session, msg.job_id, stopped[0].error or "spend limit reached")
            return kept, released_messages(ledger.released(session))

    # The calls are made and paid for: keep trying to record them while the database
    # is away (a restart, a dropped connection) rather than lose them with the task.
    kept, freed = with_db_retry(write)
    return route(rt, msg, tier_name, results, kept) + freed


def route(
    rt: Runtime,
    msg: Message,
    tier_name: str,
    results: Sequence[ItemResult],
    kept: Sequence[Settled],
    *,
    finish: bool = True,
) -> list[Message]:
    """After a tier visit is recorded: metrics, logs, and the follow-up messages.

    ``finish``: see whether that was the job's last item (not while it is still being
    submitted: `cascade submit` does it when the file is in).
    """
    metrics.record(tier_name, results, [s.decision for s in kept])
    counts = Counter(str(s.decision) for s in kept)
    log.info(
        "cascade.batch.settled", items=len(kept), lost_lease=len(results) - len(kept), **counts
    )
    stopped = [s for s in kept if s.decision in STOPS_JOB]
    if stopped:
        log.error("cascade.job.paused", job_id=msg.job_id, why=stopped[0].error)
    for r in results:
        if isinstance(r.decision, Escalate):
            log.debug("cascade.item.escalated", item=r.pk, why=r.decision.why)
        elif isinstance(r.decision, GiveUp):
            log.warning("cascade.item.failed", item=r.pk, why=r.decision.why)
    out = follow_ups(
        msg,
        kept,
        {r.pk: r.decision for r in results},
        rt.settings,
        lambda t, p: rt.batch_size(msg.job_id, t, p),
    )
    if finish and any(s.decision in FINAL_VERDICTS for s in kept):

        def finish_job() -> bool:
            with rt.sessions.begin() as session:
                return repo.finish_job_if_done(session, msg.job_id)

        if with_db_retry(finish_job):
            log.info("cascade.job.done", job_id=msg.job_id)
    return out

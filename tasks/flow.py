"""What a tier task and the fallback task do, apart from Celery: one message's items.

- A rules or local tier (free, microseconds an item): its items are taken, decided
  and settled in one transaction, and the follow-ups returned to be published.
- A batch tier: its items go to the Message Batches API (:mod:`tasks.batches`); a poll
  task settles them when the batch ends (:func:`settle_and_route`).
- A model tier, or a tier's fallback chain: the worker pool (:mod:`tasks.pool`) takes
  the items and settles each one as soon as its own calls are done.

Follow-ups are returned rather than published, so they go out only after the
database has committed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from common.lifecycle import FINAL_VERDICTS, STOPS_JOB, Phase
from common.logs import get_logger
from models import ledger, repo
from models.errors import with_db_retry
from models.ledger import Settled
from tasks import metrics
from tasks.budget import budget_gate
from tasks.messages import Message, follow_ups, released_messages
from tasks.pool import pool_of
from tasks.rows import attempt_rows, settled_of
from tasks.runtime import Runtime
from workers.decision import Escalate, GiveUp
from workers.engine import Engine
from workers.pipeline import ClaudeTier, LocalTier, RulesTier
from workers.records import ItemResult, WorkItem

if TYPE_CHECKING:
    from models.db import DbSession

log = get_logger("cascade.flow")

# A batch tier's items stay claimed while the API works (up to 24 h) and the poll collects.
BATCH_LEASE_S = 25 * 3600


def process(rt: Runtime, msg: Message) -> list[Message]:
    """One message's items, each the way its tier runs. Returns follow-ups to publish."""
    tier = rt.engine_for(msg.job_id).pipeline.tiers[msg.tier_index]
    # A free tier that sends shadow samples makes model calls: those go through the pool.
    if msg.phase == Phase.TIER and isinstance(tier, RulesTier | LocalTier) and not tier.shadow_rate:
        return _process_free(rt, msg, tier)
    if msg.phase == Phase.TIER and isinstance(tier, ClaudeTier) and tier.mode == "batch":
        return _process_batch(rt, msg, tier)
    pool_of(rt).admit(msg)
    return []


def _process_batch(rt: Runtime, msg: Message, tier: ClaudeTier) -> list[Message]:
    """Submit the items as Message Batches; a poll task settles them when they end."""
    from tasks.batches import start_batch

    engine = rt.engine_for(msg.job_id)
    token = ledger.new_token()
    with rt.sessions.begin() as session:
        claimed = ledger.claim(
            session,
            msg.job_id,
            msg.tier_index,
            msg.ids,
            phase=msg.phase,
            token=token,
            lease_s=BATCH_LEASE_S,
        )
    if not claimed:
        log.info("cascade.batch.nothing_to_do", job_id=msg.job_id, tier_index=msg.tier_index)
        return []
    claimed, held = budget_gate(rt, engine, msg, tier, claimed)
    if claimed:
        start_batch(rt, engine, msg, claimed, token)
    return settle_and_route(rt, msg, tier.name, token, held) if held else []


def _process_free(rt: Runtime, msg: Message, tier: RulesTier | LocalTier) -> list[Message]:
    """A rules or local tier: take, decide and settle in one transaction.

    Deciding takes microseconds per item, so no lease is needed to cover it: the
    items are taken and settled by the same transaction, and a worker that dies
    midway rolls it back, leaving them waiting for the next copy of the message.
    """

    def write() -> tuple[list[ItemResult], list[Settled]]:
        with rt.sessions.begin() as session:
            return decide_free(rt, session, msg.job_id, msg.tier_index, msg.ids)

    results, kept = with_db_retry(write)
    if not results:
        log.info("cascade.batch.nothing_to_do", job_id=msg.job_id, tier_index=msg.tier_index)
        return []
    structlog.contextvars.bind_contextvars(job_id=msg.job_id, tier=tier.name, phase=msg.phase)
    try:
        return route(rt, msg, tier.name, results, kept)
    finally:
        structlog.contextvars.unbind_contextvars("job_id", "tier", "phase")


def decide_free(
    rt: Runtime, session: DbSession, job_id: int, tier_index: int, ids: Sequence[int]
) -> tuple[list[ItemResult], list[Settled]]:
    """Take, decide and settle items of a free tier (rules, local) in ``session``'s transaction."""
    engine = rt.engine_for(job_id)
    token = ledger.new_token()
    taken = ledger.take(session, job_id, tier_index, ids, token=token)
    if not taken:
        return [], []
    items = [WorkItem(c.pk, c.text, c.steps) for c in taken]
    results, settled = decide_items(engine, tier_index, items)
    kept = ledger.settle(
        session,
        token,
        attempt_rows(job_id, results),
        settled,
        drop_text=not engine.pipeline.store_text,
        taken={c.pk for c in taken},
    )
    return results, kept


def decide_items(
    engine: Engine, tier_index: int, items: Sequence[WorkItem]
) -> tuple[list[ItemResult], list[Settled]]:
    """A free tier (rules, local) on ``items``: each result and how its item leaves the tier."""
    tier = engine.pipeline.tiers[tier_index]
    if isinstance(tier, RulesTier):
        results = engine.run_rules(tier_index, items)
    else:
        results = engine.run_local(tier_index, items)
    return results, [settled_of(tier_index, tier.name, r) for r in results]


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

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

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from common.lifecycle import Phase
from common.logs import get_logger
from models import ledger
from models.errors import with_db_retry
from models.ledger import Settled
from tasks.batches import start_batch
from tasks.budget import budget_gate
from tasks.messages import Message
from tasks.pool import pool_of
from tasks.rows import attempt_rows, settled_of
from tasks.runtime import Runtime
from tasks.settle import claim, route, settle_and_route
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
    back = pool_of(rt).admit(msg).back
    # the pool is full of items waiting on something else than call slots: this
    # message goes back to its queue, so the process can take other queues' work
    return [replace(msg, ids=back)] if back else []


def _process_batch(rt: Runtime, msg: Message, tier: ClaudeTier) -> list[Message]:
    """Submit the items as Message Batches; a poll task settles them when they end."""
    engine = rt.engine_for(msg.job_id)
    got = claim(rt, msg, lease_s=BATCH_LEASE_S)
    if not got.items:
        return []
    claimed, held = budget_gate(rt, engine, msg, tier, got.items)
    if claimed:
        start_batch(rt, engine, msg, claimed, got.token)
    return settle_and_route(rt, msg, tier.name, got.token, held) if held else []


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
        held={c.pk for c in taken},
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

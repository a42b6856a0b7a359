"""Shadow sampling after an item's tier visit, on the worker pool's loop.

A tier's ``shadow_rate`` share of the items it accepted (chosen by a hash of the
job and item, so a visit done again samples the same items) also goes to the next
tier. The answers are appended to the item's result as steps with role ``shadow``;
they are written with the item's other attempt rows but never change its outcome,
cost, calls or latency (``ItemResult`` leaves them out), and the report shows them
as calibration spend. Their cost does count against the job's and the pipeline's
budgets (it is money spent): when a budget cannot pay for a sample's worst case, the
sample is skipped.

A shadow never fails or delays an item beyond its own calls: any error in here is
logged and the tier's result goes on unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from common.logs import get_logger
from models import repo
from workers.pipeline import ClaudeTier
from workers.quality import run_shadows, sampled
from workers.records import SHADOW, ItemResult, WorkItem
from workers.retry import LeaseLost

if TYPE_CHECKING:
    from tasks.runtime import Runtime

log = get_logger("cascade.shadow")


async def add_shadow(
    rt: Runtime,
    job_id: int,
    tier_index: int,
    item: WorkItem,
    result: ItemResult,
    disabled: Mapping[str, str],
) -> None:
    """Run the item's shadow sample if it is one (phase ``tier`` only); append its steps."""
    engine = rt.engine_for(job_id)
    tiers = engine.pipeline.tiers
    if tier_index >= len(tiers) - 1 or tiers[tier_index].shadow_rate <= 0:
        return
    samples = sampled(engine, job_id, tier_index, [result])
    if not samples:
        return
    before = list(result.steps)
    try:
        if not await asyncio.to_thread(_within_budget, rt, job_id, tier_index, item, result):
            return
        await run_shadows(engine, tier_index, [item], samples, disabled)
    except LeaseLost:
        raise
    except Exception:
        # Shadows are measurement: losing one must never cost the item its outcome.
        log.exception("cascade.shadow.failed", job_id=job_id, tier_index=tier_index)
        result.steps = [s for s in result.steps if s.role != SHADOW or s in before]
        return
    log.debug("cascade.shadow.sent", item=item.pk, to_tier=tiers[tier_index + 1].name)


def _within_budget(
    rt: Runtime, job_id: int, tier_index: int, item: WorkItem, result: ItemResult
) -> bool:
    """Whether the job's and pipeline's budgets can still pay for the sample's worst case."""
    engine = rt.engine_for(job_id)
    nxt = engine.pipeline.tiers[tier_index + 1]
    if not isinstance(nxt, ClaudeTier):
        return True  # rules and local tiers are free
    daily = engine.pipeline.daily_budget_usd
    with rt.sessions() as session:
        left = repo.budget_left(
            session, job_id, None if daily is None else int(daily * 1_000_000_000)
        )
    if left is None:
        return True
    # The visit's own calls are not counted as spent yet: leave room for them first.
    left -= result.cost_nanos
    return engine.worst_case_nanos(nxt, [nxt.primary], item.text) <= left

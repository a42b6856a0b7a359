"""Shadow sampling after a tier visit: the hook ``tasks.flow.process`` calls.

A tier's ``shadow_rate`` share of the items it accepted (chosen by a hash of the
job and item, so a redelivered batch samples the same items) also goes to the next
tier. The answers are appended to the items' results as steps with role
``shadow``; they are written with the item's other attempt rows but never change
its outcome, cost, calls or latency (``ItemResult`` leaves them out), and the
report shows them as calibration spend. Their cost does count against the job's
and the pipeline's budgets (it is money spent): when a budget cannot pay for a
sample's worst case, the sample is skipped.

A shadow never fails or delays an item beyond its own calls: any error in here is
logged and the tier's results go on unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from common.logs import get_logger
from models import repo
from workers.pipeline import ClaudeTier
from workers.quality import run_shadows, sampled
from workers.records import ItemResult, WorkItem

if TYPE_CHECKING:
    from tasks.flow import Message
    from tasks.runtime import Runtime

log = get_logger("cascade.shadow")


def add_shadows(
    rt: Runtime,
    msg: Message,
    items: Sequence[WorkItem],
    results: Sequence[ItemResult],
    disabled: Mapping[str, str],
) -> None:
    """Run this visit's shadow samples (phase ``tier`` only) and append their steps."""
    if msg.phase != "tier" or not results:
        return
    engine = rt.engine_for(msg.job_id)
    tiers = engine.pipeline.tiers
    if msg.tier_index >= len(tiers) - 1 or tiers[msg.tier_index].shadow_rate <= 0:
        return
    try:
        samples = _within_budget(
            rt, msg, items, results, sampled(engine, msg.job_id, msg.tier_index, results)
        )
        rt.run(run_shadows(engine, msg.tier_index, items, samples, disabled))
    except Exception:
        # Shadows are measurement: losing one must never cost the item its outcome.
        log.exception("cascade.shadow.failed", job_id=msg.job_id, tier_index=msg.tier_index)
        for r in results:  # drop any half-appended shadow steps
            r.steps = [s for s in r.steps if s.role != "shadow"]
        return
    if samples:
        log.info("cascade.shadow.sent", items=len(samples), to_tier=tiers[msg.tier_index + 1].name)


def _within_budget(
    rt: Runtime,
    msg: Message,
    items: Sequence[WorkItem],
    results: Sequence[ItemResult],
    samples: Sequence[ItemResult],
) -> Sequence[ItemResult]:
    """The samples whose shadow call the job's and pipeline's budgets can still pay for."""
    engine = rt.engine_for(msg.job_id)
    nxt = engine.pipeline.tiers[msg.tier_index + 1]
    if not isinstance(nxt, ClaudeTier) or not samples:
        return samples  # rules and local tiers are free
    daily = engine.pipeline.daily_budget_usd
    with rt.sessions() as session:
        left = repo.budget_left(
            session, msg.job_id, None if daily is None else int(daily * 1_000_000_000)
        )
    if left is None:
        return samples
    # This visit's own calls are not counted as spent yet: leave room for them first.
    left -= sum(r.cost_nanos for r in results)
    texts = {item.pk: item.text for item in items}
    out: list[ItemResult] = []
    for r in samples:
        worst = engine.worst_case_nanos(nxt, [nxt.primary], texts[r.pk])
        if worst <= left:
            out.append(r)
            left -= worst
    return out

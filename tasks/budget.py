"""Admit only the items whose worst-case call the budget can still pay for."""

from __future__ import annotations

from common.lifecycle import Phase
from common.logs import get_logger
from models import repo
from models.ledger import Claimed
from tasks.messages import Message
from tasks.runtime import Runtime
from workers.decision import over_budget
from workers.engine import Engine
from workers.pipeline import ClaudeTier
from workers.records import ItemResult

log = get_logger("cascade.budget")


def budget_gate(
    rt: Runtime,
    engine: Engine,
    msg: Message,
    tier: ClaudeTier,
    claimed: list[Claimed],
    *,
    reserved: int = 0,
    worst: dict[int, int] | None = None,
) -> tuple[list[Claimed], list[ItemResult]]:
    """Split claimed items into those the budget admits and those it holds back.

    The rest keep a lower tier's answer (``budget_capped``) or wait (``paused_budget``).
    ``reserved``: what this process's items already admitted may still cost (it counts
    against the budget until they settle); ``worst`` receives each admitted item's
    worst case. Spend is counted as items settle, so the fleet can overspend by at
    most what *other* processes' admitted items may still cost.
    """
    daily = engine.pipeline.daily_budget_usd
    with rt.sessions() as session:
        left = repo.budget_left(
            session, msg.job_id, None if daily is None else int(daily * 1_000_000_000)
        )
    if left is None:
        return claimed, []
    left -= reserved
    links = tier.chain if msg.phase == Phase.FALLBACK else [tier.primary]
    admitted: list[Claimed] = []
    held: list[ItemResult] = []
    for c in claimed:
        cost = engine.worst_case_nanos(tier, links, c.text)
        if cost <= left:
            admitted.append(c)
            left -= cost
            if worst is not None:
                worst[c.pk] = cost
        else:
            why = f"budget reached before tier {tier.name!r}"
            below = engine.pipeline.tiers[msg.tier_index - 1].name if msg.tier_index else ""
            held.append(ItemResult(c.pk, over_budget(c.label, c.confidence, why, below)))
    if held:
        log.warning("cascade.budget.reached", held=len(held), admitted=len(admitted))
    return admitted, held

"""Ledger reads for threshold tuning and for training the local tier. No printing.

Per item of a job: every tier's valid answer (attempt rows with outcome ``ok``
that ended a tier visit: decision ``accept``, ``escalate`` or ``review``), what each tier
spent on it, its final label and its gold label when ``items.meta`` has
``"gold"``.

Shadow samples (role ``shadow``) are the pairs tuning otherwise lacks: for an
item a lower tier *accepted*, the next tier's answer too. They are read apart
(:attr:`TuningItem.shadows`) and never counted in ``cost_by_tier``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.lifecycle import Outcome, Status, Verdict
from models.reviews import gold_labels
from models.tables import Attempt, Item

GOLD_KEY = "gold"
SHADOW = "shadow"
SHADOW_ANSWERED = (Outcome.OK, Outcome.RULE_MATCH)  # a model's valid answer, or a rule's


@dataclass(frozen=True, slots=True)
class TierVerdict:
    tier_index: int
    tier: str
    label: str
    confidence: float
    decision: str  # accept | escalate | review


@dataclass(frozen=True, slots=True)
class ShadowAnswer:
    """The answer a higher tier gave to an item a lower tier accepted (a shadow sample)."""

    tier_index: int
    label: str
    confidence: float | None
    cost_nanos: int


@dataclass(slots=True)
class TuningItem:
    pk: int
    status: str
    final_label: str | None
    final_tier: str | None
    gold: str | None
    verdicts: list[TierVerdict] = field(default_factory=list)
    cost_by_tier: dict[int, int] = field(default_factory=dict)  # tier_index -> nano-USD
    shadows: dict[int, ShadowAnswer] = field(default_factory=dict)  # by the shadow's tier


def _gold(meta: object) -> str | None:
    if isinstance(meta, dict):
        value = meta.get(GOLD_KEY)
        if isinstance(value, str) and value:
            return value
    return None


def tuning_items(session: Session, job_id: int) -> list[TuningItem]:
    """Every item of the job with its per-tier verdicts and costs, ordered by item id."""
    items = {
        pk: TuningItem(pk, status, label, final_tier, _gold(meta))
        for pk, status, label, final_tier, meta in session.execute(
            select(Item.id, Item.status, Item.label, Item.final_tier, Item.meta)
            .where(Item.job_id == job_id)
            .order_by(Item.id)
        )
    }
    verdicts = session.execute(
        select(
            Attempt.item_id,
            Attempt.tier_index,
            Attempt.tier,
            Attempt.label,
            Attempt.confidence,
            Attempt.decision,
        )
        .where(
            Attempt.job_id == job_id,
            Attempt.outcome == Outcome.OK,
            Attempt.decision.in_((Verdict.ACCEPT, Verdict.ESCALATE, Verdict.REVIEW)),
            Attempt.label.is_not(None),
            Attempt.confidence.is_not(None),
        )
        .order_by(Attempt.item_id, Attempt.step)
    )
    for item_id, tier_index, tier, label, confidence, decision in verdicts:
        found = items.get(item_id)
        if found is not None:
            found.verdicts.append(
                TierVerdict(
                    int(tier_index), tier, str(label), float(confidence or 0.0), str(decision)
                )
            )
    costs = session.execute(
        select(Attempt.item_id, Attempt.tier_index, func.sum(Attempt.cost_nanos))
        .where(Attempt.job_id == job_id, Attempt.role != SHADOW)
        .group_by(Attempt.item_id, Attempt.tier_index)
    )
    for item_id, tier_index, cost in costs:
        found = items.get(item_id)
        if found is not None:
            found.cost_by_tier[int(tier_index)] = int(cost or 0)
    _add_shadows(session, job_id, items)
    for pk, label in gold_labels(session, job_id).items():  # a reviewer's verdict is gold
        if pk in items:
            items[pk].gold = label
    return list(items.values())


def _add_shadows(session: Session, job_id: int, items: dict[int, TuningItem]) -> None:
    """Each item's shadow answers: the last valid one per tier, with what the tier spent."""
    spent: dict[tuple[int, int], int] = {}
    rows = session.execute(
        select(
            Attempt.item_id,
            Attempt.tier_index,
            Attempt.outcome,
            Attempt.label,
            Attempt.confidence,
            Attempt.cost_nanos,
        )
        .where(Attempt.job_id == job_id, Attempt.role == SHADOW)
        .order_by(Attempt.item_id, Attempt.step)
    )
    for item_id, tier_index, outcome, label, confidence, cost in rows:
        found = items.get(item_id)
        if found is None:
            continue
        key = (int(item_id), int(tier_index))
        spent[key] = spent.get(key, 0) + int(cost or 0)  # retries of the call count too
        if outcome in SHADOW_ANSWERED and label is not None:
            found.shadows[int(tier_index)] = ShadowAnswer(
                int(tier_index),
                str(label),
                None if confidence is None else float(confidence),
                spent[key],
            )


def training_examples(
    session: Session, job_id: int, *, source: str, exclude_tiers: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(text, label) pairs: gold labels (``source="gold"``: a reviewer's verdict, else
    ``items.meta.gold``) or accepted outcomes ("outcomes").

    Outcomes settled by a tier in ``exclude_tiers`` (the local tier itself) are left
    out, so the model never learns from its own answers.
    """
    if source not in ("gold", "outcomes"):
        raise ValueError(f"source must be gold or outcomes, got {source!r}")
    reviewed = gold_labels(session, job_id)
    rows = session.execute(
        select(Item.id, Item.text, Item.label, Item.final_tier, Item.meta, Item.status)
        .where(Item.job_id == job_id)
        .order_by(Item.id)
    )
    out = []
    for pk, text, label, final_tier, meta, status in rows:
        if not text:
            continue
        if source == "gold":
            gold = reviewed.get(pk) or _gold(meta)
            if gold is not None:
                out.append((text, gold))
        elif status == Status.DONE and label and final_tier not in exclude_tiers:
            out.append((text, label))
    return out

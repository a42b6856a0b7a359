"""The answers themselves: confidence histogram, agreement with shadow samples."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from common.lifecycle import Outcome, Status
from models.analytics.scope import NOT_TIER_ANSWERS, Scope, as_int, attempt_filter
from models.tables import Attempt, Item


@dataclass(frozen=True, slots=True)
class ConfidenceBucket:
    tier_index: int
    tier: str
    label: str
    bucket: int  # 0..9: [0.0, 0.1), ..., [0.9, 1.0]
    answers: int


@dataclass(frozen=True, slots=True)
class Agreement:
    """On escalated items that finished higher up: did this tier's answer match?"""

    tier_index: int
    tier: str
    pairs: int
    agreed: int

    @property
    def rate(self) -> float:
        return self.agreed / self.pairs if self.pairs else 0.0


def bucket_of(confidence: float) -> int:
    """0.1-wide bucket index, exact for values written with few decimals (0.3 -> 3)."""
    return min(9, max(0, int(Decimal(repr(confidence)) * 10)))


def confidence(session: Session, scope: Scope) -> list[ConfidenceBucket]:
    """Answered steps (outcome ok, with a label and a confidence) per tier, label, bucket."""
    counts: dict[tuple[int, str, str, int], int] = defaultdict(int)
    for ti, tier, label, conf, n in session.execute(
        select(Attempt.tier_index, Attempt.tier, Attempt.label, Attempt.confidence, func.count())
        .where(
            *attempt_filter(scope),
            Attempt.outcome == Outcome.OK,
            Attempt.label.is_not(None),
            Attempt.confidence.is_not(None),
            Attempt.role.not_in(NOT_TIER_ANSWERS),
        )
        .group_by(Attempt.tier_index, Attempt.tier, Attempt.label, Attempt.confidence)
    ):
        counts[(int(ti), str(tier), str(label), bucket_of(float(conf or 0.0)))] += as_int(n)
    return [ConfidenceBucket(*key, answers=n) for key, n in sorted(counts.items())]


def agreement(session: Session, scope: Scope) -> list[Agreement]:
    """Per tier k: items done at a higher tier than k, pairing the label of the item's
    last ok step at k with its final label."""
    last = (
        select(Attempt.item_id, Attempt.tier_index, func.max(Attempt.step).label("step"))
        .where(
            *attempt_filter(scope),
            Attempt.outcome == Outcome.OK,
            Attempt.label.is_not(None),
            Attempt.role.not_in(NOT_TIER_ANSWERS),  # a verdict or a check is not the tier's
        )
        .group_by(Attempt.item_id, Attempt.tier_index)
        .subquery()
    )
    rows = session.execute(
        select(
            Attempt.tier_index,
            Attempt.tier,
            func.count(),
            func.sum(case((Attempt.label == Item.label, 1), else_=0)),
        )
        .join(last, and_(last.c.item_id == Attempt.item_id, last.c.step == Attempt.step))
        .join(Item, Item.id == Attempt.item_id)
        .where(Item.status == Status.DONE, Attempt.tier_index < Item.tier_index)
        .group_by(Attempt.tier_index, Attempt.tier)
        .order_by(Attempt.tier_index)
    )
    return [Agreement(int(r[0]), str(r[1]), as_int(r[2]), as_int(r[3])) for r in rows]

"""What the items cost: by tier, label and model, per item, and calibration spend."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from models.analytics.scope import SHADOW, Scope, as_int, attempt_filter, item_filter
from models.tables import Attempt, Item


@dataclass(frozen=True, slots=True)
class LabelCost:
    label: str | None  # None: items without a final label (failed or unfinished)
    items: int
    cost_nanos: int
    baseline_nanos: int


@dataclass(frozen=True, slots=True)
class ModelTokens:
    """Tokens of one model's calls; cache savings are priced in the cascade layer."""

    model: str
    calls: int
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


@dataclass(frozen=True, slots=True)
class Cost:
    items: int
    cost_nanos: int
    baseline_nanos: int
    item_mean_nanos: int  # integer mean, rounded down
    item_p95_nanos: int | None
    realtime_nanos: int
    batch_nanos: int
    by_label: list[LabelCost]
    by_model: list[ModelTokens]


def cost(session: Session, scope: Scope) -> Cost:
    where = item_filter(scope)
    by_label = [
        LabelCost(
            label=r[0], items=as_int(r[1]), cost_nanos=as_int(r[2]), baseline_nanos=as_int(r[3])
        )
        for r in session.execute(
            select(
                Item.label, func.count(), func.sum(Item.cost_nanos), func.sum(Item.baseline_nanos)
            )
            .where(*where)
            .group_by(Item.label)
            .order_by(func.sum(Item.cost_nanos).desc(), Item.label)
        )
    ]
    n = sum(x.items for x in by_label)
    total = sum(x.cost_nanos for x in by_label)
    batch = {
        bool(b): as_int(c)
        for b, c in session.execute(
            select(Attempt.is_batch, func.sum(Attempt.cost_nanos))
            .where(*attempt_filter(scope), Attempt.role != SHADOW)
            .group_by(Attempt.is_batch)
        )
    }
    return Cost(
        items=n,
        cost_nanos=total,
        baseline_nanos=sum(x.baseline_nanos for x in by_label),
        item_mean_nanos=total // n if n else 0,
        item_p95_nanos=_item_p95(session, where, n),
        realtime_nanos=batch.get(False, 0),
        batch_nanos=batch.get(True, 0),
        by_label=by_label,
        by_model=_by_model(session, scope),
    )


def _item_p95(session: Session, where: list[ColumnElement[bool]], n: int) -> int | None:
    """The 95th percentile (nearest rank) of the ``n`` items' cost."""
    if not n:
        return None
    rank = (95 * n + 99) // 100
    return as_int(
        session.execute(
            select(Item.cost_nanos)
            .where(*where)
            .order_by(Item.cost_nanos)
            .offset(rank - 1)
            .limit(1)
        ).scalar_one()
    )


def _by_model(session: Session, scope: Scope) -> list[ModelTokens]:
    # the columns in the order of ModelTokens' fields
    return [
        ModelTokens(str(model), *(as_int(n) for n in sums))
        for model, *sums in session.execute(
            select(
                Attempt.model,
                func.count(),
                func.sum(Attempt.input_tokens),
                func.sum(Attempt.cache_read_tokens),
                func.sum(Attempt.cache_write_tokens),
            )
            .where(*attempt_filter(scope), Attempt.role != "rules")
            .group_by(Attempt.model)
            .order_by(Attempt.model)
        )
    ]


@dataclass(frozen=True, slots=True)
class Calibration:
    """Shadow samples: items a tier accepted, also sent to the next tier to measure it."""

    samples: int  # shadow calls (or rule/local evaluations)
    items: int
    cost_nanos: int
    agreed: int  # samples whose answer had the item's final label
    answered: int  # samples with a valid answer


def calibration_spend(session: Session, scope: Scope) -> Calibration:
    """What shadow samples cost over a scope (never part of any item's cost)."""
    row = session.execute(
        select(
            func.count(),
            func.count(func.distinct(Attempt.item_id)),
            func.sum(Attempt.cost_nanos),
            func.sum(
                case((and_(Attempt.label.is_not(None), Attempt.label == Item.label), 1), else_=0)
            ),
            func.sum(case((Attempt.label.is_not(None), 1), else_=0)),
        )
        .join(Item, Item.id == Attempt.item_id)
        .where(*attempt_filter(scope), Attempt.role == SHADOW)
    ).one()
    return Calibration(
        as_int(row[0]), as_int(row[1]), as_int(row[2]), as_int(row[3]), as_int(row[4])
    )

"""The human review queue: items in ``review`` and the verdicts people import.

An item goes to ``review`` when the machine is done with it but a person should
decide (the last tier was unsure, a refusal policy said so, tiers disagreed).
A verdict becomes the item's final label (``final_tier = 'review'``) and is gold
for tuning and training. One verdict per item: importing again replaces it but
keeps what the machine had said before the first one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from common.lifecycle import Status
from models.db import as_utc
from models.repo import _insert, utcnow
from models.tables import Attempt, Item
from models.tables_review import ReviewVerdict

REVIEW = Status.REVIEW  # the item status, and the final_tier of an item a person decided


@dataclass(frozen=True, slots=True)
class Waiting:
    """An item in the queue, with what the machine said and why it is there."""

    pk: int
    item_id: str
    text: str | None
    label: str | None
    confidence: float | None
    tier: str | None
    why: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    item_id: str  # items.item_key
    label: str
    reviewer: str
    reviewed_at: datetime
    note: str | None = None


def waiting(session: Session, job_id: int, *, limit: int | None = None) -> Iterator[Waiting]:
    """Items of the job in ``review``, by item id."""
    stmt = (
        select(
            Item.id,
            Item.item_key,
            Item.text,
            Item.label,
            Item.confidence,
            Item.final_tier,
            Item.reason,
            Item.error,
        )
        .where(Item.job_id == job_id, Item.status == REVIEW)
        .order_by(Item.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    for pk, key, text, label, conf, tier, reason, error in session.execute(stmt):
        yield Waiting(int(pk), key, text, label, conf, tier, reason or error)


@dataclass(frozen=True, slots=True)
class Imported:
    added: int
    replaced: int
    unknown: list[str]  # item ids the job does not have


def import_verdicts(session: Session, job_id: int, verdicts: Sequence[Verdict]) -> Imported:
    """Store each verdict and make it the item's final label (an item in review is done)."""
    keys = {v.item_id for v in verdicts}
    found = {
        key: (int(pk), label, tier)
        for key, pk, label, tier in session.execute(
            select(Item.item_key, Item.id, Item.label, Item.final_tier).where(
                Item.job_id == job_id, Item.item_key.in_(keys)
            )
        )
    }
    before = set(
        session.scalars(
            select(ReviewVerdict.item_id).where(
                ReviewVerdict.item_id.in_([pk for pk, _, _ in found.values()])
            )
        )
    )
    now = utcnow()
    added = replaced = 0
    for v in verdicts:
        if v.item_id not in found:
            continue
        pk, label, tier = found[v.item_id]
        replaced += pk in before
        added += pk not in before
        _upsert(session, job_id, pk, v, label if pk not in before else None, tier)
        before.add(pk)
        session.execute(
            update(Item)
            .where(Item.id == pk)
            .values(label=v.label, final_tier=REVIEW, updated_at=now, reason=_reason(v))
        )
        session.execute(
            update(Item)
            .where(Item.id == pk, Item.status == REVIEW)
            .values(status=Status.DONE, finished_at=now, error=None)
        )
    return Imported(added, replaced, sorted(keys - set(found)))


def _reason(v: Verdict) -> str:
    return f"reviewed by {v.reviewer}" + (f": {v.note}" if v.note else "")


def _upsert(
    session: Session, job_id: int, pk: int, v: Verdict, machine: str | None, tier: str | None
) -> None:
    row = {
        "job_id": job_id,
        "item_id": pk,
        "label": v.label,
        "reviewer": v.reviewer,
        "reviewed_at": as_utc(v.reviewed_at),
        "note": v.note,
        "machine_label": machine,
        "machine_tier": tier,
    }
    stmt = _insert(session, ReviewVerdict.__table__).values(row)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["item_id"],
            set_={k: row[k] for k in ("label", "reviewer", "reviewed_at", "note")},
        )
    )


def gold_labels(session: Session, job_id: int) -> dict[int, str]:
    """item pk -> the reviewer's label, for every reviewed item of the job."""
    rows = session.execute(
        select(ReviewVerdict.item_id, ReviewVerdict.label).where(ReviewVerdict.job_id == job_id)
    )
    return {int(pk): str(label) for pk, label in rows}


@dataclass(frozen=True, slots=True)
class TierAgreement:
    tier_index: int
    tier: str
    judged: int  # reviewed items this tier answered
    agreed: int  # of which its answer was the reviewer's


def tier_accuracy(session: Session, job_id: int) -> list[TierAgreement]:
    """Per tier, how often its answer (the last that ended its visit) matched the reviewer."""
    gold = gold_labels(session, job_id)
    if not gold:
        return []
    answers: dict[tuple[int, int], tuple[str, str]] = {}
    for pk, index, tier, label in session.execute(
        select(Attempt.item_id, Attempt.tier_index, Attempt.tier, Attempt.label)
        .where(
            Attempt.job_id == job_id,
            Attempt.item_id.in_(list(gold)),
            Attempt.decision.is_not(None),
            Attempt.label.is_not(None),
            Attempt.role.not_in(("shadow", "consistency", "verifier")),
        )
        .order_by(Attempt.item_id, Attempt.step)
    ):
        answers[(int(pk), int(index))] = (str(tier), str(label))
    counts: dict[tuple[int, str], list[int]] = {}
    for (pk, index), (tier, label) in answers.items():
        acc = counts.setdefault((index, tier), [0, 0])
        acc[0] += 1
        acc[1] += label == gold[pk]
    return [TierAgreement(i, t, n, a) for (i, t), (n, a) in sorted(counts.items())]


def counts(session: Session, job_id: int) -> tuple[int, int]:
    """(items waiting for review, items a person has decided)."""
    waiting_n = session.scalar(
        select(func.count()).where(Item.job_id == job_id, Item.status == REVIEW)
    )
    reviewed = session.scalar(
        select(func.count()).select_from(ReviewVerdict).where(ReviewVerdict.job_id == job_id)
    )
    return int(waiting_n or 0), int(reviewed or 0)

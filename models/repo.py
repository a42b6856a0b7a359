"""Every write the service makes, in bulk and idempotent.

Postgres (or SQLite in the embedded runtime) is the source of truth; the broker
only rings the doorbell. A tier task *claims* its items here (only items still
at that tier and not leased by a live worker), so a redelivered message does no
double work; results are written under the claim's lease token, attempt rows
are keyed by (item, step) and inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.lifecycle import Status
from models.core import (
    ATTEMPTS,
    DAILY,
    ITEMS,
    JOBS,
    SUBMISSIONS,
    dialect_insert,
    new_token,
    utcnow,
)
from models.jobs import (
    JobConflictError,
    add_spend,
    budget_left,
    finish_job_if_done,
    job_by_ref,
    job_submitted,
    list_jobs,
    open_job,
    pause_job,
    resume_job,
    set_budget,
    unfinished_count,
)
from models.submissions import (
    Opened,
    begin_with,
    close_statement,
    close_submission,
    driver_connection,
    finish_submission,
    open_submission,
    start_submission,
)
from models.tables import RejectedLine

_insert = dialect_insert  # the name other ledger modules import

# The ledger's one import for callers: the items here, jobs and submissions re-exported.
__all__ = [
    "ATTEMPTS",
    "DAILY",
    "ITEMS",
    "JOBS",
    "SUBMISSIONS",
    "AddResult",
    "JobConflictError",
    "NewItem",
    "Opened",
    "_insert",
    "add_items",
    "add_rejected",
    "add_spend",
    "begin_with",
    "budget_left",
    "classify_not_inserted",
    "close_statement",
    "close_submission",
    "driver_connection",
    "finish_job_if_done",
    "finish_submission",
    "job_by_ref",
    "job_submitted",
    "list_jobs",
    "new_token",
    "open_job",
    "open_submission",
    "pause_job",
    "pending_ids",
    "resume_job",
    "set_budget",
    "split_duplicates",
    "start_submission",
    "unfinished_count",
    "utcnow",
]


@dataclass(slots=True)  # not frozen: one per submitted line
class NewItem:
    line_no: int
    key: str
    text: str
    meta: dict[str, Any]
    text_hash: int | None = None  # models.reuse.text_hash: repeats of a text share it


@dataclass(slots=True)
class AddResult:
    added: list[int]  # row ids, in input order
    duplicates: list[tuple[int, str, int]]  # (line_no, key, line_no of the first occurrence)
    existing: int  # already in the job from an earlier submission


def split_duplicates(
    batch: Sequence[NewItem],
) -> tuple[list[NewItem], list[tuple[int, str, int]]]:
    """(the batch without repeats, the repeats): the first occurrence of an id wins."""
    first_line: dict[str, int] = {}
    unique: list[NewItem] = []
    duplicates: list[tuple[int, str, int]] = []
    for it in batch:
        if it.key in first_line:
            duplicates.append((it.line_no, it.key, first_line[it.key]))
        else:
            first_line[it.key] = it.line_no
            unique.append(it)
    return unique, duplicates


def add_items(
    session: Session, job_id: int, submission_id: int, batch: Sequence[NewItem]
) -> AddResult:
    """Insert a batch; items whose id the job already has are not inserted again."""
    unique, duplicates = split_duplicates(batch)
    result = AddResult([], duplicates, 0)
    if not unique:
        return result
    rows = [
        {
            "job_id": job_id,
            "submission_id": submission_id,
            "item_key": it.key,
            "line_no": it.line_no,
            "text": it.text,
            "meta": it.meta,
            "text_hash": it.text_hash,
        }
        for it in unique
    ]
    stmt = (
        dialect_insert(session, ITEMS)
        .on_conflict_do_nothing(index_elements=["job_id", "item_key"])
        .returning(ITEMS.c.id, ITEMS.c.item_key, sort_by_parameter_order=True)
    )
    inserted = session.execute(stmt, rows).all()
    result.added = [r.id for r in inserted]
    got = {r.item_key for r in inserted}
    missing = [it for it in unique if it.key not in got]
    classify_not_inserted(session, job_id, submission_id, missing, result)
    return result


def classify_not_inserted(
    session: Session,
    job_id: int,
    submission_id: int,
    missing: Sequence[NewItem],
    result: AddResult,
) -> None:
    """Items the insert skipped: a duplicate inside this submission, or already in the job."""
    if not missing:
        return
    found = {
        r.item_key: (r.submission_id, r.line_no)
        for r in session.execute(
            select(ITEMS.c.item_key, ITEMS.c.submission_id, ITEMS.c.line_no).where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.item_key.in_({it.key for it in missing}),
            )
        )
    }
    for it in missing:
        sub_id, first = found[it.key]
        if sub_id == submission_id and first != it.line_no:
            result.duplicates.append((it.line_no, it.key, first))
        else:
            result.existing += 1


def add_rejected(
    session: Session,
    job_id: int,
    submission_id: int,
    source: str,
    rows: Sequence[tuple[int, str, str]],
) -> None:
    """Record bad input lines (line_no, reason, raw); a re-submit records them once."""
    if not rows:
        return
    stmt = dialect_insert(session, RejectedLine.__table__).on_conflict_do_nothing(
        index_elements=["job_id", "source", "line_no"]
    )
    session.execute(
        stmt,
        [
            {
                "job_id": job_id,
                "submission_id": submission_id,
                "source": source[:500],
                "line_no": n,
                "reason": reason,
                "raw": raw,
            }
            for n, reason, raw in rows
        ],
    )


def pending_ids(
    session: Session, job_id: int, tier_index: int, after: int, limit: int
) -> list[int]:
    return list(
        session.scalars(
            select(ITEMS.c.id)
            .where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.tier_index == tier_index,
                ITEMS.c.status == Status.PENDING,
                ITEMS.c.id > after,
            )
            .order_by(ITEMS.c.id)
            .limit(limit)
        )
    )

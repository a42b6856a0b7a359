"""Read queries behind the CLI's reports: pure SQLAlchemy, typed, no printing.

Money leaves this module as integer nano-USD or as ``Decimal`` USD quantized to
9 places, always computed from integer sums, never from a float (on SQLite the
views' ``cost_usd`` is a REAL, so :func:`tier_rows` re-sums ``cost_nanos``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Integer, String, and_, case, column, func, select, table
from sqlalchemy.orm import Session

from common.lifecycle import FINAL_STATUSES, Outcome, Status
from models.tables import Attempt, Item, RejectedLine

NANO = Decimal("0.000000001")

# Every item status, in lifecycle order; counts are reported for each, zero or not.
STATUSES: tuple[Status, ...] = (
    Status.PENDING,
    Status.RUNNING,
    Status.FALLBACK,
    Status.DONE,
    Status.FAILED,
)
FINISHED = FINAL_STATUSES  # done, failed, budget_capped, review
# Outcomes of steps that made no request (workers.providers.base.NOT_SENT).
NOT_SENT: tuple[Outcome, ...] = (Outcome.BREAKER_OPEN, Outcome.DRILL)
# progress() also counts these per tier, under the key f"{status}:{tier_index}".
IN_FLIGHT: tuple[Status, ...] = (Status.PENDING, Status.RUNNING)

# The report_tiers view (created by migrations; defined in models.views).
_report_tiers = table(
    "report_tiers",
    column("job_id", BigInteger),
    column("tier_index", Integer),
    column("tier", String),
    column("entered", BigInteger),
    column("accepted", BigInteger),
    column("escalated", BigInteger),
    column(Status.FAILED, BigInteger),  # the tier's visits that ended in Verdict.FAIL
    column("calls", BigInteger),
    column("input_tokens", BigInteger),
    column("output_tokens", BigInteger),
    column("p50_ms", Integer),
    column("p95_ms", Integer),
    column("fallbacks", BigInteger),
)


def nanos_to_usd(nanos: int) -> Decimal:
    """Exact conversion of integer nano-USD to USD with 9 decimal places."""
    return Decimal(nanos).scaleb(-9).quantize(NANO)


@dataclass(frozen=True, slots=True)
class TierRow:
    """One row of ``report_tiers``: one tier visited by a job."""

    job_id: int
    tier_index: int
    tier: str
    entered: int
    accepted: int
    escalated: int
    failed: int
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    p50_ms: int | None  # None for a tier with no model calls (rules)
    p95_ms: int | None
    fallbacks: int
    not_sent: int = 0  # steps that made no request (breaker open, drill): not in calls


@dataclass(frozen=True, slots=True)
class JobTotals:
    job_id: int
    items_total: int
    by_status: Mapping[str, int]  # every status in STATUSES, plus any other seen
    items_done: int
    items_failed: int
    lines_rejected: int
    cost_nanos: int
    baseline_nanos: int
    model_calls: int
    input_tokens: int
    output_tokens: int
    # Over finished items only (done, failed, budget_capped): what savings compare, so a
    # job still running never claims savings on items it has not paid for yet.
    finished_cost_nanos: int = 0
    finished_baseline_nanos: int = 0
    # Steps that sent no request (breaker open, chaos drill): not in model_calls.
    steps_not_sent: int = 0

    @property
    def cost_usd(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    @property
    def baseline_usd(self) -> Decimal:
        return nanos_to_usd(self.baseline_nanos)


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """The outcome of one item, as exported."""

    pk: int  # items.id
    item_id: str  # items.item_key
    label: str | None
    tier: str | None
    confidence: float | None
    cost_nanos: int
    latency_ms: int
    status: str
    metadata: dict[str, Any]
    error: str | None


@dataclass(frozen=True, slots=True)
class RejectedRow:
    source: str
    line_no: int
    reason: str
    raw: str


def _int(value: Any) -> int:
    # SUM() is NULL over no rows, and a Decimal on Postgres for BIGINT columns.
    return 0 if value is None else int(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def tier_rows(session: Session, job_id: int) -> list[TierRow]:
    """The ``report_tiers`` rows of a job, ordered by tier index."""
    v = _report_tiers
    cost = (
        select(
            Attempt.tier_index,
            Attempt.tier,
            func.sum(Attempt.cost_nanos).label("cost_nanos"),
            func.sum(
                case((and_(Attempt.role != "rules", Attempt.outcome.in_(NOT_SENT)), 1), else_=0)
            ).label("not_sent"),
        )
        .where(Attempt.job_id == job_id, Attempt.role != "shadow")  # as report_tiers
        .group_by(Attempt.tier_index, Attempt.tier)
        .subquery()
    )
    stmt = (
        select(
            v.c.job_id,
            v.c.tier_index,
            v.c.tier,
            v.c.entered,
            v.c.accepted,
            v.c.escalated,
            v.c.failed,
            v.c.calls,
            v.c.input_tokens,
            v.c.output_tokens,
            cost.c.cost_nanos,
            cost.c.not_sent,
            v.c.p50_ms,
            v.c.p95_ms,
            v.c.fallbacks,
        )
        .join_from(v, cost, and_(v.c.tier_index == cost.c.tier_index, v.c.tier == cost.c.tier))
        .where(v.c.job_id == job_id)
        .order_by(v.c.tier_index, v.c.tier)
    )
    return [
        TierRow(
            job_id=int(r.job_id),
            tier_index=int(r.tier_index),
            tier=str(r.tier),
            entered=_int(r.entered),
            accepted=_int(r.accepted),
            escalated=_int(r.escalated),
            failed=_int(r.failed),
            calls=_int(r.calls),  # requests sent (the view leaves out not_sent)
            input_tokens=_int(r.input_tokens),
            output_tokens=_int(r.output_tokens),
            cost_usd=nanos_to_usd(_int(r.cost_nanos)),
            p50_ms=_opt_int(r.p50_ms),
            p95_ms=_opt_int(r.p95_ms),
            fallbacks=_int(r.fallbacks),
            not_sent=_int(r.not_sent),
        )
        for r in session.execute(stmt)
    ]


def iter_outcomes(session: Session, job_id: int, batch: int = 1000) -> Iterator[OutcomeRow]:
    """Every item of a job, ordered by id, fetched ``batch`` rows at a time.

    Keyset pagination (``id > last seen id``), so memory stays bounded by one batch
    and each page is an index range scan, however deep into the job.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    last_id: int | None = None
    while True:
        stmt = select(
            Item.id,
            Item.item_key,
            Item.label,
            Item.final_tier,
            Item.confidence,
            Item.cost_nanos,
            Item.latency_ms,
            Item.status,
            Item.meta,
            Item.error,
        ).where(Item.job_id == job_id)
        if last_id is not None:
            stmt = stmt.where(Item.id > last_id)
        rows = session.execute(stmt.order_by(Item.id).limit(batch)).all()
        for r in rows:
            yield OutcomeRow(
                pk=r.id,
                item_id=r.item_key,
                label=r.label,
                tier=r.final_tier,
                confidence=r.confidence,
                cost_nanos=r.cost_nanos,
                latency_ms=r.latency_ms,
                status=r.status,
                metadata=r.meta,
                error=r.error,
            )
        if len(rows) < batch:
            return
        last_id = rows[-1].id


def progress(session: Session, job_id: int) -> dict[str, int]:
    """Item counts of a job from one GROUP BY over (status, tier_index).

    Keys: every status in ``STATUSES`` (0 when none), ``"total"``, and for the
    statuses in ``IN_FLIGHT`` one key per tier holding such items,
    ``f"{status}:{tier_index}"`` (e.g. ``"pending:1"``).
    """
    out: dict[str, int] = dict.fromkeys(STATUSES, 0)
    out["total"] = 0
    rows = session.execute(
        select(Item.status, Item.tier_index, func.count())
        .where(Item.job_id == job_id)
        .group_by(Item.status, Item.tier_index)
    )
    for status, tier_index, n in rows:
        count = _int(n)
        out[status] = out.get(status, 0) + count
        out["total"] += count
        if status in IN_FLIGHT:
            out[f"{status}:{tier_index}"] = count
    return out


def rejected(session: Session, job_id: int, limit: int = 50) -> list[RejectedRow]:
    """The first ``limit`` rejected input lines of a job, in the order they were recorded."""
    stmt = (
        select(RejectedLine.source, RejectedLine.line_no, RejectedLine.reason, RejectedLine.raw)
        .where(RejectedLine.job_id == job_id)
        .order_by(RejectedLine.id)
        .limit(limit)
    )
    return [
        RejectedRow(source=r.source, line_no=r.line_no, reason=r.reason, raw=r.raw)
        for r in session.execute(stmt)
    ]


# Cascade's fake Messages API (cascade.fakeapi) names its requests so.
FAKE_REQUEST_PREFIX = "req_fake_"


def served_by_fake(session: Session, job_ids: tuple[int, ...]) -> bool:
    """True when some call of these jobs (every job: ``()``) went to the offline fake."""
    stmt = select(Attempt.id).where(Attempt.request_id.like(f"{FAKE_REQUEST_PREFIX}%"))
    if job_ids:
        stmt = stmt.where(Attempt.job_id.in_(job_ids))
    return session.execute(stmt.limit(1)).first() is not None

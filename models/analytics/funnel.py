"""The report's totals and funnel: items per status, per tier in and out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from common.lifecycle import Role, Status, Verdict
from models.analytics.scope import (
    SHADOW,
    Scope,
    as_int,
    attempt_filter,
    item_filter,
    job_filter,
    nearest_rank,
)
from models.core import count_rows
from models.reports import FINISHED, NOT_SENT, STATUSES, JobTotals, TierRow, nanos_to_usd
from models.reuse import ROLE as REUSE
from models.tables import Attempt, Item, RejectedLine


def totals(session: Session, scope: Scope) -> JobTotals:
    """The report's headline numbers over a scope (``reports.job_totals`` for one job)."""
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
    items_total = cost = baseline = done_cost = done_baseline = 0
    rows = session.execute(
        select(
            Item.status,
            func.count(),
            func.sum(Item.cost_nanos),
            func.sum(Item.baseline_nanos),
        )
        .where(*item_filter(scope))
        .group_by(Item.status)
    )
    for status, n, c, b in rows:
        by_status[status] = as_int(n)
        items_total += as_int(n)
        cost += as_int(c)
        baseline += as_int(b)
        if status in FINISHED:
            done_cost += as_int(c)
            done_baseline += as_int(b)
    # model steps: not rules, not shadow samples, not a repeat taking another's decision
    is_call = Attempt.role.not_in(("rules", SHADOW, REUSE))
    tokens = session.execute(
        select(
            func.sum(Attempt.input_tokens),
            func.sum(Attempt.output_tokens),
            func.sum(case((and_(is_call, Attempt.outcome.not_in(NOT_SENT)), 1), else_=0)),
            func.sum(case((and_(is_call, Attempt.outcome.in_(NOT_SENT)), 1), else_=0)),
        ).where(*attempt_filter(scope))
    ).one()
    rejected = count_rows(session, RejectedLine, *job_filter(scope, RejectedLine.job_id))
    return JobTotals(
        job_id=scope.job_ids[0] if len(scope.job_ids) == 1 else 0,
        items_total=items_total,
        by_status=by_status,
        items_done=by_status[Status.DONE],
        items_failed=by_status[Status.FAILED],
        lines_rejected=rejected,
        cost_nanos=cost,
        baseline_nanos=baseline,
        model_calls=as_int(tokens[2]),
        input_tokens=as_int(tokens[0]),
        output_tokens=as_int(tokens[1]),
        finished_cost_nanos=done_cost,
        finished_baseline_nanos=done_baseline,
        steps_not_sent=as_int(tokens[3]),
    )


def job_totals(session: Session, job_id: int) -> JobTotals:
    """Totals of one job: the report's totals over a scope of that job alone."""
    return totals(session, Scope(job_ids=(job_id,)))


@dataclass(frozen=True, slots=True)
class FunnelTier:
    """Items through one tier. ``entered`` counts distinct items with a step here."""

    tier_index: int
    tier: str
    entered: int
    accepted: int
    escalated: int
    failed: int  # steps with decision 'fail' at this tier
    dead_lettered: int  # items with status 'failed' whose last tier is this one
    calls: int
    fallbacks: int
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    latency: Mapping[int, int]  # model-call latency histogram {ms: count}
    not_sent: int = 0  # steps that made no request (breaker open, drill): not in calls

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.entered if self.entered else 0.0

    def percentile(self, p: int) -> int | None:
        return nearest_rank(self.latency, p)

    @property
    def max_ms(self) -> int | None:
        return max(self.latency) if self.latency else None


def funnel(session: Session, scope: Scope) -> list[FunnelTier]:
    """Per tier, in tier order: the funnel, calls, tokens, cost and latencies."""
    model_step = Attempt.role.not_in(("rules", REUSE))
    sent = and_(model_step, Attempt.outcome.not_in(NOT_SENT))
    is_call = case((sent, 1), else_=0)
    not_sent = case((and_(model_step, Attempt.outcome.in_(NOT_SENT)), 1), else_=0)
    where = [*attempt_filter(scope), Attempt.role != SHADOW]  # as report_tiers
    rows = session.execute(
        select(
            Attempt.tier_index,
            Attempt.tier,
            func.count(func.distinct(Attempt.item_id)),
            func.sum(case((Attempt.decision == Verdict.ACCEPT, 1), else_=0)),
            func.sum(case((Attempt.decision == Verdict.ESCALATE, 1), else_=0)),
            func.sum(case((Attempt.decision == Verdict.FAIL, 1), else_=0)),
            func.sum(is_call),
            func.sum(case((Attempt.role == Role.FALLBACK, 1), else_=0)),
            func.sum(Attempt.input_tokens),
            func.sum(Attempt.output_tokens),
            func.sum(Attempt.cost_nanos),
            func.sum(not_sent),
        )
        .where(*where)
        .group_by(Attempt.tier_index, Attempt.tier)
        .order_by(Attempt.tier_index, Attempt.tier)
    ).all()
    latency: dict[tuple[int, str], dict[int, int]] = defaultdict(dict)
    for ti, tier, ms, n in session.execute(
        select(Attempt.tier_index, Attempt.tier, Attempt.latency_ms, func.count())
        .where(*where, sent)
        .group_by(Attempt.tier_index, Attempt.tier, Attempt.latency_ms)
    ):
        latency[(int(ti), str(tier))][int(ms)] = as_int(n)
    dead: dict[int, int] = {
        int(ti): as_int(n)
        for ti, n in session.execute(
            select(Item.tier_index, func.count())
            .where(*item_filter(scope), Item.status == Status.FAILED)
            .group_by(Item.tier_index)
        )
    }
    return [
        FunnelTier(
            tier_index=int(r[0]),
            tier=str(r[1]),
            entered=as_int(r[2]),
            accepted=as_int(r[3]),
            escalated=as_int(r[4]),
            failed=as_int(r[5]),
            dead_lettered=dead.get(int(r[0]), 0),
            calls=as_int(r[6]),
            fallbacks=as_int(r[7]),
            input_tokens=as_int(r[8]),
            output_tokens=as_int(r[9]),
            cost_nanos=as_int(r[10]),
            latency=latency.get((int(r[0]), str(r[1])), {}),
            not_sent=as_int(r[11]),
        )
        for r in rows
    ]


# what a funnel tier and a ``report_tiers`` row both hold, under the same name
_AS_IN_TIER_ROW = (
    "tier_index", "tier", "entered", "accepted", "escalated", str(Status.FAILED), "calls",
    "input_tokens", "output_tokens", "fallbacks", "not_sent",
)  # fmt: skip


def tier_rows(tiers: Iterable[FunnelTier], job_id: int = 0) -> list[TierRow]:
    """The funnel in the shape of ``report_tiers`` rows (for the legacy report keys)."""

    return [
        TierRow(
            job_id=job_id,
            cost_usd=nanos_to_usd(t.cost_nanos),
            p50_ms=t.percentile(50),
            p95_ms=t.percentile(95),
            **{name: getattr(t, name) for name in _AS_IN_TIER_ROW},
        )
        for t in tiers
    ]

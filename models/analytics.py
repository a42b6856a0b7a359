"""Every query behind ``cascade report``'s sections: funnel, cost, latency,
reliability, confidence, per day. Pure SQLAlchemy, typed, no printing.

A :class:`Scope` selects a set of items (by job, pipeline, final label, and the
UTC day the item was created); every section is computed over those items and
their attempts, except :func:`daily`, which buckets *attempts* by the UTC day they
were made (exactly the ``report_daily`` view, same SQL body; see models.rollup).

Percentiles are nearest rank, like the views: the p-th percentile of N values
sorted ascending is the value at rank ceil(p * N / 100). Latencies are fetched
as a histogram (value, count) — a few thousand rows whatever the job size — and
ranked here, exactly, on both databases.

Money stays integer nano-USD.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select, text
from sqlalchemy.orm import Session

from models.db import as_utc
from models.reports import FINISHED, NOT_SENT, STATUSES, JobTotals, TierRow
from models.reuse import ROLE as REUSE
from models.tables import Attempt, Item, Job, RejectedLine
from models.tables_resilience import BreakerEvent, Drill
from models.views import REPORT_DAILY_BODY, REPORT_DAILY_LIVE

MODEL_OUTCOMES: tuple[str, ...] = (
    "ok",
    "refusal",
    "malformed",
    "transient",
    "permanent",
    "context",
    "spend_limit",
)
PERCENTILES: tuple[int, ...] = (50, 95, 99)
SHADOW = "shadow"  # a sample sent to the next tier: calibration spend, not the item's
# Steps whose label is not the tier's own answer (checks, and shadows seen from below).
NOT_TIER_ANSWERS: tuple[str, ...] = ("shadow", "consistency", "verifier")


@dataclass(frozen=True, slots=True)
class Scope:
    """Which items a report covers; every field narrows it (empty = no filter)."""

    job_ids: tuple[int, ...] = ()
    pipeline: str | None = None
    since: date | None = None  # UTC day, inclusive
    until: date | None = None  # UTC day, inclusive
    label: str | None = None  # the item's final label

    @property
    def item_level(self) -> bool:
        """True when the scope filters items, not only whole jobs."""
        return self.label is not None or self.since is not None or self.until is not None


def _bounds(scope: Scope) -> tuple[datetime | None, datetime | None]:
    lo = datetime.combine(scope.since, time(), UTC) if scope.since else None
    hi = datetime.combine(scope.until + timedelta(days=1), time(), UTC) if scope.until else None
    return lo, hi


def _job_filter(scope: Scope, job_col: Any) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if scope.job_ids:
        conds.append(job_col.in_(scope.job_ids))
    if scope.pipeline is not None:
        conds.append(job_col.in_(select(Job.id).where(Job.pipeline_name == scope.pipeline)))
    return conds


def _item_filter(scope: Scope) -> list[ColumnElement[bool]]:
    conds = _job_filter(scope, Item.job_id)
    if scope.label is not None:
        conds.append(Item.label == scope.label)
    lo, hi = _bounds(scope)
    if lo is not None:
        conds.append(Item.created_at >= lo)
    if hi is not None:
        conds.append(Item.created_at < hi)
    return conds


def _attempt_filter(scope: Scope) -> list[ColumnElement[bool]]:
    conds = _job_filter(scope, Attempt.job_id)
    if scope.item_level:
        conds.append(Attempt.item_id.in_(select(Item.id).where(*_item_filter(scope))))
    return conds


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


def nearest_rank(hist: Mapping[int, int], p: int) -> int | None:
    """The p-th percentile (nearest rank) of values given as {value: count}."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = (p * n + 99) // 100
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist)  # unreachable: rank <= n


def for_reports(session: Session) -> None:
    """Postgres settings for the rest of this transaction, for report queries.

    JIT off: the planner prices the daily report's per-step lookups (and a job's
    few hundred thousand attempt rows) high enough to JIT-compile, which costs up
    to ~1 s per query for queries that run in a fraction of that. More work_mem:
    the merged latency histogram of a month is sorted in memory, not on disk.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT set_config('jit', 'off', true)"))
        session.execute(text("SELECT set_config('work_mem', '64MB', true)"))


# ---------------------------------------------------------------- totals, funnel


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
        .where(*_item_filter(scope))
        .group_by(Item.status)
    )
    for status, n, c, b in rows:
        by_status[status] = _int(n)
        items_total += _int(n)
        cost += _int(c)
        baseline += _int(b)
        if status in FINISHED:
            done_cost += _int(c)
            done_baseline += _int(b)
    # model steps: not rules, not shadow samples, not a repeat taking another's decision
    is_call = Attempt.role.not_in(("rules", SHADOW, REUSE))
    tokens = session.execute(
        select(
            func.sum(Attempt.input_tokens),
            func.sum(Attempt.output_tokens),
            func.sum(case((and_(is_call, Attempt.outcome.not_in(NOT_SENT)), 1), else_=0)),
            func.sum(case((and_(is_call, Attempt.outcome.in_(NOT_SENT)), 1), else_=0)),
        ).where(*_attempt_filter(scope))
    ).one()
    rejected = session.execute(
        select(func.count())
        .select_from(RejectedLine)
        .where(*_job_filter(scope, RejectedLine.job_id))
    ).scalar_one()
    return JobTotals(
        job_id=scope.job_ids[0] if len(scope.job_ids) == 1 else 0,
        items_total=items_total,
        by_status=by_status,
        items_done=by_status["done"],
        items_failed=by_status["failed"],
        lines_rejected=_int(rejected),
        cost_nanos=cost,
        baseline_nanos=baseline,
        model_calls=_int(tokens[2]),
        input_tokens=_int(tokens[0]),
        output_tokens=_int(tokens[1]),
        finished_cost_nanos=done_cost,
        finished_baseline_nanos=done_baseline,
        steps_not_sent=_int(tokens[3]),
    )


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
    where = [*_attempt_filter(scope), Attempt.role != SHADOW]  # as report_tiers
    rows = session.execute(
        select(
            Attempt.tier_index,
            Attempt.tier,
            func.count(func.distinct(Attempt.item_id)),
            func.sum(case((Attempt.decision == "accept", 1), else_=0)),
            func.sum(case((Attempt.decision == "escalate", 1), else_=0)),
            func.sum(case((Attempt.decision == "fail", 1), else_=0)),
            func.sum(is_call),
            func.sum(case((Attempt.role == "fallback", 1), else_=0)),
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
        latency[(int(ti), str(tier))][int(ms)] = _int(n)
    dead: dict[int, int] = {
        int(ti): _int(n)
        for ti, n in session.execute(
            select(Item.tier_index, func.count())
            .where(*_item_filter(scope), Item.status == "failed")
            .group_by(Item.tier_index)
        )
    }
    return [
        FunnelTier(
            tier_index=int(r[0]),
            tier=str(r[1]),
            entered=_int(r[2]),
            accepted=_int(r[3]),
            escalated=_int(r[4]),
            failed=_int(r[5]),
            dead_lettered=dead.get(int(r[0]), 0),
            calls=_int(r[6]),
            fallbacks=_int(r[7]),
            input_tokens=_int(r[8]),
            output_tokens=_int(r[9]),
            cost_nanos=_int(r[10]),
            latency=latency.get((int(r[0]), str(r[1])), {}),
            not_sent=_int(r[11]),
        )
        for r in rows
    ]


def tier_rows(tiers: Iterable[FunnelTier], job_id: int = 0) -> list[TierRow]:
    """The funnel in the shape of ``report_tiers`` rows (for the legacy report keys)."""
    from models.reports import nanos_to_usd

    return [
        TierRow(
            job_id=job_id,
            tier_index=t.tier_index,
            tier=t.tier,
            entered=t.entered,
            accepted=t.accepted,
            escalated=t.escalated,
            failed=t.failed,
            calls=t.calls,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            cost_usd=nanos_to_usd(t.cost_nanos),
            p50_ms=t.percentile(50),
            p95_ms=t.percentile(95),
            fallbacks=t.fallbacks,
            not_sent=t.not_sent,
        )
        for t in tiers
    ]


# ---------------------------------------------------------------- cost


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
    where = _item_filter(scope)
    by_label = [
        LabelCost(label=r[0], items=_int(r[1]), cost_nanos=_int(r[2]), baseline_nanos=_int(r[3]))
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
    p95: int | None = None
    if n:
        rank = (95 * n + 99) // 100
        p95 = _int(
            session.execute(
                select(Item.cost_nanos)
                .where(*where)
                .order_by(Item.cost_nanos)
                .offset(rank - 1)
                .limit(1)
            ).scalar_one()
        )
    batch = {
        bool(b): _int(c)
        for b, c in session.execute(
            select(Attempt.is_batch, func.sum(Attempt.cost_nanos))
            .where(*_attempt_filter(scope), Attempt.role != SHADOW)
            .group_by(Attempt.is_batch)
        )
    }
    by_model = [
        ModelTokens(
            model=str(r[0]),
            calls=_int(r[1]),
            input_tokens=_int(r[2]),
            cache_read_tokens=_int(r[3]),
            cache_write_tokens=_int(r[4]),
        )
        for r in session.execute(
            select(
                Attempt.model,
                func.count(),
                func.sum(Attempt.input_tokens),
                func.sum(Attempt.cache_read_tokens),
                func.sum(Attempt.cache_write_tokens),
            )
            .where(*_attempt_filter(scope), Attempt.role != "rules")
            .group_by(Attempt.model)
            .order_by(Attempt.model)
        )
    ]
    return Cost(
        items=n,
        cost_nanos=total,
        baseline_nanos=sum(x.baseline_nanos for x in by_label),
        item_mean_nanos=total // n if n else 0,
        item_p95_nanos=p95,
        realtime_nanos=batch.get(False, 0),
        batch_nanos=batch.get(True, 0),
        by_label=by_label,
        by_model=by_model,
    )


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
        .where(*_attempt_filter(scope), Attempt.role == SHADOW)
    ).one()
    return Calibration(_int(row[0]), _int(row[1]), _int(row[2]), _int(row[3]), _int(row[4]))


# ---------------------------------------------------------------- latency


@dataclass(frozen=True, slots=True)
class EndToEnd:
    """Items' summed model-call latency (``items.latency_ms``), over finished items."""

    items: int
    latency: Mapping[int, int]

    def percentile(self, p: int) -> int | None:
        return nearest_rank(self.latency, p)

    @property
    def max_ms(self) -> int | None:
        return max(self.latency) if self.latency else None


def end_to_end(session: Session, scope: Scope) -> EndToEnd:
    hist = {
        int(ms): _int(n)
        for ms, n in session.execute(
            select(Item.latency_ms, func.count())
            .where(*_item_filter(scope), Item.status.in_(("done", "failed")))
            .group_by(Item.latency_ms)
        )
    }
    return EndToEnd(items=sum(hist.values()), latency=hist)


# ---------------------------------------------------------------- reliability


@dataclass(frozen=True, slots=True)
class FallbackLink:
    tier_index: int
    tier: str
    link: str  # provider:model
    calls: int
    ok: int


@dataclass(frozen=True, slots=True)
class BreakerOpening:
    breaker_key: str
    opened_at: datetime
    closed_at: datetime | None  # None: still open (no later 'closed' for this key)
    reason: str

    @property
    def seconds(self) -> float | None:
        if self.closed_at is None:
            return None
        return (self.closed_at - self.opened_at).total_seconds()


@dataclass(frozen=True, slots=True)
class DrillRow:
    breaker_key: str
    reason: str
    started_at: datetime
    until: datetime
    cleared_at: datetime | None
    calls_diverted: int


@dataclass(frozen=True, slots=True)
class Reliability:
    calls: int
    outcomes: Mapping[str, int]  # every MODEL_OUTCOMES key, plus 'retried' and 'fell_back'
    fallbacks: list[FallbackLink]
    dead_letters: list[tuple[str, int]]  # (error, items), most frequent first
    dead_lettered: int
    breaker_openings: list[BreakerOpening] = field(default_factory=list)
    drills: list[DrillRow] = field(default_factory=list)


def breaker_openings(session: Session, scope: Scope) -> list[BreakerOpening]:
    """Each transition into 'open', paired with the next transition into 'closed' of
    the same key (half-open probes that re-open extend the same opening).

    Breakers are fleet-wide, so only the time range applies (events whose ``at``
    falls in it); the job, pipeline and label filters do not.
    """
    lo, hi = _bounds(scope)
    conds: list[ColumnElement[bool]] = []
    if lo is not None:
        conds.append(BreakerEvent.at >= lo)
    if hi is not None:
        conds.append(BreakerEvent.at < hi)
    out: list[BreakerOpening] = []
    open_since: dict[str, tuple[datetime, str]] = {}
    for key, to_state, reason, at in session.execute(
        select(
            BreakerEvent.breaker_key, BreakerEvent.to_state, BreakerEvent.reason, BreakerEvent.at
        )
        .where(*conds)
        .order_by(BreakerEvent.breaker_key, BreakerEvent.at, BreakerEvent.id)
    ):
        if to_state == "open" and key not in open_since:
            open_since[key] = (as_utc(at), reason)
        elif to_state == "closed" and key in open_since:
            opened, why = open_since.pop(key)
            out.append(BreakerOpening(key, opened, as_utc(at), why))
    out.extend(BreakerOpening(k, at, None, why) for k, (at, why) in open_since.items())
    return sorted(out, key=lambda o: (o.opened_at, o.breaker_key))


def drills(session: Session, scope: Scope) -> list[DrillRow]:
    """Chaos drills that started in the time range (fleet-wide, like breakers)."""
    lo, hi = _bounds(scope)
    conds: list[ColumnElement[bool]] = []
    if lo is not None:
        conds.append(Drill.started_at >= lo)
    if hi is not None:
        conds.append(Drill.started_at < hi)
    return [
        DrillRow(
            r.breaker_key,
            r.reason,
            as_utc(r.started_at),
            as_utc(r.until),
            None if r.cleared_at is None else as_utc(r.cleared_at),
            r.calls_diverted,
        )
        for r in session.execute(select(Drill).where(*conds).order_by(Drill.started_at)).scalars()
    ]


def reliability(session: Session, scope: Scope, dead_letter_limit: int = 20) -> Reliability:
    where = [*_attempt_filter(scope), Attempt.role != "rules"]
    outcomes: dict[str, int] = dict.fromkeys(MODEL_OUTCOMES, 0)
    calls = 0
    for outcome, n in session.execute(
        select(Attempt.outcome, func.count()).where(*where).group_by(Attempt.outcome)
    ):
        outcomes[str(outcome)] = _int(n)
        calls += _int(n)
    retried, fell_back = session.execute(
        select(
            func.sum(case((Attempt.decision.is_(None), 1), else_=0)),
            func.sum(case((Attempt.role == "fallback", 1), else_=0)),
        ).where(*where)
    ).one()
    outcomes["retried"] = _int(retried)
    outcomes["fell_back"] = _int(fell_back)
    links = [
        FallbackLink(int(r[0]), str(r[1]), f"{r[2]}:{r[3]}", _int(r[4]), _int(r[5]))
        for r in session.execute(
            select(
                Attempt.tier_index,
                Attempt.tier,
                Attempt.provider,
                Attempt.model,
                func.count(),
                func.sum(case((Attempt.outcome == "ok", 1), else_=0)),
            )
            .where(*where, Attempt.role == "fallback")
            .group_by(Attempt.tier_index, Attempt.tier, Attempt.provider, Attempt.model)
            .order_by(Attempt.tier_index, func.count().desc(), Attempt.provider, Attempt.model)
        )
    ]
    failed = [*_item_filter(scope), Item.status == "failed"]
    dead = [
        (str(err) if err is not None else "(no reason recorded)", _int(n))
        for err, n in session.execute(
            select(Item.error, func.count())
            .where(*failed)
            .group_by(Item.error)
            .order_by(func.count().desc(), Item.error)
            .limit(dead_letter_limit)
        )
    ]
    dead_total = session.execute(select(func.count()).select_from(Item).where(*failed))
    return Reliability(
        calls=calls,
        outcomes=outcomes,
        fallbacks=links,
        dead_letters=dead,
        dead_lettered=_int(dead_total.scalar_one()),
        breaker_openings=breaker_openings(session, scope),
        drills=drills(session, scope),
    )


# ---------------------------------------------------------------- confidence


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
            *_attempt_filter(scope),
            Attempt.outcome == "ok",
            Attempt.label.is_not(None),
            Attempt.confidence.is_not(None),
            Attempt.role.not_in(NOT_TIER_ANSWERS),
        )
        .group_by(Attempt.tier_index, Attempt.tier, Attempt.label, Attempt.confidence)
    ):
        counts[(int(ti), str(tier), str(label), bucket_of(float(conf or 0.0)))] += _int(n)
    return [ConfidenceBucket(*key, answers=n) for key, n in sorted(counts.items())]


def agreement(session: Session, scope: Scope) -> list[Agreement]:
    """Per tier k: items done at a higher tier than k, pairing the label of the item's
    last ok step at k with its final label."""
    last = (
        select(Attempt.item_id, Attempt.tier_index, func.max(Attempt.step).label("step"))
        .where(
            *_attempt_filter(scope),
            Attempt.outcome == "ok",
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
        .where(Item.status == "done", Attempt.tier_index < Item.tier_index)
        .group_by(Attempt.tier_index, Attempt.tier)
        .order_by(Attempt.tier_index)
    )
    return [Agreement(int(r[0]), str(r[1]), _int(r[2]), _int(r[3])) for r in rows]


# ---------------------------------------------------------------- per day


@dataclass(frozen=True, slots=True)
class DailyRow:
    """One ``report_daily`` row; money in nano-USD."""

    day: date
    pipeline: str
    tier_index: int
    tier: str
    items: int
    accepted: int
    escalated: int
    failed: int
    calls: int
    cost_nanos: int
    baseline_nanos: int
    p95_ms: int | None
    not_sent: int = 0  # model steps that sent no request (breaker open, drill): not calls
    reused: int = 0  # items that took an identical text's decision: no call
    reuse_saved_nanos: int = 0  # what their sources' calls cost


def _nanos(usd: Any) -> int:
    # The view's *_usd are exact numerics on Postgres, REAL on SQLite (9 decimals).
    return 0 if usd is None else int((Decimal(str(usd)) * 1_000_000_000).to_integral_value())


def daily(session: Session, scope: Scope) -> list[DailyRow]:
    """``report_daily`` over a scope: the view's own SQL body with filters added.

    Attempts are bucketed by the UTC day they were made. A time range and a
    pipeline are served by the view's body (rollup up to the watermark, the
    attempts after it live), filtered on both halves; a job or label filter cannot
    be served by the rollup (it has no job or item), so those run the live
    aggregate over the attempts (``REPORT_DAILY_LIVE``), which an index on the job
    keeps fast. Both give the same rows (tests/integration/test_rollup.py).
    """
    dialect = session.get_bind().dialect.name
    for_reports(session)
    lo, hi = _bounds(scope)
    params: dict[str, Any] = {}
    tail: list[str] = []  # conditions on the attempts (a) and their job (j)
    if lo is not None:
        tail.append("a.created_at >= :lo")
        params["lo"] = lo if dialect == "postgresql" else f"{lo:%Y-%m-%d %H:%M:%S}"
    if hi is not None:
        tail.append("a.created_at < :hi")
        params["hi"] = hi if dialect == "postgresql" else f"{hi:%Y-%m-%d %H:%M:%S}"
    if scope.pipeline is not None:
        tail.append("j.pipeline_name = :pipeline")
        params["pipeline"] = scope.pipeline
    if scope.job_ids or scope.label is not None:
        if scope.job_ids:
            names = [f"job{n}" for n in range(len(scope.job_ids))]
            tail.append(f"a.job_id IN ({', '.join(':' + n for n in names)})")
            params.update(zip(names, scope.job_ids, strict=True))
        if scope.label is not None:
            tail.append("i.label = :label")
            params["label"] = scope.label
        body = REPORT_DAILY_LIVE[dialect].format(where="".join(f"\n    AND {c}" for c in tail))
    else:
        roll: list[str] = []  # the same filters on the rollup tables (r)
        if scope.since is not None:
            roll.append("r.day >= :lo_day")
            params["lo_day"] = scope.since if dialect == "postgresql" else str(scope.since)
        if scope.until is not None:
            roll.append("r.day <= :hi_day")
            params["hi_day"] = scope.until if dialect == "postgresql" else str(scope.until)
        if scope.pipeline is not None:
            roll.append("r.pipeline = :pipeline")
        body = REPORT_DAILY_BODY[dialect].format(
            tail_where="".join(f"\n        AND {c}" for c in tail),
            roll_where=f"    WHERE {' AND '.join(roll)}\n" if roll else "",
        )
    sql = f"SELECT * FROM (\n{body}) AS d ORDER BY day, pipeline, tier_index"
    out: list[DailyRow] = []
    for r in session.execute(text(sql), params).mappings():
        day = r["day"]
        out.append(
            DailyRow(
                day=day if isinstance(day, date) else date.fromisoformat(str(day)),
                pipeline=str(r["pipeline"]),
                tier_index=int(r["tier_index"]),
                tier=str(r["tier"]),
                items=_int(r["items"]),
                accepted=_int(r["accepted"]),
                escalated=_int(r["escalated"]),
                failed=_int(r["failed"]),
                calls=_int(r["calls"]),
                cost_nanos=_nanos(r["cost_usd"]),
                baseline_nanos=_nanos(r["baseline_cost_usd"]),
                p95_ms=None if r["p95_ms"] is None else int(r["p95_ms"]),
                not_sent=_int(r["not_sent"]),
                reused=_int(r["reused"]),
                reuse_saved_nanos=_nanos(r["reuse_saved_usd"]),
            )
        )
    return out

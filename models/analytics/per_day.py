"""Per UTC day: the ``report_daily`` view's rows over a scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from common.lifecycle import Outcome, Status
from models.analytics.scope import Scope, as_int, bounds, for_reports
from models.views_daily import REPORT_DAILY_BODY, REPORT_DAILY_LIVE


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


def _daily_sql(dialect: str, scope: Scope) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of :func:`daily` for a scope (see its docstring)."""
    lo, hi = bounds(scope)
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
    return f"SELECT * FROM (\n{body}) AS d ORDER BY day, pipeline, tier_index", params


# report_daily's count columns, each read into the DailyRow field of the same name
_COUNTS = (
    "items", "accepted", "escalated", Status.FAILED, "calls", "not_sent", Outcome.REUSED
)  # fmt: skip
# its money columns (USD) and the nano-USD fields they are read into
_MONEY = {"cost_usd": "cost_nanos", "baseline_cost_usd": "baseline_nanos",
          "reuse_saved_usd": "reuse_saved_nanos"}  # fmt: skip


def _daily_row(r: Any) -> DailyRow:
    day = r["day"]
    return DailyRow(
        day=day if isinstance(day, date) else date.fromisoformat(str(day)),
        pipeline=str(r["pipeline"]),
        tier_index=int(r["tier_index"]),
        tier=str(r["tier"]),
        p95_ms=None if r["p95_ms"] is None else int(r["p95_ms"]),
        **{str(name): as_int(r[name]) for name in _COUNTS},
        **{field: _nanos(r[column]) for column, field in _MONEY.items()},
    )


def daily(session: Session, scope: Scope) -> list[DailyRow]:
    """``report_daily`` over a scope: the view's own SQL body with filters added.

    Attempts are bucketed by the UTC day they were made. A time range and a
    pipeline are served by the view's body (rollup up to the watermark, the
    attempts after it live), filtered on both halves; a job or label filter cannot
    be served by the rollup (it has no job or item), so those run the live
    aggregate over the attempts (``REPORT_DAILY_LIVE``), which an index on the job
    keeps fast. Both give the same rows (tests/integration/test_rollup.py).
    """
    for_reports(session)
    sql, params = _daily_sql(session.get_bind().dialect.name, scope)
    return [_daily_row(r) for r in session.execute(text(sql), params).mappings()]

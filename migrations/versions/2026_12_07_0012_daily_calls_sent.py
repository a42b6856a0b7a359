"""report_daily counts calls made: steps that sent no request, and reused items, apart.

Until now ``report_daily`` (and its rollup) counted every non-rules step as a call:
breaker-open and drill steps, which sent no request, and reuse rows (an item that took
an identical text's decision) among them, and their 0 ms in the p95 (issue 18, point 6;
issue 19, point 5). The view now counts calls as ``report_tiers`` does (0011) and gives
three more columns: ``not_sent`` (model steps that sent no request), ``reused`` (items
that took an identical text's decision) and ``reuse_saved_usd`` (what their sources'
calls cost).

The rollup's sums were made with the old counting, so its two tables are re-created
empty with the new columns and the watermark goes back to 0: ``report_daily`` stays
exact at once (all attempts are then the live tail, so it is slower), and the next
``cascade rollup`` (or the beat's task, every five minutes) fills the rollup again.
Dropping the view drops its grant, so the reporting role gets it again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "cascade_reader"
GROUP = ("day", "pipeline", "tier_index", "tier")
COUNTERS = ("items", "accepted", "escalated", "failed", "calls", "cost_nanos", "baseline_nanos")
NEW_COUNTERS = ("not_sent", "reused", "reuse_saved_nanos")

# Frozen copy of models.views_daily.REPORT_DAILY_SQL (tests/unit/test_views_sql.py).
REPORT_DAILY_SQL: dict[str, str] = {
    "postgresql": """\
CREATE VIEW report_daily AS
WITH tail AS (
    SELECT
        CAST(a.created_at AT TIME ZONE 'UTC' AS DATE) AS day,
        j.pipeline_name AS pipeline,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.role AS role,
        a.decision AS decision,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.decision IN ('accept', 'fail')
            THEN (SELECT i.baseline_nanos FROM items AS i
                WHERE i.id = a.item_id) ELSE 0 END AS baseline_nanos,
        CASE WHEN a.role NOT IN ('rules', 'reuse') AND a.outcome NOT IN ('breaker_open', 'drill')
            THEN 1 ELSE 0 END AS is_call,
        CASE WHEN a.role NOT IN ('rules', 'reuse') AND a.outcome IN ('breaker_open', 'drill')
            THEN 1 ELSE 0 END AS not_sent,
        CASE WHEN a.role = 'reuse' AND a.decision IN ('accept', 'capped')
            THEN 1 ELSE 0 END AS reused,
        CASE WHEN a.role = 'reuse' AND a.decision IN ('accept', 'capped')
            THEN (SELECT src.cost_nanos FROM items AS src WHERE src.id = a.reuse_of)
            ELSE 0 END AS reuse_saved_nanos,
        CASE WHEN EXISTS (
            SELECT 1 FROM attempts AS b
            WHERE b.item_id = a.item_id AND b.id < a.id
                AND b.tier_index = a.tier_index AND b.tier = a.tier
                AND b.role <> 'shadow'
                AND CAST(b.created_at AT TIME ZONE 'UTC' AS DATE)
                    = CAST(a.created_at AT TIME ZONE 'UTC' AS DATE)
        ) THEN 0 ELSE 1 END AS first_step
    FROM attempts AS a
    JOIN jobs AS j ON j.id = a.job_id
    WHERE a.id > rollup_last_id() AND a.role <> 'shadow'
),
counts AS (
    SELECT r.day, r.pipeline, r.tier_index, r.tier, r.items, r.accepted, r.escalated,
        r.failed, r.calls, r.cost_nanos, r.baseline_nanos, r.not_sent, r.reused,
        r.reuse_saved_nanos
    FROM rollup_daily AS r
    UNION ALL
    SELECT s.day, s.pipeline, s.tier_index, s.tier,
        SUM(s.first_step) AS items,
        SUM(CASE WHEN s.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
        SUM(CASE WHEN s.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
        SUM(CASE WHEN s.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
        SUM(s.is_call) AS calls,
        SUM(s.cost_nanos) AS cost_nanos,
        SUM(s.baseline_nanos) AS baseline_nanos,
        SUM(s.not_sent) AS not_sent,
        SUM(s.reused) AS reused,
        SUM(s.reuse_saved_nanos) AS reuse_saved_nanos
    FROM tail AS s
    GROUP BY s.day, s.pipeline, s.tier_index, s.tier
),
totals AS (
    SELECT c.day AS day, c.pipeline AS pipeline, c.tier_index AS tier_index, c.tier AS tier,
        SUM(c.items) AS items, SUM(c.accepted) AS accepted, SUM(c.escalated) AS escalated,
        SUM(c.failed) AS failed, SUM(c.calls) AS calls, SUM(c.cost_nanos) AS cost_nanos,
        SUM(c.baseline_nanos) AS baseline_nanos, SUM(c.not_sent) AS not_sent,
        SUM(c.reused) AS reused, SUM(c.reuse_saved_nanos) AS reuse_saved_nanos
    FROM counts AS c
    GROUP BY c.day, c.pipeline, c.tier_index, c.tier
),
latencies AS (
    SELECT r.day, r.pipeline, r.tier_index, r.tier, r.latency_ms, r.n
    FROM rollup_daily_latency AS r
    UNION ALL
    SELECT s.day, s.pipeline, s.tier_index, s.tier, s.latency_ms, COUNT(*) AS n
    FROM tail AS s
    WHERE s.is_call = 1
    GROUP BY s.day, s.pipeline, s.tier_index, s.tier, s.latency_ms
),
histogram AS (
    SELECT h.day AS day, h.pipeline AS pipeline, h.tier_index AS tier_index, h.tier AS tier,
        h.latency_ms AS latency_ms, SUM(h.n) AS n
    FROM latencies AS h
    GROUP BY h.day, h.pipeline, h.tier_index, h.tier, h.latency_ms
),
running AS (
    SELECT g.day, g.pipeline, g.tier_index, g.tier, g.latency_ms,
        SUM(g.n) OVER (
            PARTITION BY g.day, g.pipeline, g.tier_index, g.tier
            ORDER BY g.latency_ms ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS upto,
        SUM(g.n) OVER (PARTITION BY g.day, g.pipeline, g.tier_index, g.tier) AS total
    FROM histogram AS g
),
p95 AS (
    SELECT u.day AS day, u.pipeline AS pipeline, u.tier_index AS tier_index, u.tier AS tier,
        MIN(u.latency_ms) AS p95_ms
    FROM running AS u
    WHERE 100 * u.upto >= 95 * u.total
    GROUP BY u.day, u.pipeline, u.tier_index, u.tier
)
SELECT
    t.day AS day,
    t.pipeline AS pipeline,
    t.tier AS tier,
    CAST(t.items AS BIGINT) AS items,
    CAST(t.escalated AS BIGINT) AS escalated,
    CAST(t.failed AS BIGINT) AS failed,
    CAST(t.calls AS BIGINT) AS calls,
    CAST(t.cost_nanos * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    CAST(t.baseline_nanos * 0.000000001 AS NUMERIC(38, 9)) AS baseline_cost_usd,
    p.p95_ms AS p95_ms,
    t.tier_index AS tier_index,
    CAST(t.accepted AS BIGINT) AS accepted,
    CAST(t.not_sent AS BIGINT) AS not_sent,
    CAST(t.reused AS BIGINT) AS reused,
    CAST(t.reuse_saved_nanos * 0.000000001 AS NUMERIC(38, 9)) AS reuse_saved_usd
FROM totals AS t
LEFT JOIN p95 AS p
    ON p.day = t.day AND p.pipeline = t.pipeline
    AND p.tier_index = t.tier_index AND p.tier = t.tier
""",
    "sqlite": """\
CREATE VIEW report_daily AS
WITH tail AS (
    SELECT
        date(a.created_at) AS day,
        j.pipeline_name AS pipeline,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.role AS role,
        a.decision AS decision,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.decision IN ('accept', 'fail')
            THEN (SELECT i.baseline_nanos FROM items AS i
                WHERE i.id = a.item_id) ELSE 0 END AS baseline_nanos,
        CASE WHEN a.role NOT IN ('rules', 'reuse') AND a.outcome NOT IN ('breaker_open', 'drill')
            THEN 1 ELSE 0 END AS is_call,
        CASE WHEN a.role NOT IN ('rules', 'reuse') AND a.outcome IN ('breaker_open', 'drill')
            THEN 1 ELSE 0 END AS not_sent,
        CASE WHEN a.role = 'reuse' AND a.decision IN ('accept', 'capped')
            THEN 1 ELSE 0 END AS reused,
        CASE WHEN a.role = 'reuse' AND a.decision IN ('accept', 'capped')
            THEN (SELECT src.cost_nanos FROM items AS src WHERE src.id = a.reuse_of)
            ELSE 0 END AS reuse_saved_nanos,
        CASE WHEN EXISTS (
            SELECT 1 FROM attempts AS b
            WHERE b.item_id = a.item_id AND b.id < a.id
                AND b.tier_index = a.tier_index AND b.tier = a.tier
                AND b.role <> 'shadow'
                AND date(b.created_at)
                    = date(a.created_at)
        ) THEN 0 ELSE 1 END AS first_step
    FROM attempts AS a
    JOIN jobs AS j ON j.id = a.job_id
    WHERE a.id > (SELECT m.last_id FROM rollup_mark AS m WHERE m.id = 1) AND a.role <> 'shadow'
),
counts AS (
    SELECT r.day, r.pipeline, r.tier_index, r.tier, r.items, r.accepted, r.escalated,
        r.failed, r.calls, r.cost_nanos, r.baseline_nanos, r.not_sent, r.reused,
        r.reuse_saved_nanos
    FROM rollup_daily AS r
    UNION ALL
    SELECT s.day, s.pipeline, s.tier_index, s.tier,
        SUM(s.first_step) AS items,
        SUM(CASE WHEN s.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
        SUM(CASE WHEN s.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
        SUM(CASE WHEN s.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
        SUM(s.is_call) AS calls,
        SUM(s.cost_nanos) AS cost_nanos,
        SUM(s.baseline_nanos) AS baseline_nanos,
        SUM(s.not_sent) AS not_sent,
        SUM(s.reused) AS reused,
        SUM(s.reuse_saved_nanos) AS reuse_saved_nanos
    FROM tail AS s
    GROUP BY s.day, s.pipeline, s.tier_index, s.tier
),
totals AS (
    SELECT c.day AS day, c.pipeline AS pipeline, c.tier_index AS tier_index, c.tier AS tier,
        SUM(c.items) AS items, SUM(c.accepted) AS accepted, SUM(c.escalated) AS escalated,
        SUM(c.failed) AS failed, SUM(c.calls) AS calls, SUM(c.cost_nanos) AS cost_nanos,
        SUM(c.baseline_nanos) AS baseline_nanos, SUM(c.not_sent) AS not_sent,
        SUM(c.reused) AS reused, SUM(c.reuse_saved_nanos) AS reuse_saved_nanos
    FROM counts AS c
    GROUP BY c.day, c.pipeline, c.tier_index, c.tier
),
latencies AS (
    SELECT r.day, r.pipeline, r.tier_index, r.tier, r.latency_ms, r.n
    FROM rollup_daily_latency AS r
    UNION ALL
    SELECT s.day, s.pipeline, s.tier_index, s.tier, s.latency_ms, COUNT(*) AS n
    FROM tail AS s
    WHERE s.is_call = 1
    GROUP BY s.day, s.pipeline, s.tier_index, s.tier, s.latency_ms
),
histogram AS (
    SELECT h.day AS day, h.pipeline AS pipeline, h.tier_index AS tier_index, h.tier AS tier,
        h.latency_ms AS latency_ms, SUM(h.n) AS n
    FROM latencies AS h
    GROUP BY h.day, h.pipeline, h.tier_index, h.tier, h.latency_ms
),
running AS (
    SELECT g.day, g.pipeline, g.tier_index, g.tier, g.latency_ms,
        SUM(g.n) OVER (
            PARTITION BY g.day, g.pipeline, g.tier_index, g.tier
            ORDER BY g.latency_ms ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS upto,
        SUM(g.n) OVER (PARTITION BY g.day, g.pipeline, g.tier_index, g.tier) AS total
    FROM histogram AS g
),
p95 AS (
    SELECT u.day AS day, u.pipeline AS pipeline, u.tier_index AS tier_index, u.tier AS tier,
        MIN(u.latency_ms) AS p95_ms
    FROM running AS u
    WHERE 100 * u.upto >= 95 * u.total
    GROUP BY u.day, u.pipeline, u.tier_index, u.tier
)
SELECT
    t.day AS day,
    t.pipeline AS pipeline,
    t.tier AS tier,
    CAST(t.items AS BIGINT) AS items,
    CAST(t.escalated AS BIGINT) AS escalated,
    CAST(t.failed AS BIGINT) AS failed,
    CAST(t.calls AS BIGINT) AS calls,
    CAST(t.cost_nanos * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    CAST(t.baseline_nanos * 0.000000001 AS NUMERIC(38, 9)) AS baseline_cost_usd,
    p.p95_ms AS p95_ms,
    t.tier_index AS tier_index,
    CAST(t.accepted AS BIGINT) AS accepted,
    CAST(t.not_sent AS BIGINT) AS not_sent,
    CAST(t.reused AS BIGINT) AS reused,
    CAST(t.reuse_saved_nanos * 0.000000001 AS NUMERIC(38, 9)) AS reuse_saved_usd
FROM totals AS t
LEFT JOIN p95 AS p
    ON p.day = t.day AND p.pipeline = t.pipeline
    AND p.tier_index = t.tier_index AND p.tier = t.tier
""",
}


def _group_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("pipeline", sa.String(length=40), nullable=False),
        sa.Column("tier_index", sa.SmallInteger(), nullable=False),
        sa.Column("tier", sa.String(length=40), nullable=False),
    ]


def _rebuild(counters: Sequence[str], view_sql: str) -> None:
    """Empty rollup tables with these counters, the mark at 0, and the view re-created."""
    op.execute("DROP VIEW IF EXISTS report_daily")
    op.drop_table("rollup_daily_latency")
    op.drop_table("rollup_daily")
    op.create_table(
        "rollup_daily",
        *_group_columns(),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in counters),
        sa.PrimaryKeyConstraint(*GROUP, name=op.f("pk_rollup_daily")),
    )
    op.create_table(
        "rollup_daily_latency",
        *_group_columns(),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*GROUP, "latency_ms", name=op.f("pk_rollup_daily_latency")),
    )
    op.execute("UPDATE rollup_mark SET last_id = 0, refreshed_at = NULL WHERE id = 1")
    op.execute(view_sql)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"DO $$ BEGIN GRANT SELECT ON report_daily TO {READER}; "
            "EXCEPTION WHEN undefined_object THEN NULL; END $$"
        )


def upgrade() -> None:
    _rebuild(COUNTERS + NEW_COUNTERS, REPORT_DAILY_SQL[op.get_bind().dialect.name])


def downgrade() -> None:
    before = importlib.import_module("migrations.versions.2026_11_27_0006_rollups")
    _rebuild(COUNTERS, before.REPORT_DAILY_SQL[op.get_bind().dialect.name])

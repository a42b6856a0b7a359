"""Reporting: the report_daily view and the index the time-range reports need.

The view is created per dialect: the day of a timestamp and the 95th percentile
are spelled differently on SQLite and Postgres (docs/views.md). Plain
CREATE/DROP INDEX and CREATE/DROP VIEW: no batch rebuild of a table the older
views select from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of models.views.REPORT_DAILY_SQL (tests/unit/test_views_sql.py).
REPORT_DAILY_SQL: dict[str, str] = {
    "postgresql": """\
CREATE VIEW report_daily AS
SELECT
    CAST(a.created_at AT TIME ZONE 'UTC' AS DATE) AS day,
    j.pipeline_name AS pipeline,
    a.tier AS tier,
    COUNT(DISTINCT a.item_id) AS items,
    SUM(CASE WHEN a.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
    SUM(CASE WHEN a.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
    SUM(CASE WHEN a.role <> 'rules' THEN 1 ELSE 0 END) AS calls,
    CAST(SUM(a.cost_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    CAST(
        SUM(CASE WHEN a.decision IN ('accept', 'fail') THEN i.baseline_nanos ELSE 0 END)
        * 0.000000001 AS NUMERIC(38, 9)
    ) AS baseline_cost_usd,
    percentile_disc(0.95) WITHIN GROUP (ORDER BY a.latency_ms)
        FILTER (WHERE a.role <> 'rules') AS p95_ms,
    a.tier_index AS tier_index,
    SUM(CASE WHEN a.decision = 'accept' THEN 1 ELSE 0 END) AS accepted
FROM attempts AS a
JOIN jobs AS j ON j.id = a.job_id
JOIN items AS i ON i.id = a.item_id
GROUP BY CAST(a.created_at AT TIME ZONE 'UTC' AS DATE), j.pipeline_name, a.tier_index, a.tier
""",
    "sqlite": """\
CREATE VIEW report_daily AS
WITH steps AS (
    SELECT
        date(a.created_at) AS day,
        j.pipeline_name AS pipeline,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.item_id AS item_id,
        a.decision AS decision,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.decision IN ('accept', 'fail') THEN i.baseline_nanos ELSE 0 END
            AS baseline_nanos,
        CASE WHEN a.role <> 'rules' THEN 1 ELSE 0 END AS is_call
    FROM attempts AS a
    JOIN jobs AS j ON j.id = a.job_id
    JOIN items AS i ON i.id = a.item_id
),
ranked AS (
    SELECT
        s.*,
        ROW_NUMBER() OVER (
            PARTITION BY s.day, s.pipeline, s.tier_index, s.tier, s.is_call
            ORDER BY s.latency_ms
        ) AS latency_rank,
        COUNT(*) OVER (
            PARTITION BY s.day, s.pipeline, s.tier_index, s.tier, s.is_call
        ) AS latency_n
    FROM steps AS s
)
SELECT
    r.day AS day,
    r.pipeline AS pipeline,
    r.tier AS tier,
    COUNT(DISTINCT r.item_id) AS items,
    SUM(CASE WHEN r.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
    SUM(CASE WHEN r.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
    SUM(r.is_call) AS calls,
    CAST(SUM(r.cost_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    CAST(SUM(r.baseline_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS baseline_cost_usd,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (95 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p95_ms,
    r.tier_index AS tier_index,
    SUM(CASE WHEN r.decision = 'accept' THEN 1 ELSE 0 END) AS accepted
FROM ranked AS r
GROUP BY r.day, r.pipeline, r.tier_index, r.tier
""",
}


def upgrade() -> None:
    op.create_index("ix_attempts_created_at", "attempts", ["created_at"])
    op.execute(REPORT_DAILY_SQL[op.get_bind().dialect.name])


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS report_daily")
    op.drop_index("ix_attempts_created_at", table_name="attempts")

"""Calls are requests sent: report_tiers no longer counts steps that sent none.

A step whose outcome is ``breaker_open`` or ``drill`` made no request (issue 18): it
is no call, and its 0 ms is no latency. The view is dropped and re-created; on
Postgres the reporting role's SELECT grant is given again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "cascade_reader"

# Frozen copy of models.views.REPORT_TIERS_SQL (tests/unit/test_views_sql.py).
REPORT_TIERS_SQL = """\
CREATE VIEW report_tiers AS
WITH steps AS (
    SELECT
        a.id AS id,
        a.job_id AS job_id,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.item_id AS item_id,
        a.role AS role,
        a.decision AS decision,
        a.input_tokens AS input_tokens,
        a.output_tokens AS output_tokens,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.role NOT IN ('rules', 'reuse') AND a.outcome NOT IN ('breaker_open', 'drill')
            THEN 1 ELSE 0 END AS is_call
    FROM attempts AS a
    WHERE a.role <> 'shadow'
),
ranked AS (
    SELECT
        s.job_id AS job_id,
        s.tier_index AS tier_index,
        s.tier AS tier,
        s.item_id AS item_id,
        s.role AS role,
        s.decision AS decision,
        s.input_tokens AS input_tokens,
        s.output_tokens AS output_tokens,
        s.cost_nanos AS cost_nanos,
        s.latency_ms AS latency_ms,
        s.is_call AS is_call,
        ROW_NUMBER() OVER (
            PARTITION BY s.job_id, s.tier_index, s.tier, s.is_call
            ORDER BY s.latency_ms, s.id
        ) AS latency_rank,
        COUNT(*) OVER (
            PARTITION BY s.job_id, s.tier_index, s.tier, s.is_call
        ) AS latency_n
    FROM steps AS s
)
SELECT
    r.job_id AS job_id,
    r.tier_index AS tier_index,
    r.tier AS tier,
    COUNT(DISTINCT r.item_id) AS entered,
    SUM(CASE WHEN r.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
    SUM(CASE WHEN r.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
    SUM(CASE WHEN r.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
    SUM(r.is_call) AS calls,
    SUM(r.input_tokens) AS input_tokens,
    SUM(r.output_tokens) AS output_tokens,
    CAST(SUM(r.cost_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (50 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p50_ms,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (95 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p95_ms,
    SUM(CASE WHEN r.role = 'fallback' THEN 1 ELSE 0 END) AS fallbacks
FROM ranked AS r
GROUP BY r.job_id, r.tier_index, r.tier
"""

# The definition this revision replaces (from 0007), for the downgrade.
PREVIOUS_REPORT_TIERS_SQL = """\
CREATE VIEW report_tiers AS
WITH steps AS (
    SELECT
        a.id AS id,
        a.job_id AS job_id,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.item_id AS item_id,
        a.role AS role,
        a.decision AS decision,
        a.input_tokens AS input_tokens,
        a.output_tokens AS output_tokens,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.role NOT IN ('rules', 'reuse') THEN 1 ELSE 0 END AS is_call
    FROM attempts AS a
    WHERE a.role <> 'shadow'
),
ranked AS (
    SELECT
        s.job_id AS job_id,
        s.tier_index AS tier_index,
        s.tier AS tier,
        s.item_id AS item_id,
        s.role AS role,
        s.decision AS decision,
        s.input_tokens AS input_tokens,
        s.output_tokens AS output_tokens,
        s.cost_nanos AS cost_nanos,
        s.latency_ms AS latency_ms,
        s.is_call AS is_call,
        ROW_NUMBER() OVER (
            PARTITION BY s.job_id, s.tier_index, s.tier, s.is_call
            ORDER BY s.latency_ms, s.id
        ) AS latency_rank,
        COUNT(*) OVER (
            PARTITION BY s.job_id, s.tier_index, s.tier, s.is_call
        ) AS latency_n
    FROM steps AS s
)
SELECT
    r.job_id AS job_id,
    r.tier_index AS tier_index,
    r.tier AS tier,
    COUNT(DISTINCT r.item_id) AS entered,
    SUM(CASE WHEN r.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
    SUM(CASE WHEN r.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
    SUM(CASE WHEN r.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
    SUM(r.is_call) AS calls,
    SUM(r.input_tokens) AS input_tokens,
    SUM(r.output_tokens) AS output_tokens,
    CAST(SUM(r.cost_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (50 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p50_ms,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (95 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p95_ms,
    SUM(CASE WHEN r.role = 'fallback' THEN 1 ELSE 0 END) AS fallbacks
FROM ranked AS r
GROUP BY r.job_id, r.tier_index, r.tier
"""


def _recreate(sql: str) -> None:
    op.execute("DROP VIEW IF EXISTS report_tiers")
    op.execute(sql)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"DO $$ BEGIN GRANT SELECT ON report_tiers TO {READER}; "
            "EXCEPTION WHEN undefined_object THEN NULL; END $$"
        )


def upgrade() -> None:
    _recreate(REPORT_TIERS_SQL)


def downgrade() -> None:
    _recreate(PREVIOUS_REPORT_TIERS_SQL)

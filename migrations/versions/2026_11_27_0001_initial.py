"""Initial schema: the ledger tables and the reporting views.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Frozen in time: the tables are written out here rather than created from
``models.tables``, and the view SQL is a copy of ``models.views`` as it was when
this revision was written (``tests/unit/test_views_sql.py`` guards the copy). The
view SQL is portable: the same text runs on SQLite and Postgres.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements INTEGER PRIMARY KEY; Postgres gets BIGINT.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

REPORT_ITEMS_SQL = """\
CREATE VIEW report_items AS
SELECT
    i.job_id AS job_id,
    i.item_key AS item_id,
    i.status AS status,
    i.label AS label,
    i.final_tier AS tier,
    i.confidence AS confidence,
    CAST(i.cost_nanos * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    i.latency_ms AS latency_ms,
    i.model_calls AS attempts,
    i.fallback_used AS fallback_used,
    i.id AS item_pk,
    CAST(i.baseline_nanos * 0.000000001 AS NUMERIC(38, 9)) AS baseline_usd
FROM items AS i
"""

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
        CASE WHEN a.role <> 'rules' THEN 1 ELSE 0 END AS is_call
    FROM attempts AS a
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


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("pipeline_name", sa.String(length=40), nullable=False),
        sa.Column("pipeline", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("name", name=op.f("uq_jobs_name")),
    )
    op.create_index(op.f("ix_jobs_pipeline_name"), "jobs", ["pipeline_name"], unique=False)
    op.create_table(
        "submissions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("lines_read", sa.Integer(), nullable=False),
        sa.Column("items_added", sa.Integer(), nullable=False),
        sa.Column("items_existing", sa.Integer(), nullable=False),
        sa.Column("lines_rejected", sa.Integer(), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_submissions_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    op.create_index(op.f("ix_submissions_job_id"), "submissions", ["job_id"], unique=False)
    op.create_table(
        "items",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("submission_id", BIG_ID, nullable=False),
        sa.Column("item_key", sa.String(length=200), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tier_index", sa.SmallInteger(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("final_tier", sa.String(length=40), nullable=True),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("baseline_nanos", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("model_calls", sa.Integer(), nullable=False),
        sa.Column("fallback_used", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_items_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_items_submission_id_submissions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("job_id", "item_key", name=op.f("uq_items_job_id")),
    )
    op.create_index(
        "ix_items_job_status_tier", "items", ["job_id", "status", "tier_index"], unique=False
    )
    op.create_index("ix_items_status_lease", "items", ["status", "lease_until"], unique=False)
    op.create_table(
        "rejected_lines",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("submission_id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_rejected_lines_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_rejected_lines_submission_id_submissions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_lines")),
        sa.UniqueConstraint("job_id", "source", "line_no", name=op.f("uq_rejected_lines_job_id")),
    )
    op.create_index(op.f("ix_rejected_lines_job_id"), "rejected_lines", ["job_id"], unique=False)
    op.create_table(
        "attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("tier_index", sa.SmallInteger(), nullable=False),
        sa.Column("tier", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=12), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=12), nullable=True),
        sa.Column("label", sa.String(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("hedged", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_write_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=False),
        sa.Column("is_batch", sa.Boolean(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.SmallInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_attempts_item_id_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("item_id", "step", name=op.f("uq_attempts_item_id")),
    )
    op.create_index("ix_attempts_job_tier", "attempts", ["job_id", "tier_index"], unique=False)

    op.execute(REPORT_ITEMS_SQL)
    op.execute(REPORT_TIERS_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS report_tiers")
    op.execute("DROP VIEW IF EXISTS report_items")
    op.drop_index("ix_attempts_job_tier", table_name="attempts")
    op.drop_table("attempts")
    op.drop_index(op.f("ix_rejected_lines_job_id"), table_name="rejected_lines")
    op.drop_table("rejected_lines")
    op.drop_index("ix_items_status_lease", table_name="items")
    op.drop_index("ix_items_job_status_tier", table_name="items")
    op.drop_table("items")
    op.drop_index(op.f("ix_submissions_job_id"), table_name="submissions")
    op.drop_table("submissions")
    op.drop_index(op.f("ix_jobs_pipeline_name"), table_name="jobs")
    op.drop_table("jobs")

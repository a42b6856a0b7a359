"""Message Batches and backfills: batches, watermarks, backfill runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = True, now: bool = False) -> sa.Column[object]:
    default = sa.func.now() if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "message_batches",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", BIG_ID, nullable=False),
        sa.Column("tier_index", sa.SmallInteger(), nullable=False),
        sa.Column("tier", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("mechanism", sa.String(length=16), nullable=False),
        sa.Column("lease_token", sa.String(length=32), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("poll_count", sa.Integer(), nullable=False),
        sa.Column("poll_token", sa.String(length=32), nullable=True),
        _ts("next_poll_at"),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at", nullable=False, now=True),
        _ts("submitted_at"),
        _ts("ended_at"),
        _ts("collected_at"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_message_batches_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_batches")),
        sa.UniqueConstraint("batch_id", name=op.f("uq_message_batches_batch_id")),
    )
    op.create_index(op.f("ix_message_batches_job_id"), "message_batches", ["job_id"])
    op.create_index("ix_message_batches_status", "message_batches", ["status", "next_poll_at"])
    op.create_table(
        "backfill_watermarks",
        sa.Column("pipeline", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        _ts("watermark", nullable=False),
        _ts("updated_at", nullable=False, now=True),
        sa.PrimaryKeyConstraint("pipeline", "source", name=op.f("pk_backfill_watermarks")),
    )
    op.create_table(
        "backfill_runs",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("pipeline", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("mode", sa.String(length=12), nullable=False),
        sa.Column("job_id", BIG_ID, nullable=True),
        _ts("since"),
        _ts("until"),
        sa.Column("items_added", sa.Integer(), nullable=False),
        sa.Column("lines_rejected", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        _ts("started_at", nullable=False, now=True),
        _ts("finished_at"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_backfill_runs_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfill_runs")),
    )
    op.create_index("ix_backfill_runs_pipeline_source", "backfill_runs", ["pipeline", "source"])


def downgrade() -> None:
    op.drop_index("ix_backfill_runs_pipeline_source", table_name="backfill_runs")
    op.drop_table("backfill_runs")
    op.drop_table("backfill_watermarks")
    op.drop_index("ix_message_batches_status", table_name="message_batches")
    op.drop_index(op.f("ix_message_batches_job_id"), table_name="message_batches")
    op.drop_table("message_batches")

"""Resilience: circuit-breaker events, chaos drills, fallback deferrals per item.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "breaker_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("breaker_key", sa.String(length=130), nullable=False),
        sa.Column("from_state", sa.String(length=12), nullable=False),
        sa.Column("to_state", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breaker_events")),
    )
    op.create_index("ix_breaker_events_key_at", "breaker_events", ["breaker_key", "at"])
    op.create_table(
        "drills",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("breaker_key", sa.String(length=130), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("calls_diverted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drills")),
    )
    op.create_index(op.f("ix_drills_breaker_key"), "drills", ["breaker_key"])
    # Plain ADD/DROP COLUMN (SQLite >= 3.35 has both): a batch rebuild of items would
    # trip over the report views that select from it.
    op.add_column("items", sa.Column("deferrals", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.execute("ALTER TABLE items DROP COLUMN deferrals")
    op.drop_index(op.f("ix_drills_breaker_key"), table_name="drills")
    op.drop_table("drills")
    op.drop_index("ix_breaker_events_key_at", table_name="breaker_events")
    op.drop_table("breaker_events")

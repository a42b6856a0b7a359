"""Human review: the reviews table (one verdict per item, imported as gold).

Items whose status is 'review' need no schema change (status is a string).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("item_id", BigId, nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("machine_label", sa.String(length=64), nullable=True),
        sa.Column("machine_tier", sa.String(length=40), nullable=True),
        sa.Column(
            "imported_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("item_id", name=op.f("uq_reviews_item_id")),
    )
    op.create_index(op.f("ix_reviews_job_id"), "reviews", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_reviews_job_id"), table_name="reviews")
    op.drop_table("reviews")

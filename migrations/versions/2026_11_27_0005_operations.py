"""Operations: job budgets, spend per pipeline per day, the read-only reporting role.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "cascade_reader"
REPORT_VIEWS = ("report_items", "report_tiers", "report_daily")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("budget_nanos", sa.BigInteger(), nullable=True))
    op.add_column(
        "jobs", sa.Column("spent_nanos", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_table(
        "daily_spend",
        sa.Column("pipeline_name", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("spent_nanos", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline_name", "day", name=op.f("pk_daily_spend")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Analysts connect as a role that can read the report views and nothing else.
        # NOLOGIN: an operator grants it to a login role (see README "Operations").
        op.execute(
            f"DO $$ BEGIN CREATE ROLE {READER} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        op.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
        for view in REPORT_VIEWS:
            op.execute(
                f"DO $$ BEGIN GRANT SELECT ON {view} TO {READER}; "
                "EXCEPTION WHEN undefined_table THEN NULL; END $$"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for view in REPORT_VIEWS:
            op.execute(
                f"DO $$ BEGIN REVOKE SELECT ON {view} FROM {READER}; "
                "EXCEPTION WHEN undefined_table OR undefined_object THEN NULL; END $$"
            )
        op.execute(
            f"DO $$ BEGIN REVOKE USAGE ON SCHEMA public FROM {READER}; "
            "EXCEPTION WHEN undefined_object THEN NULL; END $$"
        )
    op.drop_table("daily_spend")
    op.execute("ALTER TABLE jobs DROP COLUMN spent_nanos")
    op.execute("ALTER TABLE jobs DROP COLUMN budget_nanos")

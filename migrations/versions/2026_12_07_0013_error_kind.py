"""The failure kind that sent an item to its fallback chain, as a field: items.error_kind.

The fallback chain defers an item only while its failures may pass with time
(transient, breaker open, drill); it read the primary's kind back from the head of
``items.error`` ("transient: HTTP 529 ..."). Now the settle writes the failed call's
outcome into ``items.error_kind``. Items already waiting for their chain get the kind
their ``error`` starts with, so an upgrade mid-job changes nothing for them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the kinds a fallback chain's decision tells apart (workers.decision.after_chain)
KINDS = ("transient", "breaker_open", "drill", "permanent", "context")


def upgrade() -> None:
    op.add_column("items", sa.Column("error_kind", sa.String(16), nullable=True))
    items = sa.table(
        "items",
        sa.column("status", sa.String),
        sa.column("error", sa.Text),
        sa.column("error_kind", sa.String),
    )
    for kind in KINDS:
        op.execute(
            items.update()
            .where(
                items.c.status.in_(("fallback", "fallback_running")),
                items.c.error.like(f"{kind}:%"),
            )
            .values(error_kind=kind)
        )


def downgrade() -> None:
    op.drop_column("items", "error_kind")

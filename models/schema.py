"""Every table module, imported so ``Base.metadata`` knows the whole schema.

Alembic (env.py, the drift check) imports this, not a single table module.
"""

from __future__ import annotations

from models import (
    tables,
    tables_batches,
    tables_ops,
    tables_resilience,
    tables_review,
    tables_rollup,
)
from models.tables import Base

__all__ = [
    "Base",
    "tables",
    "tables_batches",
    "tables_ops",
    "tables_resilience",
    "tables_review",
    "tables_rollup",
]

"""What every ledger module shares: the tables as SQLAlchemy Core handles, the clock,
and the dialect's INSERT (the one with ON CONFLICT)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.tables import Attempt, Item, Job, Submission
from models.tables_ops import DailySpend

ITEMS: Table = Item.__table__  # type: ignore[assignment]
ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]
JOBS: Table = Job.__table__  # type: ignore[assignment]
SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]
DAILY: Table = DailySpend.__table__  # type: ignore[assignment]
# the values that release an item's lease (no worker holds it any more)
RELEASED: Mapping[str, None] = MappingProxyType({"lease_token": None, "lease_until": None})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    return secrets.token_hex(8)


def dialect_insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT (it has ON CONFLICT); Postgres and SQLite only."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database {name!r}: use Postgres or SQLite")


def count_rows(session: Session, table: Any, *where: ColumnElement[bool]) -> int:
    """How many rows of ``table`` meet every condition of ``where``."""
    return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)

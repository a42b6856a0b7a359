"""Data retention: forget texts and metadata, keep the ledger whole."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table
from sqlalchemy.orm import Session

from models.tables import Item, RejectedLine

ITEMS: Table = Item.__table__  # type: ignore[assignment]
REJECTED: Table = RejectedLine.__table__  # type: ignore[assignment]


def purge(session: Session, before: datetime) -> tuple[int, int]:
    """Blank the text and metadata of items finished before ``before`` and the raw text of
    rejected lines recorded before it. Labels, tiers, costs and latencies stay, so reports
    are unchanged. Returns (items, rejected lines) purged."""
    items = session.execute(
        ITEMS.update()
        .where(ITEMS.c.finished_at < before, ITEMS.c.text.is_not(None))
        .values(text=None, meta={})
    ).rowcount  # type: ignore[attr-defined]
    lines = session.execute(
        REJECTED.update().where(REJECTED.c.created_at < before, REJECTED.c.raw != "").values(raw="")
    ).rowcount  # type: ignore[attr-defined]
    return int(items), int(lines)

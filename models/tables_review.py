"""Human review verdicts: one per item, imported by `cascade review import`.

A verdict is gold: it becomes the item's final label, and tuning, training and
the report's per-tier accuracy read it. What the machine had said is kept beside
it (``machine_label``, ``machine_tier``) so the item's own row can be overwritten.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base, BigId


class ReviewVerdict(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("item_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigId, index=True)  # no foreign keys: see Item
    item_id: Mapped[int] = mapped_column(BigId)
    label: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str] = mapped_column(String(200))
    reviewed_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)
    # the item's label and deciding tier before the verdict (None: the machine had none)
    machine_label: Mapped[str | None] = mapped_column(String(64))
    machine_tier: Mapped[str | None] = mapped_column(String(40))
    imported_at: Mapped[datetime] = mapped_column(server_default=func.now())

"""Resilience ledger: circuit-breaker transitions and chaos drills."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models.tables import Base, BigId


class BreakerEvent(Base):
    """One transition of one (provider, model) breaker, as a worker saw it happen."""

    __tablename__ = "breaker_events"
    __table_args__ = (Index("ix_breaker_events_key_at", "breaker_key", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    breaker_key: Mapped[str] = mapped_column(String(130))  # provider:model
    from_state: Mapped[str] = mapped_column(String(12))
    to_state: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    worker: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class Drill(Base):
    """A chaos drill: a model treated as failing by every worker until ``until``."""

    __tablename__ = "drills"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    breaker_key: Mapped[str] = mapped_column(String(130), index=True)
    reason: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    until: Mapped[datetime]
    cleared_at: Mapped[datetime | None]
    calls_diverted: Mapped[int] = mapped_column(Integer, default=0)

"""Message Batches and backfills: submitted batches, watermarks, backfill runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, SmallInteger, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from common.lifecycle import BatchStatus, RunStatus
from models.tables import Base, BigId, ModelName, ProviderName, TierName


class MessageBatch(Base):
    """One Message Batch of one tier visit: the items it carries and where it is.

    status: submitting (row written, API not yet called) -> in_progress (API id stored)
    -> collected (results settled); or failed (the API refused the batch: its items went
    to the fallback path) or abandoned (a submit that never stored its id; items released).
    """

    __tablename__ = "message_batches"
    __table_args__ = (Index("ix_message_batches_status", "status", "next_poll_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    tier_index: Mapped[int] = mapped_column(SmallInteger)
    tier: Mapped[TierName]
    provider: Mapped[ProviderName]
    model: Mapped[ModelName]
    mechanism: Mapped[str] = mapped_column(String(16))
    # the claim's lease token: results are settled under it, so a stale collect writes nothing
    lease_token: Mapped[str] = mapped_column(String(32))
    # [[item row id, step], ...]: the custom ids are derived from these
    items: Mapped[list[Any]] = mapped_column(JSON)
    request_count: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(12), default=BatchStatus.SUBMITTING.value)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the API's request_counts
    poll_count: Mapped[int] = mapped_column(Integer, default=0)
    # a poll message carries this; a recovery re-poll replaces it, so old chains stop
    poll_token: Mapped[str | None] = mapped_column(String(32))
    next_poll_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    submitted_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    collected_at: Mapped[datetime | None]


class BackfillWatermark(Base):
    """How far a backfill of one pipeline from one source has read (its updated-at)."""

    __tablename__ = "backfill_watermarks"

    pipeline: Mapped[str] = mapped_column(String(40), primary_key=True)
    source: Mapped[str] = mapped_column(String(500), primary_key=True)
    watermark: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class BackfillRun(Base):
    """One backfill run: what it read (since -> until), into which job, how it went."""

    __tablename__ = "backfill_runs"
    __table_args__ = (Index("ix_backfill_runs_pipeline_source", "pipeline", "source"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(100))  # the configured backfill, if any
    pipeline: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(500))
    mode: Mapped[str] = mapped_column(String(12))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    since: Mapped[datetime | None]
    until: Mapped[datetime | None]
    items_added: Mapped[int] = mapped_column(Integer, default=0)
    lines_rejected: Mapped[int] = mapped_column(Integer, default=0)
    # running | done (read and enqueued) | empty (nothing new) | failed
    status: Mapped[str] = mapped_column(String(12), default=RunStatus.RUNNING.value)
    message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]

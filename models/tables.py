"""The ledger: jobs, submissions, items, attempts, rejected input lines.

Money is integer nano-USD (1e-9 USD): every listed price is an exact integer per
token, so sums are exact on SQLite and Postgres alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.lifecycle import JobStatus, Status

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements INTEGER PRIMARY KEY; Postgres gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# a tier, a provider and a model are named alike in every table that names them
TierName = Annotated[str, mapped_column(String(40))]
ProviderName = Annotated[str, mapped_column(String(20))]
ModelName = Annotated[str, mapped_column(String(100))]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    pipeline_name: Mapped[str] = mapped_column(String(40), index=True)
    pipeline: Mapped[dict[str, Any]]  # the validated pipeline, as it was when the job started
    # running | done | failed | paused
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.RUNNING.value)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    # Spend cap for the job (nano-USD; NULL = none) and what its calls have cost so far.
    budget_nanos: Mapped[int | None] = mapped_column(BigInteger)
    spent_nanos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Submission(Base):
    """One run of `cascade submit` (or a backfill) into a job."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(500))
    lines_read: Mapped[int] = mapped_column(Integer, default=0)
    items_added: Mapped[int] = mapped_column(Integer, default=0)
    items_existing: Mapped[int] = mapped_column(Integer, default=0)
    lines_rejected: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "item_key"),
        Index("ix_items_job_status_tier", "job_id", "status", "tier_index"),
        Index("ix_items_status_lease", "status", "lease_until"),
        Index("ix_items_text_hash", "text_hash"),  # repeats of a decided text (0010)
        Index("ix_items_reuse_of", "reuse_of"),  # repeats waiting on an item (0010)
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys on the two hot tables (migration 0008): their checks were half of
    # Postgres's time writing a row. Only models/ writes them, always with a live job.
    job_id: Mapped[int] = mapped_column(BigId)
    submission_id: Mapped[int] = mapped_column(BigId)
    item_key: Mapped[str] = mapped_column(String(200))
    line_no: Mapped[int] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]]
    # pending | running | fallback | done | failed | reuse_wait (a repeat waiting on reuse_of)
    status: Mapped[str] = mapped_column(String(16), default=Status.PENDING.value)
    tier_index: Mapped[int] = mapped_column(SmallInteger, default=0)
    label: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    final_tier: Mapped[str | None] = mapped_column(String(40))
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    baseline_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)  # attempt rows so far (numbering)
    model_calls: Mapped[int] = mapped_column(Integer, default=0)
    fallback_used: Mapped[bool] = mapped_column(Boolean, default=False)
    # times the fallback task found every link unavailable and put the item off
    deferrals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    # the failure kind (an attempts.outcome: transient, permanent, ...) that handed the
    # item to its fallback chain; the chain defers only failures that may pass (0012)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]
    # models.reuse: the normalised text's hash (with the pipeline's version), and the
    # item whose decision this one waits on or took (a repeat of the same text)
    text_hash: Mapped[int | None] = mapped_column(BigInteger)
    reuse_of: Mapped[int | None] = mapped_column(BigInteger)


class Attempt(Base):
    """One step of one item at one tier: a rule evaluation or one model call."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("item_id", "step"),
        Index("ix_attempts_job_tier", "job_id", "tier_index"),
        Index("ix_attempts_created_at", "created_at"),  # time-range reports (0003)
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigId)  # no foreign keys: see Item
    item_id: Mapped[int] = mapped_column(BigId)
    step: Mapped[int] = mapped_column(Integer)
    tier_index: Mapped[int] = mapped_column(SmallInteger)
    tier: Mapped[TierName]
    # primary | fallback | rules | local | consistency | verifier | shadow
    # | reuse (no call: the decision of ``reuse_of``, an item with the same text)
    role: Mapped[str] = mapped_column(String(12))
    provider: Mapped[ProviderName]
    model: Mapped[ModelName]
    # ok | refusal | malformed | transient | permanent | context | spend_limit
    # | rule_match | rule_miss
    outcome: Mapped[str] = mapped_column(String(16))
    # the decision this step led to, on the last step of a tier visit:
    # accept | escalate | fallback | fail (NULL on a step that was retried)
    decision: Mapped[str | None] = mapped_column(String(12))
    label: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    hedged: Mapped[bool] = mapped_column(Boolean, default=False)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    is_batch: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    http_status: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    reuse_of: Mapped[int | None] = mapped_column(BigInteger)  # role 'reuse': the source item


class RejectedLine(Base):
    __tablename__ = "rejected_lines"
    __table_args__ = (UniqueConstraint("job_id", "source", "line_no"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(500))
    line_no: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

"""Configured backfills: what to take into a job, from where, and when (beat runs them
nightly). Read from the TOML file named by ``CASCADE_BACKFILLS_FILE``; see
:class:`BackfillConfig`. Values only: running one is :mod:`tasks.backfill`'s.
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers.pipeline import ClaudeTier, Pipeline

Mode = Literal["batch", "realtime"]
BACKFILLS_ENV = "CASCADE_BACKFILLS_FILE"


class BackfillSpec(BaseModel):
    """What to backfill: a pipeline file and a source (file, glob or database URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    pipeline: Path
    source: str
    table: str | None = None
    query: str | None = None
    id_column: str = "id"
    text_column: str = "text"
    updated_column: str = "updated_at"
    mode: Mode | None = None  # None: each tier's own mode from the pipeline file
    since: datetime | None = None  # overrides the watermark for this run


class ScheduledBackfill(BackfillSpec):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,99}$")
    at: str = Field(default="02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # UTC, daily


class BackfillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backfill: list[ScheduledBackfill] = []


def backfills_file() -> Path | None:
    raw = os.environ.get(BACKFILLS_ENV)
    return Path(raw) if raw else None


def load_backfills(path: Path | None = None) -> list[ScheduledBackfill]:
    """The configured backfills; [] when none is configured. Raises ValueError when invalid."""
    path = path or backfills_file()
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text())
        config = BackfillConfig.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"backfills file {path}: {exc}") from exc
    base = path.parent
    out = [
        b.model_copy(update={"pipeline": base / b.pipeline}) if not b.pipeline.is_absolute() else b
        for b in config.backfill
    ]
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ValueError(f"backfills file {path}: backfill names must be unique")
    return out


def with_mode(pipeline: Pipeline, mode: Mode | None) -> Pipeline:
    """Every model tier in ``mode`` (batch or realtime); unchanged when ``mode`` is None."""
    if mode is None:
        return pipeline
    tiers = [
        t.model_copy(update={"mode": mode}) if isinstance(t, ClaudeTier) else t
        for t in pipeline.tiers
    ]
    return pipeline.model_copy(update={"tiers": tiers})


def find_backfill(name: str) -> ScheduledBackfill:
    for b in load_backfills():
        if b.name == name:
            return b
    raise LookupError(f"no configured backfill named {name!r} (see {BACKFILLS_ENV})")

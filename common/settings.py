"""One settings object, read from the environment (prefix ``CASCADE_``) once, at start.

Nothing here runs at import time: call :func:`get_settings` where a process starts.
Secrets are ``SecretStr`` so they never print in a repr, a log line or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER = "memory://localhost/"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASCADE_", extra="ignore")

    database_url: str = "sqlite:///cascade.db"
    broker_url: str = EMBEDDED_BROKER
    redis_url: str | None = None
    # Items per broker message: a message carries ids, never texts.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # ... for a rules or local tier, where an item costs microseconds and the message
    # and the two transactions around it are the cost: fewer, bigger batches.
    free_batch_size: int = Field(default=1_000, ge=1, le=10_000)
    # A first tier of rules (without shadow samples) is decided by `cascade submit` as it
    # writes the items: no message, no second write of the row. Off: a worker does it.
    rules_at_submit: bool = True
    # Concurrent model calls in one worker process.
    concurrency: int = Field(default=64, ge=1, le=2_000)
    # How long a claimed item is reserved for the worker that claimed it. A live worker
    # renews the leases it holds every third of this (its heartbeat), so a dead one's
    # items are claimable again within a lease plus a sweep.
    lease_seconds: int = Field(default=30, ge=3)
    # Items a worker process takes beyond its concurrency, claimed and waiting for a
    # call slot, so a slot that frees is filled at once: up to concurrency x this.
    admit_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    # Each worker process sweeps this often (one at a time, under a database lock):
    # items whose lease ran out are sent again at once, items whose message was lost
    # after `sweep_idle_s` unsent. 0 turns the workers' own sweeping off.
    sweep_every_s: float = Field(default=10.0, ge=0)
    sweep_idle_s: int = Field(default=600, ge=1)
    # Most a call's ledger row (and an item's outcome) waits to be committed with others.
    flush_ms: float = Field(default=10.0, ge=0, le=1000)
    # Where each worker process spools its calls as they leave and return (tasks.spool),
    # so a process killed with -9 loses no reply; a local directory shared by the
    # workers of one host. Default: cascade-spool-UID in the temp directory.
    spool_dir: Path | None = None
    # No real model: commands that call models start the built-in fake (also --offline).
    offline: bool = False
    # `submit --wait` / `resume --wait`: nothing finished for this long, look at the fleet
    stall_s: float = Field(default=30.0, gt=0)
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    # Workers default to INFO; interactive commands to WARNING, unless this is set.
    log_level: str | None = None
    prices_file: Path | None = None
    queues: str = "tier.rules,tier.small,tier.large,cascade.fallback"

    # Model API: the standard Anthropic variables, read here and nowhere else.
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, validation_alias="ANTHROPIC_BASE_URL")
    # Per-call bounds owned by our retry policy (the SDK's own retries are off).
    call_timeout_s: float = Field(default=60.0, gt=0)
    max_call_attempts: int = Field(default=3, ge=1, le=10)
    retry_base_s: float = Field(default=0.5, ge=0)
    retry_cap_s: float = Field(default=20.0, ge=0)

    # Per (provider:model) limits the whole fleet honours, as JSON, e.g.
    # {"anthropic:claude-haiku-5-5": {"requests_per_min": 600, "input_tokens_per_min": 400000}}
    rate_limits: dict[str, dict[str, float]] = Field(default_factory=dict)

    # Prometheus metrics of a worker (all its processes) on this port; unset = none.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # Circuit breaker per (provider, model), shared by every worker through Redis.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_recovery_s: float = Field(default=30.0, gt=0)
    breaker_probes: int = Field(default=2, ge=1)
    # A worker process reuses a closed breaker's "allowed" this long instead of asking
    # Redis before every call; a breaker another process opens is seen within it.
    breaker_closed_ttl_ms: int = Field(default=100, ge=0, le=10_000)
    # When the breaker's store (Redis) cannot be reached: "allow" calls (fail open: no
    # protection meanwhile) or "deny" them (fail closed: the fallback chain, then defer).
    breaker_store_down: str = Field(default="allow", pattern="^(allow|deny)$")
    # When every fallback link is unavailable: put the item off, at most this many times.
    max_deferrals: int = Field(default=6, ge=0)
    defer_base_s: float = Field(default=15.0, ge=0)
    defer_cap_s: float = Field(default=300.0, ge=0, le=1800)  # well under the 1 h visibility

    @field_validator("rate_limits")
    @classmethod
    def _limits(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        known = {"requests_per_min", "input_tokens_per_min", "output_tokens_per_min", "burst_s"}
        for key, spec in value.items():
            if ":" not in key:
                raise ValueError(f"{key!r}: name limits by provider:model, e.g. anthropic:{key}")
            unknown = set(spec) - known
            if unknown:
                raise ValueError(f"{key}: unknown limit(s) {sorted(unknown)}; use {sorted(known)}")
            if any(v <= 0 for v in spec.values()):
                raise ValueError(f"{key}: every limit must be positive")
        return value

    @property
    def shared_redis_url(self) -> str | None:
        """Redis for fleet-wide state: CASCADE_REDIS_URL, else a Redis broker's URL."""
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None

    @property
    def embedded(self) -> bool:
        """True when no broker service is configured: worker runs in-process."""
        return self.broker_url.startswith("memory://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(**secrets_from_files(os.environ))


# Docker-style secrets: NAME_FILE holds the value of NAME (which, if set, wins).
FILE_SECRETS = {
    "ANTHROPIC_API_KEY": "ANTHROPIC_API_KEY",
    "CASCADE_DATABASE_URL": "database_url",
    "CASCADE_BROKER_URL": "broker_url",
    "CASCADE_REDIS_URL": "redis_url",
}


class SettingsError(ValueError):
    """A setting cannot be read; the message says which and why (never the value)."""


def secrets_from_files(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, field in FILE_SECRETS.items():
        path = environ.get(f"{var}_FILE")
        if not path or environ.get(var):
            continue
        try:
            values[field] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{var}_FILE: cannot read {path}: {exc.strerror}") from None
    return values

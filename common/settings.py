"""One settings object, read from the environment (prefix ``CASCADE_``) once, at start.

Nothing here runs at import time: call :func:`get_settings` where a process starts.
Secrets are ``SecretStr`` so they never print in a repr, a log line or an error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER = "memory://localhost/"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASCADE_", extra="ignore")

    database_url: str = "sqlite:///cascade.db"
    broker_url: str = EMBEDDED_BROKER
    redis_url: str | None = None
    # Items per broker message: a message carries ids, never texts.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # Concurrent model calls in one worker process.
    concurrency: int = Field(default=64, ge=1, le=2_000)
    # How long a claimed item is reserved for the worker that claimed it.
    lease_seconds: int = Field(default=600, ge=10)
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

    @property
    def embedded(self) -> bool:
        """True when no broker service is configured: worker runs in-process."""
        return self.broker_url.startswith("memory://")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""Skip-or-fail for tests that need a real external service (Postgres, Redis, ...).

Locally a missing service skips the test; under CI (``CI=true``) it fails, so a
broken service container can never turn a CI run green by skipping everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_service(name: str, check: Callable[[], None]) -> None:
    """Run ``check``; if it raises, skip the test (locally) or fail it (under CI)."""
    try:
        check()
    except Exception as exc:
        message = f"{name} is not available: {type(exc).__name__}: {exc}"
        if in_ci():
            pytest.fail(f"{message} (CI=true: a required service must be up)", pytrace=False)
        pytest.skip(message)


def service_redis_url(db: int) -> str:
    """A Redis URL for a test's fixed database number.

    ``CASCADE_TEST_REDIS`` (host:port, default 127.0.0.1:6379) lets two checkouts run
    their suites side by side, each against its own Redis server.
    """
    return f"redis://{os.environ.get('CASCADE_TEST_REDIS', '127.0.0.1:6379')}/{db}"

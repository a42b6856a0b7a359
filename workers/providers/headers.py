"""What an API response's headers say: the ``anthropic-ratelimit-*`` budget left, and
how long to wait before a retry. Plain mappings in, values out: no SDK."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Final

RATE_LIMIT_HEADER_PREFIX: Final = "anthropic-ratelimit-"


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The ``anthropic-ratelimit-*`` headers of a response (names lower-cased); None if none."""
    found = {
        name.lower(): value
        for name, value in headers.items()
        if name.lower().startswith(RATE_LIMIT_HEADER_PREFIX)
    }
    return found or None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)

"""The fake's own rate limits: per-model token buckets and the ``anthropic-ratelimit-*`` headers.

Off unless configured (:class:`FakeRateLimits` on :class:`~cascade.fakeapi.wire.FakeConfig`,
or ``--requests-per-min`` and friends on the command line); then it behaves like the
API's limits (anthropic-api-facts.md §3): per model, a bucket per dimension that
holds one minute's worth and refills continuously; a request takes 1 request, its
input tokens and its ``max_tokens`` as output tokens (the API estimates output from
``max_tokens`` at the start); a request that does not fit gets a 429 with
``retry-after``. Every reply of the Messages endpoint then carries, per configured
dimension, ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}``
(reset in RFC 3339: when the bucket is full again), and with any token limit the
``anthropic-ratelimit-tokens-*`` trio for the most restrictive of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

PREFIX: Final = "anthropic-ratelimit-"
NAMES: Final = ("requests", "input-tokens", "output-tokens")


@dataclass(frozen=True, slots=True)
class FakeRateLimits:
    """Per-minute limits the fake enforces and reports per model; None: not limited, no headers."""

    requests_per_min: float | None = None
    input_tokens_per_min: float | None = None
    output_tokens_per_min: float | None = None

    def __post_init__(self) -> None:
        for value in self.per_min():
            if value is not None and value <= 0:
                raise ValueError(f"a fake rate limit must be positive or None, got {value!r}")

    def per_min(self) -> tuple[float | None, float | None, float | None]:
        return (self.requests_per_min, self.input_tokens_per_min, self.output_tokens_per_min)


@dataclass(frozen=True, slots=True)
class Admission:
    """One request against the buckets: let through or not, and the headers to send."""

    ok: bool
    headers: dict[str, str]
    retry_after_s: float = 0.0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeBuckets:
    """Token buckets per model. Touched from the server's loop thread only."""

    limits: FakeRateLimits
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # only for the ``-reset`` timestamps
    # model -> (levels per dimension, when they were last refilled)
    _buckets: dict[str, tuple[list[float], float]] = field(default_factory=dict)

    def take(self, model: str, input_tokens: int, max_tokens: int) -> Admission:
        now = self.clock()
        per_min = self.limits.per_min()
        found = self._buckets.get(model)
        if found is None:
            levels = [limit or 0.0 for limit in per_min]  # a fresh bucket is full
        else:
            levels, then = found
            elapsed = max(now - then, 0.0)
            levels = [
                min(limit, level + elapsed * limit / 60.0) if limit else 0.0
                for level, limit in zip(levels, per_min, strict=True)
            ]
        cost = (1, input_tokens, max_tokens)
        short = 0.0  # seconds until the scarcest dimension holds this request
        for level, limit, units in zip(levels, per_min, cost, strict=True):
            if limit is not None:
                need = min(units, limit)  # one bigger than the bucket waits for a full one
                if level < need:
                    short = max(short, (need - level) * 60.0 / limit)
        ok = short == 0.0
        if ok:
            levels = [
                level - units if limit else 0.0
                for level, limit, units in zip(levels, per_min, cost, strict=True)
            ]
        self._buckets[model] = (levels, now)
        return Admission(ok, self._headers(levels), short)

    def _headers(self, levels: list[float]) -> dict[str, str]:
        wall = self.wall()
        headers: dict[str, str] = {}
        tightest: tuple[float, float, float] | None = None  # (remaining, limit, refill s)
        for d, (name, limit) in enumerate(zip(NAMES, self.limits.per_min(), strict=True)):
            if limit is None:
                continue
            remaining = max(math.floor(levels[d]), 0)
            refill_s = max(limit - levels[d], 0.0) * 60.0 / limit
            headers[f"{PREFIX}{name}-limit"] = _number(limit)
            headers[f"{PREFIX}{name}-remaining"] = str(remaining)
            headers[f"{PREFIX}{name}-reset"] = rfc3339(wall + refill_s)
            if d > 0 and (tightest is None or remaining < tightest[0]):
                tightest = (remaining, limit, refill_s)
        if tightest is not None:
            headers[f"{PREFIX}tokens-limit"] = _number(tightest[1])
            headers[f"{PREFIX}tokens-remaining"] = str(int(tightest[0]))
            headers[f"{PREFIX}tokens-reset"] = rfc3339(wall + tightest[2])
        return headers

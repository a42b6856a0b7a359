"""Latency shapes of the fake: fixed, normal or lognormal, with a cap, from an injected RNG.

Real model latency is heavy-tailed: the median is under a second, the p99 several
seconds. A lognormal with median ``m`` and shape ``sigma`` is ``m * exp(sigma * Z)``
with ``Z`` standard normal; its mean is ``m * exp(sigma**2 / 2)`` (700 ms and 0.9
give about 1,050 ms), before the cap. ``normal`` reads ``sigma`` as a standard
deviation in milliseconds. Every draw is clamped to ``[0, cap_ms]``.

:func:`sample_ms` is pure but for the RNG it is given, so a seeded ``random.Random``
gives the same sequence every time.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

Dist = Literal["fixed", "normal", "lognormal"]
DISTS: Final = ("fixed", "normal", "lognormal")


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """How long the fake waits before answering one call (milliseconds)."""

    dist: Dist = "fixed"
    median_ms: float = 0.0
    sigma: float = 0.0  # lognormal: the shape; normal: the standard deviation in ms
    cap_ms: float | None = None  # None: no cap

    def __post_init__(self) -> None:
        if self.dist not in DISTS:
            raise ValueError(f"latency dist must be one of {', '.join(DISTS)}, got {self.dist!r}")
        if self.median_ms < 0 or self.sigma < 0:
            raise ValueError("latency median_ms and sigma must not be negative")
        if self.cap_ms is not None and self.cap_ms < 0:
            raise ValueError("latency cap_ms must not be negative")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LatencySpec:
        """From ``{"dist": "lognormal", "median_ms": 700, "sigma": 0.9, "cap_ms": 20000}``."""
        known = {"dist", "median_ms", "sigma", "cap_ms"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown latency keys: {sorted(unknown)}; use {sorted(known)}")
        cap = data.get("cap_ms")
        return cls(
            dist=cast(Dist, str(data.get("dist", "fixed"))),
            median_ms=float(data.get("median_ms", 0.0)),
            sigma=float(data.get("sigma", 0.0)),
            cap_ms=None if cap is None else float(cap),
        )

    def mean_ms(self) -> float:
        """The uncapped mean: what a constant latency must be to match this shape's work."""
        if self.dist == "lognormal":
            return self.median_ms * math.exp(self.sigma**2 / 2)
        return self.median_ms


def sample_ms(spec: LatencySpec, rng: random.Random) -> float:
    """One latency draw in milliseconds. ``fixed`` draws nothing from ``rng``."""
    if spec.dist == "fixed":
        value = spec.median_ms
    elif spec.dist == "normal":
        value = rng.gauss(spec.median_ms, spec.sigma)
    else:
        value = spec.median_ms * math.exp(spec.sigma * rng.gauss(0.0, 1.0))
    if spec.cap_ms is not None:
        value = min(value, spec.cap_ms)
    return max(value, 0.0)


def parse_model_latency(raw: str | Mapping[str, Any] | None) -> dict[str, LatencySpec]:
    """``{"model": {"dist": ..., ...}}`` (JSON text or a mapping) -> model -> spec."""
    if raw is None:
        return {}
    data = raw
    if isinstance(raw, str):
        data = json.loads(raw)
    if not isinstance(data, Mapping):
        raise ValueError("model latency must be a JSON object of model -> latency spec")
    return {str(m): LatencySpec.from_mapping(s) for m, s in data.items()}

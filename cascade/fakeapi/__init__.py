"""The project's own fake of the Anthropic Messages API (tests, benchmarks, offline demo)."""

from __future__ import annotations

from cascade.fakeapi.brain import Verdict, classify
from cascade.fakeapi.latency import LatencySpec, sample_ms
from cascade.fakeapi.ratelimits import FakeRateLimits
from cascade.fakeapi.server import FakeServer, make_app
from cascade.fakeapi.wire import FakeConfig, Fault

__all__ = [
    "FakeConfig",
    "FakeRateLimits",
    "FakeServer",
    "Fault",
    "LatencySpec",
    "Verdict",
    "classify",
    "make_app",
    "sample_ms",
]

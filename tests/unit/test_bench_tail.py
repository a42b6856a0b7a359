"""The realistic scenario's figures from a request log (bench/tail.py), on made-up calls."""

from __future__ import annotations

import pytest

from bench import accounting as acc
from bench.tail import handoff, limit_share, share_while_busy

A, B = "model-a", "model-b"


def call(n: int, model: str, received: float, item: str, status: int = 200) -> acc.Call:
    return acc.Call(
        f"r{n}", model, "ok", status, item, (0, 0, 0, 0), received, received + 1, received + 1
    )


def two_phases() -> list[acc.Call]:
    """A at 60/min for 100 s; B (every A item, escalated) idle until A is done, then
    60/min for 100 s; plus ten 429s on A that must not count."""
    calls = [call(i, A, float(i), f"i{i}") for i in range(100)]
    calls += [call(1000 + i, B, 100.0 + i, f"i{i}") for i in range(100)]
    calls += [call(2000 + i, A, 50.0 + i / 10, "x", status=429) for i in range(10)]
    return calls


def test_share_while_busy_counts_each_model_over_its_own_busy_time() -> None:
    calls = two_phases()
    busy = share_while_busy(calls, 60.0)
    # each model ran at its limit while it had work
    assert busy[A]["share"] == pytest.approx(1.0, abs=0.02)
    assert busy[B]["share"] == pytest.approx(1.0, abs=0.02)
    # the common window (middle 80 % of all calls) halves both: each was idle half of it
    common = limit_share(calls, 60.0)
    assert common[A]["share"] < 0.6
    assert common[B]["share"] < 0.6


def test_handoff_measures_the_wait_between_tiers_and_the_second_tiers_starvation() -> None:
    out = handoff(two_phases(), A, B)
    assert out["items"] == 100
    assert out["wait_s"]["p50"] == pytest.approx(99.0)  # each item waited for A to finish
    assert out[f"{B}_calls_per_s_while_{A}_busy"] == 0.0
    assert out[f"{B}_calls_per_s_after"] == pytest.approx(1.0, abs=0.02)

"""Latency shapes of the fake: the pure sampler, and how the server picks a shape."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from cascade.fakeapi import FakeConfig, Fault, LatencySpec, sample_ms
from cascade.fakeapi.__main__ import latency, parse_args
from cascade.fakeapi.latency import parse_model_latency
from cascade.fakeapi.wire import FakeState

LOGNORMAL = LatencySpec("lognormal", median_ms=700, sigma=0.9, cap_ms=20_000)


def draws(spec: LatencySpec, n: int = 10_000, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [sample_ms(spec, rng) for _ in range(n)]


def test_lognormal_median_cap_and_tail() -> None:
    values = draws(LOGNORMAL)
    # 10k draws: the sample median is within a few percent of the configured one
    assert statistics.median(values) == pytest.approx(700, rel=0.05)
    assert max(values) <= 20_000
    assert min(values) > 0
    # heavy tail: p99 of exp(0.9 Z) is exp(0.9 * 2.326) ≈ 8.1 times the median
    p99 = sorted(values)[9_899]
    assert p99 == pytest.approx(700 * math.exp(0.9 * 2.326), rel=0.15)
    assert statistics.fmean(values) == pytest.approx(LOGNORMAL.mean_ms(), rel=0.05)


def test_the_cap_clamps_every_draw() -> None:
    spec = LatencySpec("lognormal", median_ms=700, sigma=2.0, cap_ms=1_500)
    values = draws(spec)
    assert max(values) == 1_500
    # P(700 e^{2Z} > 1500) = P(Z > 0.381) ≈ 35 %: that many draws sit at the cap
    assert sum(v == 1_500 for v in values) / len(values) == pytest.approx(0.35, abs=0.03)


def test_fixed_is_fixed_and_draws_nothing() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    assert {sample_ms(LatencySpec("fixed", median_ms=250), rng) for _ in range(100)} == {250}
    assert rng.getstate() == state


def test_normal_has_its_mean_and_spread_and_never_goes_negative() -> None:
    values = draws(LatencySpec("normal", median_ms=100, sigma=20))
    assert statistics.fmean(values) == pytest.approx(100, abs=1)
    assert statistics.stdev(values) == pytest.approx(20, rel=0.05)
    assert min(draws(LatencySpec("normal", median_ms=10, sigma=50))) == 0.0


def test_same_seed_same_sequence() -> None:
    assert draws(LOGNORMAL, 200, seed=3) == draws(LOGNORMAL, 200, seed=3)
    assert draws(LOGNORMAL, 200, seed=3) != draws(LOGNORMAL, 200, seed=4)


def test_mean_of_the_lognormal() -> None:
    assert LOGNORMAL.mean_ms() == pytest.approx(1049.5, abs=0.5)


@pytest.mark.parametrize(
    "bad",
    [
        {"dist": "pareto"},  # not a shape we draw
        {"median_ms": -1},  # a negative wait
        {"dist": "lognormal", "sigma": 0.9, "nope": 1},  # a typo must not pass silently
    ],
)
def test_bad_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="latency"):
        LatencySpec.from_mapping(bad)


def test_parse_model_latency_from_json() -> None:
    got = parse_model_latency(
        '{"claude-haiku-5-5": {"dist": "lognormal", "median_ms": 700, "sigma": 0.9, '
        '"cap_ms": 20000}}'
    )
    assert got == {"claude-haiku-5-5": LOGNORMAL}
    assert parse_model_latency(None) == {}


def test_the_command_line_builds_the_shape() -> None:
    args = parse_args(
        [
            "--latency-dist",
            "lognormal",
            "--latency-median-ms",
            "700",
            "--latency-sigma",
            "0.9",
            "--latency-cap-ms",
            "20000",
        ]
    )
    assert latency(args) == LOGNORMAL
    # no --latency-dist: the old --latency-ms ± --jitter-ms, untouched
    assert latency(parse_args(["--latency-ms", "100", "--jitter-ms", "10"])) is None
    # fixed with no median given: --latency-ms is the value
    assert latency(parse_args(["--latency-dist", "fixed", "--latency-ms", "40"])) == LatencySpec(
        "fixed", 40.0
    )


def test_which_latency_a_model_gets() -> None:
    config = FakeConfig(
        latency_ms=100,
        latency=LatencySpec("fixed", 300),
        model_latency_ms={"claude-opus-5": 50},
        model_latency={"claude-haiku-5-5": LatencySpec("fixed", 700)},
        faults={"claude-sonnet-5": Fault(latency_ms=5)},
    )
    state = FakeState(config)
    assert state.delay_s("claude-haiku-5-5") == 0.7  # its own shape
    assert state.delay_s("claude-opus-5") == 0.05  # model_latency_ms, as before
    assert state.delay_s("claude-sonnet-5") == 0.005  # a fault's latency_ms wins
    assert state.delay_s("claude-haiku-4-5") == 0.3  # the default shape, over latency_ms


def test_without_a_shape_the_old_latency_and_jitter_apply() -> None:
    state = FakeState(FakeConfig(latency_ms=100, jitter_ms=10, seed=5))
    rng = random.Random(5)
    expected = [(100 + rng.uniform(-10, 10)) / 1000 for _ in range(5)]
    assert [state.delay_s("claude-haiku-4-5") for _ in range(5)] == expected


def test_shapes_do_not_shift_the_fault_draws() -> None:
    """A lognormal run meets the same random faults as a constant one of the same seed."""
    plain = FakeState(FakeConfig(seed=9))
    shaped = FakeState(FakeConfig(seed=9, latency=LOGNORMAL))
    for state in (plain, shaped):
        state.delay_s("claude-haiku-4-5")
    assert [plain.chance(0.5) for _ in range(50)] == [shaped.chance(0.5) for _ in range(50)]

"""Exact binomial bounds and the fixed-sequence threshold search (workers.guarantee).

Reference values are computed here independently of the module: the binomial CDF
from its definition, sum over i <= k of C(n, i) p^i (1 - p)^(n - i), in exact
rational arithmetic (``fractions.Fraction``), and the Clopper–Pearson bound by
bisection on that exact CDF to 2^-44. The literal constants beside them were
also checked against ``scipy.stats.beta.ppf(confidence, k + 1, n - k)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fractions import Fraction

import pytest

from workers.guarantee import (
    Judged,
    binom_cdf,
    certify,
    certify_by_label,
    min_samples,
    samples_needed,
    shadow_rate_for,
    upper_bound,
)


def exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)), Fraction(0))


def exact_upper(k: int, n: int, confidence: Fraction) -> float:
    lo, hi = Fraction(k, n), Fraction(1)
    for _ in range(44):
        mid = (lo + hi) / 2
        if exact_cdf(k, n, mid) > 1 - confidence:
            lo = mid
        else:
            hi = mid
    return float(hi)


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (3, 50, Fraction(7, 100)),  # the middle of the distribution
        (0, 20, Fraction(1, 10)),  # no error: (1 - p)^n
        (10, 200, Fraction(1, 50)),  # far in the upper tail
        (49, 50, Fraction(1, 2)),  # all but one
    ],
)
def test_binomial_cdf_matches_the_definition(k: int, n: int, p: Fraction) -> None:
    assert binom_cdf(k, n, float(p)) == pytest.approx(float(exact_cdf(k, n, p)), rel=1e-12)


# (errors, n, confidence, the bound: scipy.stats.beta.ppf(confidence, k + 1, n - k))
BOUNDS = [
    (0, 100, "0.95", 0.029513049607039925),  # zero errors: 1 - 0.05^(1/100), the "rule of 3"
    (1, 100, "0.95", 0.046559811453538935),  # one error in a hundred
    (3, 50, "0.9", 0.1287564225866019),  # a looser confidence level
    (5, 400, "0.95", 0.026101799066913275),  # 1.25 % seen: the bound is about twice that
    (12, 300, "0.99", 0.07470109033295376),  # a stricter level widens it
    (300, 10000, "0.95", 0.032959435898078045),  # past 200 errors: the continued fraction
]


@pytest.mark.parametrize(("k", "n", "confidence", "expected"), BOUNDS)
def test_clopper_pearson_upper_bound(k: int, n: int, confidence: str, expected: float) -> None:
    got = upper_bound(k, n, float(confidence))
    if n <= 400:  # exact rationals get slow past that
        assert got == pytest.approx(exact_upper(k, n, Fraction(confidence)), abs=1e-12)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (0, 0, 1.0),  # nothing seen: nothing can be claimed
        (7, 7, 1.0),  # every answer wrong
    ],
)
def test_upper_bound_edges(k: int, n: int, expected: float) -> None:
    assert upper_bound(k, n, 0.95) == expected


def test_min_samples_and_samples_needed() -> None:
    # (1 - 0.03)^n <= 0.05 first at n = 99; for 2 % at n = 149
    assert min_samples(0.03, 0.95) == 99
    assert min_samples(0.02, 0.95) == 149
    assert upper_bound(0, 99, 0.95) <= 0.03 < upper_bound(0, 98, 0.95)
    # at a 2 % error rate, a 3 % bound needs 846 samples (2 % of 846 rounded up: 17 errors)
    assert samples_needed(2, 100, 0.03, 0.95) == 846
    assert upper_bound(17, 846, 0.95) <= 0.03 < upper_bound(17, 845, 0.95)
    # a rate at or above the target can never be certified
    assert samples_needed(3, 100, 0.03, 0.95) is None
    assert samples_needed(0, 0, 0.02, 0.95) == 149


def answers(conf: float, n: int, wrong: int) -> list[Judged]:
    return [Judged(conf, i < wrong) for i in range(n)]


GRID = (0.9, 0.8, 0.7)


def test_certify_walks_down_and_stops_at_the_first_failure() -> None:
    judged = answers(0.95, 150, 0) + answers(0.85, 100, 2) + answers(0.75, 100, 10)
    cert = certify(judged, 0.03, 0.95, GRID)
    assert [(t.threshold, t.n, t.errors, t.passed) for t in cert.tests] == [
        (0.9, 150, 0, True),  # bound 1 - 0.05^(1/150) = 0.0198
        (0.8, 250, 2, True),
        (0.7, 350, 12, False),  # 3.4 % seen: no number of samples certifies it
    ]
    assert cert.tests[1].upper == pytest.approx(exact_upper(2, 250, Fraction("0.95")), abs=1e-12)
    assert cert.threshold == 0.8
    assert cert.needed is None


def test_a_failed_high_threshold_stops_the_search_even_if_a_lower_one_would_pass() -> None:
    # 5 errors in the top 120 fail the first test; pooled with 900 right answers below,
    # 0.8 would pass on its own, but testing it too would spend the error budget twice.
    judged = answers(0.95, 120, 5) + answers(0.85, 900, 0)
    cert = certify(judged, 0.03, 0.95, GRID)
    assert cert.threshold is None
    assert [t.threshold for t in cert.tests] == [0.9]
    assert upper_bound(5, 1020, 0.95) <= 0.03
    assert cert.needed is None  # 4.2 % at the stopping point


def test_thresholds_with_too_few_answers_to_ever_pass_are_skipped() -> None:
    # only 40 answers at 0.9 (fewer than the 99 any pass needs): no test there
    judged = answers(0.95, 40, 0) + answers(0.85, 100, 0)
    cert = certify(judged, 0.03, 0.95, GRID)
    assert [(t.threshold, t.n) for t in cert.tests] == [(0.8, 140), (0.7, 140)]
    assert cert.threshold == 0.7


def test_too_few_samples_say_how_many_are_needed() -> None:
    cert = certify(answers(0.95, 60, 0), 0.02, 0.95, GRID)
    assert cert.threshold is None
    assert cert.needed == 149  # zero errors so far: 149 samples give a 2 % bound
    assert shadow_rate_for(149 - 60, accepted_per_job=1000) == 0.089


def test_certify_by_label_keeps_labels_apart() -> None:
    got = certify_by_label(
        [("spam", j) for j in answers(0.95, 200, 0)] + [("ham", j) for j in answers(0.95, 200, 20)],
        ["ham", "spam"],
        0.03,
        0.95,
        GRID,
    )
    assert got["spam"].threshold == 0.7
    assert got["ham"].threshold is None


def test_the_guarantee_holds_on_simulated_data() -> None:
    """Error rising as confidence falls; the certified threshold's true error is within
    the target in at least 95 % of 200 draws (it is in practice far more often)."""
    rng = random.Random(7)
    grid = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)

    def true_error(t: float) -> float:  # confidence uniform on [0.5, 1], error 1.1 x (1 - c)^2
        lo = max(t, 0.5)
        return 1.1 * ((1 - lo) ** 3 / 3) / (1 - lo)

    held = 0
    for _ in range(200):
        judged = []
        for _ in range(500):
            c = rng.uniform(0.5, 1.0)
            judged.append(Judged(c, rng.random() < 1.1 * (1 - c) ** 2))
        cert = certify(judged, 0.03, 0.95, grid)
        held += cert.threshold is None or true_error(cert.threshold) <= 0.03
    assert held >= 190


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        # more than 200 errors: the incomplete beta path, on each side of its mean
        (300, 1000, Fraction(4, 10)),  # the continued fraction of I_x(a, b) directly
        (300, 1000, Fraction(3, 10)),  # at the mean: through 1 - I_(1-x)(b, a)
        (250, 1000, Fraction(2, 10)),  # in the upper tail
    ],
)
def test_binomial_cdf_beyond_the_summed_range_matches_the_definition(
    k: int, n: int, p: Fraction
) -> None:
    assert binom_cdf(k, n, float(p)) == pytest.approx(float(exact_cdf(k, n, p)), rel=1e-9)


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (-1, 10, 0.5, 0.0),  # fewer than no errors: impossible
        (10, 10, 0.5, 1.0),  # at most all of them: certain
        (3, 10, 0.0, 1.0),  # a model that never errs
        (3, 10, 1.0, 0.0),  # a model that always errs: more than 3 errors for sure
        (300, 1000, 1.0, 0.0),  # likewise on the beta path
    ],
)
def test_binomial_cdf_edges(k: int, n: int, p: float, expected: float) -> None:
    assert binom_cdf(k, n, p) == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: upper_bound(0, 10, 1.0), "confidence must be within (0, 1), got 1.0"),
        (lambda: upper_bound(0, 10, 0.0), "confidence must be within (0, 1), got 0.0"),
        (lambda: upper_bound(11, 10, 0.95), "need 0 <= errors <= n, got 11 of 10"),
        (lambda: upper_bound(-1, 10, 0.95), "need 0 <= errors <= n, got -1 of 10"),
        (lambda: certify([], 0.0, 0.95), "max_error must be within (0, 1), got 0.0"),
        (lambda: certify([], 1.0, 0.95), "max_error must be within (0, 1), got 1.0"),
    ],
)
def test_nonsense_arguments_are_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()

    assert str(info.value) == message


@pytest.mark.parametrize(
    ("needed", "per_job", "current", "rate"),
    [
        (0, 1000, 0.05, 0.05),  # enough samples already: the rate stays
        (-3, 1000, 0.0, 0.0),
        (10, 0, 0.0, 1.0),  # a job that accepts nothing: sample all it does accept
        (10, 1000, 0.2, 0.2),  # never lowers a higher current rate
        (1, 3000, 0.0, 0.001),  # rounded up to a thousandth, never to zero
        (5000, 1000, 0.0, 1.0),  # capped at every item
    ],
)
def test_shadow_rate_for_edges(needed: int, per_job: int, current: float, rate: float) -> None:
    assert shadow_rate_for(needed, accepted_per_job=per_job, current=current) == rate

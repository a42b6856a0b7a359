"""Thresholds with a stated guarantee: exact binomial bounds and a corrected search.

Pure functions over values, no I/O. The question, per tier and per label: "how low
may ``min_confidence`` go so that, among the answers the tier accepts with this
label, the error rate is at most ``max_error`` — and we are ``confidence`` sure?"

- **The bound** (:func:`upper_bound`): the one-sided Clopper–Pearson upper bound on
  a binomial rate: the largest p for which seeing at most ``errors`` in ``n`` still
  has probability ``1 - confidence``. Exact (the binomial CDF summed term by term
  in log space, then bisection), so it never claims more than the data show.
- **The search** (:func:`certify`): fixed-sequence testing (as in Learn-then-Test,
  Angelopoulos et al. 2021). The thresholds are tested in a fixed order, highest
  first; each test is "the upper bound of the error among items at or above it is
  at most ``max_error``"; the search stops at the first that fails. Every test is
  at the full level and still, with probability at least ``confidence``, no
  certified threshold has a true error above the target: a wrong certification
  needs the first wrong test in the sequence to pass, which happens with
  probability at most ``1 - confidence``. Looking at many thresholds costs no
  correction; the price is that a failed test stops the search. A threshold that
  holds fewer answers than any pass needs (:func:`min_samples`: 99 for 3 % at 95 %)
  is skipped rather than failed, since no outcome could pass there. Which thresholds
  are skipped depends on the counts only, never on whether an answer was right
  (the counts do come from the same data, so this is a practical departure from the
  textbook procedure; the simulated check in the tests and the replay measure it).
- **How many more** (:func:`samples_needed`): where the search stops, how many
  judged samples at that threshold would certify it if the error rate stays what
  was seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Tested highest first; the top is below 1.0 so a calibrated score can reach it.
GUARANTEE_GRID: tuple[float, ...] = (
    0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.9, 0.88, 0.86, 0.84, 0.82,
    0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5,
)  # fmt: skip
_BISECT_STEPS = 80  # halves the interval to below 1e-24: far past float precision


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p).

    Up to ``_SUM_UP_TO`` errors, summed term by term in log space; beyond, through
    the regularized incomplete beta function, I_{1-p}(n - k, k + 1), by its
    continued fraction (a few dozen steps whatever n).
    """
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    if k > _SUM_UP_TO:
        return _reg_beta(n - k, k + 1, 1.0 - p)
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        + (n - i) * log_q
        for i in range(k + 1)
    ]  # fmt: skip
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


_SUM_UP_TO = 200
_TINY = 1e-300


def _reg_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b), by Lentz's continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
        + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def upper_bound(errors: int, n: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound on the error rate (1.0 when n is 0).

    The p with P(X <= errors; n, p) = 1 - confidence; the true rate is below it
    with probability at least ``confidence``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n, got {errors} of {n}")
    if n == 0 or errors == n:
        return 1.0
    alpha = 1.0 - confidence
    if errors == 0:
        return 1.0 - math.pow(alpha, 1.0 / n)  # (1 - p)^n = alpha, in closed form
    lo, hi = errors / n, 1.0
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        if binom_cdf(errors, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def samples_needed(
    errors: int, n: int, max_error: float, confidence: float, *, limit: int = 1_000_000
) -> int | None:
    """Judged samples in all for the bound to reach ``max_error`` at the error rate seen.

    Assumes the rate stays ``errors / n`` (none seen: zero); ``None`` when that rate
    is at or above the target (no number of samples certifies it) or past ``limit``.
    """
    rate = errors / n if n else 0.0
    if rate >= max_error:
        return None

    def enough(m: int) -> bool:
        return upper_bound(min(m, math.ceil(rate * m - 1e-9)), m, confidence) <= max_error

    hi = max(1, n)
    while not enough(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = 0  # enough(lo) is false or lo is 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


def min_samples(max_error: float, confidence: float) -> int:
    """The fewest samples whose bound can reach ``max_error`` (with no error at all)."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-max_error) - 1e-12)


@dataclass(frozen=True, slots=True)
class Judged:
    """One answer of a tier with a reference: its confidence and whether it was wrong."""

    confidence: float
    wrong: bool


@dataclass(frozen=True, slots=True)
class Test:
    """One step of the sequence: the answers at or above ``threshold`` and their bound."""

    threshold: float
    n: int
    errors: int
    upper: float
    passed: bool


@dataclass(frozen=True, slots=True)
class Certificate:
    """The search's result for one tier and label."""

    threshold: float | None  # the lowest certified threshold; None: none could be
    tests: tuple[Test, ...]  # every test made, highest threshold first
    max_error: float
    confidence: float
    needed: int | None  # judged samples in all that would certify the first failed test

    @property
    def certified(self) -> Test | None:
        passed = [t for t in self.tests if t.passed]
        return passed[-1] if passed else None

    @property
    def stopped_at(self) -> Test | None:
        """The first test that failed (where more samples would help)."""
        return next((t for t in self.tests if not t.passed), None)


def certify(
    judged: Sequence[Judged],
    max_error: float,
    confidence: float,
    grid: Iterable[float] = GUARANTEE_GRID,
) -> Certificate:
    """The lowest threshold whose error bound is at most ``max_error``, by fixed sequence.

    An answer counts at threshold t when its confidence is at least t (as the
    decision accepts). Thresholds are tested from the highest down and the search
    stops at the first whose upper bound exceeds the target.
    """
    if not 0.0 < max_error < 1.0:
        raise ValueError(f"max_error must be within (0, 1), got {max_error}")
    ranked = sorted(judged, key=lambda j: -j.confidence)
    tests: list[Test] = []
    chosen: float | None = None
    needed: int | None = None
    n = errors = 0
    fewest = min_samples(max_error, confidence)
    ordered = sorted(set(grid), reverse=True)
    for t in ordered:
        while n < len(ranked) and ranked[n].confidence >= t:
            errors += ranked[n].wrong
            n += 1
        if n < fewest and t != ordered[-1]:
            continue  # no outcome could pass here: not a test (depends on counts only)
        upper = upper_bound(errors, n, confidence)
        passed = upper <= max_error
        tests.append(Test(t, n, errors, upper, passed))
        if not passed:
            needed = samples_needed(errors, n, max_error, confidence)
            break
        chosen = t
    return Certificate(chosen, tuple(tests), max_error, confidence, needed)


def certify_by_label(
    answers: Iterable[tuple[str, Judged]],
    labels: Sequence[str],
    max_error: float,
    confidence: float,
    grid: Iterable[float] = GUARANTEE_GRID,
) -> dict[str, Certificate]:
    """:func:`certify` once per label, over the answers that gave that label."""
    grid = tuple(grid)
    by_label: dict[str, list[Judged]] = {label: [] for label in labels}
    for label, j in answers:
        by_label.setdefault(label, []).append(j)
    return {label: certify(js, max_error, confidence, grid) for label, js in by_label.items()}


def shadow_rate_for(needed_more: int, accepted_per_job: int, current: float = 0.0) -> float:
    """The shadow rate that gathers ``needed_more`` samples in one more job of this size."""
    if needed_more <= 0:
        return current
    if accepted_per_job <= 0:
        return 1.0
    return max(current, min(1.0, math.ceil(1000 * needed_more / accepted_per_job) / 1000))

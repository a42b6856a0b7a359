"""``python -m bench.replay.headroom``: how much saving a guarantee could buy on this data.

The guarantee mode certifies thresholds on the train half and measures the test
half. This asks what the *best* thresholds would have saved, chosen with hindsight
on the test half itself, under the same constraints (each tier's error among the
items it accepts at most the target, accuracy at least GPT-4's):

* ``realized``: the test half's realized error at most the target. No method that
  sets its thresholds before seeing the test half can do better on average.
* ``bound``: the exact one-sided upper bound (Clopper-Pearson, the confidence given)
  on the test half's *own* counts at most the target: a certificate computed on
  1,080 calibration items drawn from exactly the distribution it is applied to, with
  no price paid for the search. More generous than any valid method with that many
  calibration items (ours has the 1,080 train items and pays for its search).

Both are given per tier (labels pooled, the replay's check) and per label (the
product's guarantee). A tier that accepts nothing is left out (no cost). The
``certified`` column is the guarantee mode itself (the same thresholds, simulated
without the engine: it matches the engine run to the item).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from bench.replay.data import DEFAULT_CSV, Row, load, split
from bench.replay.guarantee import BACKUP, LARGE, SMALL, calibrate, thresholds
from bench.replay.signals import CrossFit, fold_models, out_of_fold_p_yes, p_yes
from workers.guarantee import upper_bound

GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(51))  # 0.50 ... 1.00
Cut = dict[bool, float | None]  # per label (True: "yes"), None: never accepted


@dataclass(frozen=True)
class Half:
    """The test half as arrays: what each tier answers, whether right, what it costs."""

    yes: np.ndarray  # local tier says "yes"
    conf: np.ndarray  # local tier's confidence
    local_ok: np.ndarray
    small_valid: np.ndarray
    small_yes: np.ndarray
    small_conf: np.ndarray
    small_ok: np.ndarray
    large_ok: np.ndarray  # GPT-4, or the fallback model where GPT-4's answer is malformed
    gpt4_ok: np.ndarray  # GPT-4 alone (no fallback)
    small_cost: np.ndarray
    large_cost: np.ndarray
    gpt4_cost: float

    @classmethod
    def of(cls, rows: Sequence[Row], p: Sequence[float], small_conf: Sequence[float]) -> Half:
        def arr(values: Sequence[object] | list[bool] | list[int]) -> np.ndarray:
            return np.array(values)

        pa = arr(list(p))
        return cls(
            yes=pa >= 0.5,
            conf=np.maximum(pa, 1 - pa),
            local_ok=(pa >= 0.5) == arr([r.gold == "yes" for r in rows]),
            small_valid=arr([r.valid(SMALL) for r in rows]),
            small_yes=arr([r.answers[SMALL].strip().lower() == "yes" for r in rows]),
            small_conf=arr(list(small_conf)),
            small_ok=arr([r.ok[SMALL] for r in rows]),
            large_ok=arr([r.ok[LARGE] if r.valid(LARGE) else r.ok[BACKUP] for r in rows]),
            gpt4_ok=arr([r.ok[LARGE] for r in rows]),
            small_cost=arr([r.cost_nanos[SMALL] for r in rows]).astype(float),
            large_cost=arr(
                [
                    r.cost_nanos[LARGE] + (0 if r.valid(LARGE) else r.cost_nanos[BACKUP])
                    for r in rows
                ]
            ).astype(float),
            gpt4_cost=float(sum(r.cost_nanos[LARGE] for r in rows)),
        )


def accepted(yes: np.ndarray, conf: np.ndarray, cut: Cut) -> np.ndarray:
    out = np.zeros(len(conf), dtype=bool)
    for label, t in cut.items():
        if t is not None:
            out |= (yes == label) & (conf >= t)
    return out


@cache
def _bound(errors: int, n: int, confidence: float) -> float:
    return upper_bound(errors, n, confidence)


def _fits(wrong: np.ndarray, how: str, target: float, confidence: float) -> bool:
    return _fits_counts(int(wrong.sum()), len(wrong), how, target, confidence)


def outcome(h: Half, local: Cut, small: Cut) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(saving vs GPT-4 alone, accuracy, local accepted, small accepted); an idle small tier
    (it accepts nothing) is left out."""
    la = accepted(h.yes, h.conf, local)
    sa = ~la & h.small_valid & accepted(h.small_yes, h.small_conf, small)
    to_large = ~la & ~sa
    right = np.where(la, h.local_ok, np.where(sa, h.small_ok, h.large_ok))
    idle = all(t is None for t in small.values())
    cost = (0.0 if idle else h.small_cost[~la].sum()) + h.large_cost[to_large].sum()
    return 1 - cost / h.gpt4_cost, float(right.mean()), la, sa


def best(h: Half, how: str, per_label: bool, target: float, confidence: float) -> float:
    """The best saving meeting the constraints: per-label thresholds at the local tier,
    one for both labels at the small tier (a per-label search there takes minutes a seed).

    The same arithmetic as :func:`outcome`, the small tier's thresholds all at once."""
    gpt4_right = float(h.gpt4_ok.sum())
    top = -np.inf
    grid = np.array(GRID)
    s_wrong = ~h.small_ok
    for ty in GRID:
        for tn in GRID:
            la = accepted(h.yes, h.conf, {True: ty, False: tn})
            parts = [la & (h.yes == lb) for lb in (True, False)] if per_label else [la]
            if not all(_fits(~h.local_ok[m], how, target, confidence) for m in parts):
                continue
            esc = ~la
            to_large = float(h.large_cost[esc].sum())
            right = float(h.local_ok[la].sum() + h.large_ok[esc].sum())
            if right >= gpt4_right:  # the small tier left out (it accepts nothing)
                top = max(top, 1 - to_large / h.gpt4_cost)
            cand = esc & h.small_valid
            taken = (h.small_conf[cand][None, :] >= grid[:, None]).astype(
                float
            )  # a row a threshold
            cost = h.small_cost[esc].sum() + to_large - taken @ h.large_cost[cand]
            gain = taken @ (h.small_ok[cand].astype(float) - h.large_ok[cand])
            groups = [h.small_yes[cand], ~h.small_yes[cand]] if per_label else [cand[cand]]
            counts = [
                (taken @ g.astype(float), taken @ (s_wrong[cand] & g).astype(float)) for g in groups
            ]
            for i in range(len(GRID)):
                saving = 1 - cost[i] / h.gpt4_cost
                if saving <= top or right + gain[i] < gpt4_right:
                    continue
                if all(_fits_counts(round(e[i]), round(n[i]), how, target, confidence)
                       for n, e in counts):  # fmt: skip
                    top = float(saving)
    return float(top)


def _fits_counts(errors: int, n: int, how: str, target: float, confidence: float) -> bool:
    if n == 0:
        return True
    if how == "realized":
        return errors / n <= target
    return _bound(errors, n, confidence) <= target


def one_seed(rows: list[Row], seed: int, target: float, confidence: float) -> dict[str, float]:
    train, test = split(rows, seed)
    models = fold_models(train, seed)
    oof = out_of_fold_p_yes(train, seed, models)
    local, small, scorer = calibrate(train, oof, target, confidence)
    tp = p_yes(CrossFit(models, seed), [r.text for r in test])
    h = Half.of(test, tp, scorer.score(test, tp))

    def cut(certs: dict[str, float | str]) -> Cut:
        return {lb == "yes": None if v == "never" else float(v) for lb, v in certs.items()}

    saving, _, _, _ = outcome(h, cut(thresholds(local)), cut(thresholds(small)))
    out = {"certified": saving}
    for how in ("realized", "bound"):
        for per_label in (False, True):
            key = f"{how} {'per label' if per_label else 'per tier'}"
            out[key] = best(h, how, per_label, target, confidence)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay.headroom", description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-error", type=float, default=0.03)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args(argv)
    rows = load(args.csv)
    results = []
    for seed in args.seeds:
        got = one_seed(rows, seed, args.max_error, args.confidence)
        results.append(got)
        print(f"seed {seed:>2}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in got.items()))
    print(
        f"\nsaving vs GPT-4 alone at max error {args.max_error:.1%} per tier, accuracy >= "
        f"GPT-4's, {len(results)} seeds: mean [min..max]"
    )
    for key in results[0]:
        vals = [100 * r[key] for r in results]
        print(f"  {key:<20} {statistics.fmean(vals):5.1f} % [{min(vals):.1f}..{max(vals):.1f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m bench.replay``: FrugalGPT's OVERRULING table, replayed through Cascade.

Per seed: a seeded 50/50 split; the local tier, the small tier's confidence
scorer and the threshold are learned on the train half only; every figure is
measured on the test half by the real engine against the replay server.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.replay import drive
from bench.replay.data import DEFAULT_CSV, Row, load, split
from bench.replay.signals import AgreementScorer, out_of_fold_p_yes, p_yes
from cascade.fakeapi.replay import Recorded, ReplayBook, ReplayServer, replay_prices_toml
from workers.local import LocalModel
from workers.pricing import PriceTable
from workers.tuning import DEFAULT_GRID, CascadeResult, TierAnswer, cheapest, simulate

SMALL, LARGE, BACKUP = "gpt-3.5-turbo", "gpt-4", "text-davinci-002"
UNTUNED = 0.8  # the product's default accept.min_confidence
CURVE = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0)
PAPER = {"gpt4_cost": 9.7, "frugal_cost": 2.6, "saving": 0.733}


def table(
    rows: Sequence[Row], p: Sequence[float], small_conf: Sequence[float]
) -> list[list[TierAnswer]]:
    """Per item, what each tier would answer: local, small (gpt-3.5), large (gpt-4 -> davinci)."""
    out = []
    for r, pi, c in zip(rows, p, small_conf, strict=True):
        local_label = "yes" if pi >= 0.5 else "no"
        if r.valid(LARGE):
            large = TierAnswer(None, r.ok[LARGE], r.cost_nanos[LARGE])
        else:  # malformed at the last tier: the fallback model answers
            large = TierAnswer(None, r.ok[BACKUP], r.cost_nanos[LARGE] + r.cost_nanos[BACKUP])
        out.append(
            [
                TierAnswer(max(pi, 1 - pi), local_label == r.gold, 0),
                TierAnswer(c if r.valid(SMALL) else None, r.ok[SMALL], r.cost_nanos[SMALL]),
                large,
            ]
        )
    return out


def train_target(rows: Sequence[Sequence[TierAnswer]], gpt4_train: float) -> float:
    """The accuracy the tuned threshold must reach on the train half (the one-SE rule).

    The best accuracy any threshold reaches, less one binomial standard error (what
    cannot be told apart from the best on this many items), but never below GPT-4's
    own train-half accuracy.
    """
    best = max(simulate(rows, (t, t)).accuracy for t in DEFAULT_GRID)
    se = math.sqrt(best * (1 - best) / len(rows))
    return max(gpt4_train, best - se)


def one_seed(rows: list[Row], seed: int, prices: PriceTable) -> dict[str, Any]:
    train, test = split(rows, seed)
    # Learned on the train half only.
    local = LocalModel.train([r.text for r in train], [r.gold for r in train], seed=seed)
    oof_p = out_of_fold_p_yes(train, seed)
    scorer = AgreementScorer(SMALL).fit(train, oof_p)
    train_table = table(train, oof_p, scorer.out_of_fold(train, oof_p))
    gpt4_train = sum(r.ok[LARGE] for r in train) / len(train)
    target = train_target(train_table, gpt4_train)
    tuned = cheapest(train_table, [(t, t) for t in DEFAULT_GRID], target)
    r_star = tuned.thresholds[0] if tuned is not None else 1.0
    # The test half: confidences from the train-half models, answers and costs as recorded.
    test_texts = [r.text for r in test]
    test_p = p_yes(local, test_texts)
    small_conf = scorer.score(test, test_p)
    pairs = zip(test, small_conf, strict=True)
    book = ReplayBook({
        SMALL: {r.text: Recorded(r.answers[SMALL], c, r.cost_nanos[SMALL]) for r, c in pairs},
        LARGE: {r.text: Recorded(r.answers[LARGE], 1.0, r.cost_nanos[LARGE]) for r in test},
        BACKUP: {r.text: Recorded(r.answers[BACKUP], 1.0, r.cost_nanos[BACKUP]) for r in test},
    })  # fmt: skip
    gold = [r.gold for r in test]

    def cascade(r: float) -> drive.RunResult:
        pipe = drive.pipeline([("small", SMALL, r, []), ("large", LARGE, r, [BACKUP])])
        return drive.run_sync(server.base_url, prices, pipe, test_texts, local, r)

    with ReplayServer(book, seed=seed) as server:
        gpt4 = drive.run_sync(
            server.base_url, prices, drive.pipeline([("large", LARGE, 0.8, [])]), test_texts
        )
        untuned = cascade(UNTUNED)
        best = cascade(r_star)
        curve = {r: cascade(r) for r in CURVE}
    sim: CascadeResult = simulate(table(test, test_p, small_conf), (r_star, r_star))
    assert abs(sim.accuracy - best.accuracy(gold)) < 1e-9 and sim.cost_nanos == best.cost_nanos, (
        "the engine and the pure simulation disagree"
    )
    return {
        "seed": seed,
        "threshold": r_star,
        "train_target": target,
        "gpt4": (gpt4.accuracy(gold), gpt4.cost_nanos),
        "untuned": (untuned.accuracy(gold), untuned.cost_nanos),
        "tuned": (best.accuracy(gold), best.cost_nanos),
        "kept": (best.kept("local"), best.kept("small"), best.kept("large")),
        "calls": best.calls,
        "curve": {r: (c.accuracy(gold), c.cost_nanos) for r, c in curve.items()},
    }


def usd(nanos: float) -> float:
    return nanos / 1e9


def stat(values: Sequence[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{fmt}} ± {sd:{fmt}} [{min(values):{fmt}}..{max(values):{fmt}}]"


def report(results: list[dict[str, Any]]) -> bool:
    n = len(results)
    seeds = ", ".join(str(r["seed"]) for r in results)
    print(f"\nOVERRULING, test half (1,080 queries), {n} seeds ({seeds}): mean ± sd [min..max]")
    print(f"{'method':<34}{'accuracy':<34}{'cost $ (test half)':<30}saving vs GPT-4")
    gpt4_costs = [usd(r["gpt4"][1]) for r in results]
    for key, name in (
        ("gpt4", "GPT-4 alone"),
        ("untuned", f"cascade, untuned (all {UNTUNED})"),
        ("tuned", "cascade, tuned on train half"),
    ):
        accs = [r[key][0] for r in results]
        costs = [usd(r[key][1]) for r in results]
        savings = [1 - c / g for c, g in zip(costs, gpt4_costs, strict=True)]
        pct = stat([100 * s for s in savings], ".1f")
        print(f"{name:<34}{stat(accs, '.4f'):<34}{stat(costs, '.3f'):<30}{pct} %")
    paper = ("FrugalGPT (paper, one split)", "= GPT-4's accuracy", "2.6 (GPT-4: 9.7)")
    print(f"{paper[0]:<34}{paper[1]:<34}{paper[2]:<30}73.3 %")
    print(
        "\nper seed: threshold (train) -> test accuracy tuned / GPT-4, saving,"
        " items settled at local/small/large"
    )
    ok_all = True
    for r in results:
        acc, cost = r["tuned"]
        g_acc, g_cost = r["gpt4"]
        saving = 1 - cost / g_cost
        ok = acc >= g_acc and saving >= 0.75
        ok_all &= ok
        print(
            f"  seed {r['seed']}: r={r['threshold']:.2f} (train target {r['train_target']:.4f}) -> "
            f"{acc:.4f} / {g_acc:.4f}, saving {100 * saving:.1f} %, kept {r['kept']}, "
            f"{r['calls']} calls  {'MEETS' if ok else 'MISSES'} the target"
        )
    print("\ncurve (test half, shared threshold r on local and small tiers): mean over seeds")
    print(f"  {'r':>5}  {'accuracy':>9}  {'saving':>8}  {'acc - GPT-4':>11}")
    for r_ in CURVE:
        accs = [r["curve"][r_][0] for r in results]
        savings = [1 - r["curve"][r_][1] / r["gpt4"][1] for r in results]
        delta = [a - r["gpt4"][0] for a, r in zip(accs, results, strict=True)]
        acc, saving, gap = (statistics.fmean(x) for x in (accs, savings, delta))
        print(f"  {r_:>5.2f}  {acc:>9.4f}  {100 * saving:>7.1f}%  {gap:>+11.4f}")
    verdict = "met on every seed" if ok_all else "MISSED on at least one seed"
    print(f"\ntarget (accuracy >= GPT-4's on the test half, saving >= 75 %): {verdict}")
    return ok_all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--guarantee", action="store_true", help="per-label thresholds certified on the train half"
    )
    parser.add_argument("--max-error", type=float, nargs="+", default=[0.03])
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument(
        "--pooled", action="store_true", help="one threshold per tier, not per label"
    )
    args = parser.parse_args(argv)
    rows = load(args.csv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay_prices.toml"
        path.write_text(replay_prices_toml([SMALL, LARGE, BACKUP]))
        prices = PriceTable.load(path)
    if args.guarantee:
        per_label = not args.pooled
        return guaranteed(rows, args.seeds, prices, args.max_error, args.confidence, per_label)
    results = []
    for seed in args.seeds:
        started = time.monotonic()
        results.append(one_seed(rows, seed, prices))
        print(f"seed {seed} done in {time.monotonic() - started:.1f} s", flush=True)
    return 0 if report(results) else 1


def guaranteed(
    rows: list[Row],
    seeds: Sequence[int],
    prices: PriceTable,
    targets: list[float],
    conf: float,
    per_label: bool,
) -> int:
    from bench.replay import guarantee

    results = []
    for seed in seeds:
        started = time.monotonic()
        results.append(guarantee.one_seed(rows, seed, prices, targets, conf, per_label))
        print(f"seed {seed} done in {time.monotonic() - started:.1f} s", flush=True)
    return 0 if guarantee.report(results, targets, conf, per_label) else 1


if __name__ == "__main__":
    raise SystemExit(main())

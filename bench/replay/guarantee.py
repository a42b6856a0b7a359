"""``python -m bench.replay --guarantee``: per-label thresholds with a stated guarantee.

The local tier is cross-fitted: five models, each trained on four fifths of the
train half; a train item is scored by the one that did not see it, a test item by
one picked by a hash. So the scores the thresholds are certified on and the scores
they are applied to come from the same models in the same mix (one model trained
on the whole train half scores test items more boldly than its out-of-fold
siblings scored the calibration items, and the guarantee would not carry over).

Per seed, on the train half only: the local tier's answers (out of fold) judged
against gold give, per label, the lowest threshold whose exact upper bound on the
error among accepted answers is at most ``--max-error`` at ``--confidence``
(:func:`workers.guarantee.certify_by_label`, fixed-sequence from the highest
threshold down). The train items the local tier would then escalate are the
small tier's calibration set: its answers (gpt-3.5, confidence from the scorer,
out of fold) judged against gold give its per-label thresholds the same way. A
label that cannot be certified is written ``"never"``: nothing is accepted there.

The test half then runs through the real engine (per-label thresholds in the
pipeline, honoured by ``decide``); the figures: each tier's realized error among
the test items it accepted, the accuracy, and the saving against GPT-4 alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.replay import drive
from bench.replay.data import LABELS, Row, split
from bench.replay.signals import (
    AgreementScorer,
    CrossFit,
    fold_models,
    out_of_fold_p_yes,
    p_yes,
)
from cascade.fakeapi.replay import Recorded, ReplayBook, ReplayServer
from workers.guarantee import Certificate, Judged, certify_by_label
from workers.pricing import PriceTable

SMALL, LARGE, BACKUP = "gpt-3.5-turbo", "gpt-4", "text-davinci-002"
TIERS = ("local", "small")
SAVING_TARGET = 0.85  # issue 20: the saving against GPT-4 alone to keep


def _label(answer: str) -> str:
    return answer.strip().lower()


def thresholds(certs: Mapping[str, Certificate]) -> dict[str, float | str]:
    return {k: "never" if c.threshold is None else c.threshold for k, c in certs.items()}


def _passes(threshold: float | str, confidence: float) -> bool:
    return threshold != "never" and confidence >= float(threshold)


def _certify(
    answers: list[tuple[str, Judged]], max_error: float, confidence: float, per_label: bool
) -> dict[str, Certificate]:
    """Per label, or one certificate for all labels pooled (the same threshold for each)."""
    if per_label:
        return certify_by_label(answers, LABELS, max_error, confidence)
    pooled = certify_by_label([("*", j) for _, j in answers], ["*"], max_error, confidence)
    return dict.fromkeys(LABELS, pooled["*"])


def calibrate(
    train: Sequence[Row],
    oof_p: Sequence[float],
    max_error: float,
    confidence: float,
    per_label: bool = True,
) -> tuple[dict[str, Certificate], dict[str, Certificate], AgreementScorer]:
    """Certificates of the local and small tiers per label, from the train half only."""
    scorer = AgreementScorer(SMALL).fit(train, oof_p)
    small_conf = scorer.out_of_fold(train, oof_p)
    local_answers = [("yes" if p >= 0.5 else "no", max(p, 1 - p)) for p in oof_p]
    local = _certify(
        [(lb, Judged(c, lb != r.gold)) for (lb, c), r in zip(local_answers, train, strict=True)],
        max_error,
        confidence,
        per_label,
    )
    cut = thresholds(local)
    escalated = [
        (r, c)
        for r, (lb, lc), c in zip(train, local_answers, small_conf, strict=True)
        if not _passes(cut[lb], lc)
    ]
    small = _certify(
        [
            (_label(r.answers[SMALL]), Judged(c, not r.ok[SMALL]))
            for r, c in escalated
            if r.valid(SMALL)
        ],
        max_error,
        confidence,
        per_label,
    )
    return local, small, scorer


def dropped(cut: Mapping[str, float | str]) -> bool:
    """A tier certified for no label accepts nothing: it is left out of the cascade.

    Every call to it would be paid for and then escalated (`cascade tune` says so and
    advises dropping the tier). Decided on the train half's certificates only.
    """
    return all(v == "never" for v in cut.values())


def realized(run: drive.RunResult, gold: Sequence[str], tier: str) -> tuple[int, int]:
    """(accepted, wrong) among the test items ``tier`` settled."""
    mine = [i for i, t in run.tier.items() if t == tier]
    return len(mine), sum(run.labels[i] != gold[i] for i in mine)


def one_seed(
    rows: list[Row],
    seed: int,
    prices: PriceTable,
    targets: Sequence[float],
    confidence: float,
    per_label: bool = True,
) -> dict[str, Any]:
    train, test = split(rows, seed)
    models = fold_models(train, seed)
    oof_p = out_of_fold_p_yes(train, seed, models)
    local_model = CrossFit(models, seed)  # scored as the thresholds were certified
    texts, gold = [r.text for r in test], [r.gold for r in test]
    calibrated = {t: calibrate(train, oof_p, t, confidence, per_label) for t in targets}
    out: dict[str, Any] = {"seed": seed, "targets": {}}
    for target, (local, small, scorer) in calibrated.items():
        conf = scorer.score(test, p_yes(local_model, texts))
        book = ReplayBook({
            SMALL: {r.text: Recorded(r.answers[SMALL], c, r.cost_nanos[SMALL])
                    for r, c in zip(test, conf, strict=True)},
            LARGE: {r.text: Recorded(r.answers[LARGE], 1.0, r.cost_nanos[LARGE]) for r in test},
            BACKUP: {r.text: Recorded(r.answers[BACKUP], 1.0, r.cost_nanos[BACKUP]) for r in test},
        })  # fmt: skip
        small_cut = thresholds(small)
        tiers: list[tuple[str, str, drive.Threshold, list[str]]] = [
            ("small", SMALL, small_cut, []),
            ("large", LARGE, 0.0, [BACKUP]),
        ]
        if dropped(small_cut):
            tiers = tiers[1:]  # as `cascade tune` advises: a tier that accepts nothing only costs
        pipe = drive.pipeline(tiers)
        with ReplayServer(book, seed=seed) as server:
            if "gpt4" not in out:
                alone = drive.pipeline([("large", LARGE, 0.8, [])])
                gpt4 = drive.run_sync(server.base_url, prices, alone, texts)
                out["gpt4"] = (gpt4.accuracy(gold), gpt4.cost_nanos)
            run = drive.run_sync(
                server.base_url, prices, pipe, texts, local_model, thresholds(local)
            )
        out["targets"][target] = {
            "thresholds": {"local": thresholds(local), "small": thresholds(small)},
            "certs": {"local": local, "small": small},
            "errors": {tier: realized(run, gold, tier) for tier in TIERS},
            "accuracy": run.accuracy(gold),
            "cost": run.cost_nanos,
            "kept": (run.kept("local"), run.kept("small"), run.kept("large")),
        }
    return out


def _fmt(cut: Mapping[str, float | str]) -> str:
    return " ".join(f"{k}={v if isinstance(v, str) else f'{v:.2f}'}" for k, v in cut.items())


def report(
    results: list[dict[str, Any]], targets: Sequence[float], confidence: float, per_label: bool
) -> bool:
    n = len(results)
    how = "per label" if per_label else "one threshold per tier (labels pooled)"
    print(f"\nOVERRULING guarantee mode, {how}, {n} seeds, confidence {confidence:.0%}, test half")
    ok_all = True
    for target in targets:
        print(f"\nmax error {target:.1%}: per seed, thresholds (train) -> realized error, kept")
        held = at_least_gpt4 = 0
        savings, accs, gaps = [], [], []
        for r in results:
            got = r["targets"][target]
            g_acc, g_cost = r["gpt4"]
            errs = {t: (w / a if a else 0.0) for t, (a, w) in got["errors"].items()}
            ok = all(e <= target for e in errs.values())
            held += ok
            saving = 1 - got["cost"] / g_cost
            at_least_gpt4 += got["accuracy"] >= g_acc
            savings.append(saving)
            accs.append(got["accuracy"])
            gaps.append(got["accuracy"] - g_acc)
            cuts = got["thresholds"]
            small_cut = "dropped" if dropped(cuts["small"]) else _fmt(cuts["small"])
            print(
                f"  seed {r['seed']:>2}: local [{_fmt(cuts['local'])}] small "
                f"[{small_cut}] -> error local {errs['local']:.4f} "
                f"({got['errors']['local'][0]}), small {errs['small']:.4f} "
                f"({got['errors']['small'][0]}); accuracy {got['accuracy']:.4f} / GPT-4 "
                f"{g_acc:.4f}; saving {100 * saving:.1f} %  {'HOLDS' if ok else 'EXCEEDED'}"
            )
        share = held / n
        print(
            f"  guarantee held on {held}/{n} seeds ({share:.0%}); accuracy "
            f"{statistics.fmean(accs):.4f} (vs GPT-4 {statistics.fmean(gaps):+.4f}, at least "
            f"GPT-4's on {at_least_gpt4}/{n}); saving {100 * statistics.fmean(savings):.1f} % "
            f"[{100 * min(savings):.1f}..{100 * max(savings):.1f}]"
        )
        ok_all &= share >= confidence
        mean_saving = statistics.fmean(savings)
        print(
            f"  verdict: guarantee on >= {confidence:.0%} of seeds "
            f"{'MET' if share >= confidence else 'NOT MET'}; accuracy >= GPT-4's on every seed "
            f"{'MET' if at_least_gpt4 == n else 'NOT MET'}; mean saving >= {SAVING_TARGET:.0%} "
            f"{'MET' if mean_saving >= SAVING_TARGET else 'NOT MET'}"
        )
    return ok_all

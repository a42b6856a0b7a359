"""Confidence for the recorded answers, learned on the train half only.

The 2023 APIs reported no confidence. Like FrugalGPT's scorer (a model that
reads the query and an answer and estimates whether the answer is right), the
small tier's confidence here is a logistic regression, fitted on the train half,
of "the recorded answer is correct" on four features: the local tier's
probability of "yes" (as s = 2p - 1), the answer (+1 yes / -1 no), their
product (the *consistency* of the two tiers: agreement weighted by how sure the
local tier was) and |s|. The local tier's own confidence is its calibrated
probability. For the train half every signal is computed out of fold (a model
never scores an item it was trained on), so the tuning sees honest numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from bench.replay.data import Row
from workers.local import LocalModel

FOLDS = 5


def p_yes(model: LocalModel | CrossFit, texts: Sequence[str]) -> list[float]:
    column = model.labels.index("yes")
    return [row[column] for row in model.probabilities(texts)]


def fold_models(train: Sequence[Row], seed: int) -> list[LocalModel]:
    """One local model per fold, each trained on the other folds (item i is in fold i % 5)."""
    models = []
    for fold in range(FOLDS):
        fit = [i for i in range(len(train)) if i % FOLDS != fold]
        models.append(
            LocalModel.train([train[i].text for i in fit], [train[i].gold for i in fit], seed=seed)
        )
    return models


def out_of_fold_p_yes(
    train: Sequence[Row], seed: int, models: Sequence[LocalModel] | None = None
) -> list[float]:
    out = [0.0] * len(train)
    for fold, model in enumerate(models or fold_models(train, seed)):
        held = [i for i in range(len(train)) if i % FOLDS == fold]
        for i, p in zip(held, p_yes(model, [train[i].text for i in held]), strict=True):
            out[i] = p
    return out


class CrossFit:
    """The fold models as one local tier: each text is scored by one of them, by a hash.

    Every calibration score (out of fold) came from a fold model on an item it never
    saw; so does every score here, with the same model mix: the scores the thresholds
    were certified on and the scores they are applied to have the same distribution.
    """

    def __init__(self, models: Sequence[LocalModel], seed: int) -> None:
        self.models, self.seed = list(models), seed
        self.labels = self.models[0].labels

    def _fold(self, text: str) -> int:
        digest = hashlib.sha256(f"crossfit:{self.seed}:{text}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % len(self.models)

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in texts]
        for fold, model in enumerate(self.models):
            idx = [i for i, t in enumerate(texts) if self._fold(t) == fold]
            for i, row in zip(idx, model.probabilities([texts[i] for i in idx]), strict=True):
                out[i] = row
        return out

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        out = []
        for row in self.probabilities(texts):
            best = max(range(len(row)), key=row.__getitem__)
            out.append((self.labels[best], row[best]))
        return out


def features(p: float, answer: str) -> list[float]:
    s = 2 * p - 1
    a = {"yes": 1.0, "no": -1.0}.get(answer.strip().lower(), 0.0)
    return [s, a, a * s, abs(s)]


class AgreementScorer:
    """P(the model's recorded answer is right | local tier's probability, the answer)."""

    def __init__(self, model: str) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = model
        self._clf = LogisticRegression(max_iter=1000)

    def fit(self, rows: Sequence[Row], p: Sequence[float]) -> AgreementScorer:
        x = [features(pi, r.answers[self.model]) for r, pi in zip(rows, p, strict=True)]
        self._clf.fit(x, [r.ok[self.model] for r in rows])
        return self

    def score(self, rows: Sequence[Row], p: Sequence[float]) -> list[float]:
        x = [features(pi, r.answers[self.model]) for r, pi in zip(rows, p, strict=True)]
        column = list(self._clf.classes_).index(True)
        return [round(float(row[column]), 6) for row in self._clf.predict_proba(x)]

    def out_of_fold(self, rows: Sequence[Row], p: Sequence[float]) -> list[float]:
        out = [0.0] * len(rows)
        for fold in range(FOLDS):
            held = [i for i in range(len(rows)) if i % FOLDS == fold]
            fit = [i for i in range(len(rows)) if i % FOLDS != fold]
            scorer = AgreementScorer(self.model).fit([rows[i] for i in fit], [p[i] for i in fit])
            for i, c in zip(
                held, scorer.score([rows[i] for i in held], [p[i] for i in held]), strict=True
            ):
                out[i] = c
        return out

"""The learned tier: a small text classifier that answers for free, with a calibrated confidence.

TF-IDF word uni- and bigrams, side by side with TF-IDF character 2- to 5-grams
within word boundaries (``char_wb``: they match word stems, inflections and
spelling variants the word n-grams treat as unrelated), feed a logistic
regression; when every label has enough examples, the probabilities are
calibrated with ``CalibratedClassifierCV`` (sigmoid, k-fold), so "confidence
0.9" means about nine in ten such answers are right on data like the training
data. The confidence of an answer is the probability of the label it gives.

Stored as two files in a directory:

- ``model.joblib``: the fitted scikit-learn pipeline (a pickle);
- ``model.json``: the manifest: format, version, the SHA-256 of ``model.joblib``,
  the label set, whether the probabilities are calibrated, how many examples
  trained it and the scikit-learn version.

Loading a pickle runs code, so :meth:`LocalModel.load` only unpickles a file
whose SHA-256 matches the manifest next to it: a model directory is something
``cascade train-local`` wrote; never point ``model_path`` at a file from
someone you would not let run code on the worker.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
MODEL_FILE = "model.joblib"
MANIFEST_FILE = "model.json"
MIN_PER_LABEL_TO_CALIBRATE = 10  # below this, CalibratedClassifierCV's folds get too thin
CALIBRATION_FOLDS = 5


class LocalModelError(ValueError):
    """A local model cannot be trained or loaded."""


def _estimator(n_labels: int, per_label_min: int, seed: int) -> tuple[Any, bool]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline, make_union

    base: Any = LogisticRegression(C=10.0, solver="liblinear", random_state=seed)
    if n_labels > 2:
        # liblinear fits one label against the rest; scikit-learn 1.8+ no longer does
        # that by itself for three labels or more ("does not support multiclass").
        base = OneVsRestClassifier(base)
    calibrated = per_label_min >= MIN_PER_LABEL_TO_CALIBRATE
    clf: Any = (
        CalibratedClassifierCV(base, cv=CALIBRATION_FOLDS, method="sigmoid") if calibrated else base
    )
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode")
    chars = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, strip_accents="unicode"
    )
    return make_pipeline(make_union(words, chars), clf), calibrated


@dataclass(frozen=True, slots=True)
class LocalModel:
    labels: tuple[str, ...]  # in the order of the estimator's probability columns
    calibrated: bool
    trained_on: int
    estimator: Any
    version: str = ""  # first 12 hex digits of the SHA-256 of model.joblib, once saved

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], *, seed: int = 0) -> LocalModel:
        if len(texts) != len(labels):
            raise LocalModelError("texts and labels differ in length")
        counts = Counter(labels)
        if len(counts) < 2:
            raise LocalModelError(f"need examples of at least 2 labels, got {dict(counts)}")
        estimator, calibrated = _estimator(len(counts), min(counts.values()), seed)
        estimator.fit(list(texts), list(labels))
        classes = tuple(str(c) for c in estimator.classes_)
        return cls(classes, calibrated, len(texts), estimator)

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        """Per text, the probability of each label in :attr:`labels` order."""
        if not texts:
            return []
        return [[float(p) for p in row] for row in self.estimator.predict_proba(list(texts))]

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """Per text, the most probable label and its probability (the confidence)."""
        out = []
        for row in self.probabilities(texts):
            best = max(range(len(row)), key=row.__getitem__)
            out.append((self.labels[best], row[best]))
        return out

    def save(self, directory: Path) -> LocalModel:
        """Write model.joblib and model.json into ``directory``; return the versioned model."""
        import joblib
        import sklearn

        directory.mkdir(parents=True, exist_ok=True)
        model_path = directory / MODEL_FILE
        joblib.dump(self.estimator, model_path)
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        manifest = {
            "format": FORMAT,
            "version": digest[:12],
            "sha256": digest,
            "labels": list(self.labels),
            "calibrated": self.calibrated,
            "trained_on": self.trained_on,
            "sklearn": sklearn.__version__,
        }
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        return LocalModel(
            self.labels, self.calibrated, self.trained_on, self.estimator, digest[:12]
        )

    @classmethod
    def load(cls, path: Path) -> LocalModel:
        """Load a directory written by :meth:`save` (or its model.json), checking the hash."""
        import joblib

        directory = path.parent if path.is_file() else path
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text())
            blob = (directory / MODEL_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            raise LocalModelError(f"{directory}: not a local model directory: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise LocalModelError(f"{directory}: unknown format {manifest.get('format')!r}")
        if hashlib.sha256(blob).hexdigest() != manifest.get("sha256"):
            raise LocalModelError(f"{directory}: {MODEL_FILE} does not match its manifest")
        estimator = joblib.load(directory / MODEL_FILE)
        labels = tuple(str(c) for c in estimator.classes_)
        if list(labels) != manifest.get("labels"):
            raise LocalModelError(f"{directory}: the label set does not match its manifest")
        return cls(
            labels,
            bool(manifest.get("calibrated")),
            int(manifest.get("trained_on", 0)),
            estimator,
            str(manifest["version"]),
        )

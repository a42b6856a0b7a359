"""The learned tier: training, calibrated confidence, a versioned store that checks its hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.local import MANIFEST_FILE, MODEL_FILE, LocalModel, LocalModelError

BILLING = ["my invoice is wrong", "refund my payment", "charged twice on my card", "billing error"]
SHIPPING = [
    "where is my parcel",
    "the package never arrived",
    "tracking shows nothing",
    "courier lost my order",
]


def _data(n: int) -> tuple[list[str], list[str]]:
    texts = [f"{t} {i}" for i in range(n) for t in BILLING + SHIPPING]
    labels = [lb for _ in range(n) for lb in ["billing"] * 4 + ["shipping"] * 4]
    return texts, labels


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel.train(*_data(5), seed=0)


def test_predicts_labels_with_calibrated_confidence(model: LocalModel) -> None:
    assert model.calibrated and model.labels == ("billing", "shipping") and model.trained_on == 40
    (b, cb), (s, cs) = model.predict(["please refund this invoice", "my parcel is lost"])
    assert (b, s) == ("billing", "shipping")
    assert 0.5 < cb <= 1.0 and 0.5 < cs <= 1.0
    assert model.predict([]) == []


ACCOUNT = ["reset my password", "cannot log in", "change my email address", "delete my account"]


@pytest.mark.parametrize("n", [1, 5])  # uncalibrated and calibrated
def test_three_labels_train_and_predict(n: int) -> None:
    # scikit-learn 1.8+ refuses liblinear on three labels unless it is wrapped one-vs-rest
    texts, labels = _data(n)
    texts += [f"{t} {i}" for i in range(n) for t in ACCOUNT]
    labels += ["account"] * 4 * n
    model = LocalModel.train(texts, labels, seed=0)
    assert model.labels == ("account", "billing", "shipping")
    got = model.predict(["I cannot log in to my account", "refund this invoice", "parcel lost"])
    assert [label for label, _ in got] == ["account", "billing", "shipping"]
    assert all(1 / 3 < confidence <= 1.0 for _, confidence in got)


def test_too_few_examples_are_not_calibrated() -> None:
    small = LocalModel.train(*_data(1))
    assert not small.calibrated
    assert small.predict(["refund"])[0][0] == "billing"


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        (["a", "b"], ["x", "x"], "at least 2 labels"),  # one label cannot be learned
        (["a"], ["x", "y"], "differ in length"),
    ],
)
def test_train_refuses(texts: list[str], labels: list[str], message: str) -> None:
    with pytest.raises(LocalModelError, match=message):
        LocalModel.train(texts, labels)


def test_save_load_round_trip_is_versioned(model: LocalModel, tmp_path: Path) -> None:
    saved = model.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())
    assert saved.version == manifest["version"] == manifest["sha256"][:12]
    assert manifest["labels"] == ["billing", "shipping"]
    loaded = LocalModel.load(tmp_path / "m")
    assert loaded.version == saved.version
    texts = ["refund please", "where is the courier"]
    assert loaded.predict(texts) == model.predict(texts)


def test_load_refuses_a_file_that_does_not_match_its_manifest(
    model: LocalModel, tmp_path: Path
) -> None:
    """A swapped or corrupted pickle is never unpickled."""
    model.save(tmp_path / "m")
    (tmp_path / "m" / MODEL_FILE).write_bytes(b"not the file we wrote")
    with pytest.raises(LocalModelError, match="does not match"):
        LocalModel.load(tmp_path / "m")


def test_load_refuses_a_directory_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="not a local model directory"):
        LocalModel.load(tmp_path)


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_load_refuses_an_unknown_format(model: LocalModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    _edit_manifest(tmp_path / "m", format="cascade-local-v99")

    with pytest.raises(LocalModelError) as info:
        LocalModel.load(tmp_path / "m")

    assert str(info.value) == f"{tmp_path / 'm'}: unknown format 'cascade-local-v99'"


def test_load_refuses_a_label_set_other_than_the_models(model: LocalModel, tmp_path: Path) -> None:
    """A manifest edited to other labels would map predictions to the wrong names."""
    model.save(tmp_path / "m")
    _edit_manifest(tmp_path / "m", labels=["shipping", "billing"])

    with pytest.raises(LocalModelError, match="the label set does not match its manifest"):
        LocalModel.load(tmp_path / "m")


def test_load_refuses_a_manifest_that_is_not_json(model: LocalModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    (tmp_path / "m" / MANIFEST_FILE).write_text("{ not json")

    with pytest.raises(LocalModelError, match="not a local model directory"):
        LocalModel.load(tmp_path / "m")


def test_load_accepts_the_manifest_file_itself(model: LocalModel, tmp_path: Path) -> None:
    saved = model.save(tmp_path / "m")

    loaded = LocalModel.load(tmp_path / "m" / MANIFEST_FILE)

    assert loaded.version == saved.version
    assert loaded.labels == ("billing", "shipping")

"""`cascade tune` on a ledger with known pairs, on SQLite and Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cascade.cli_tune import observations
from migrations.runner import upgrade
from models.db import make_engine
from models.tuning import training_examples, tuning_items
from tests.integration.conftest import add_attempt, add_item, new_job
from workers.tuning import curve, recommend

PIPELINE = {
    "tiers": [
        {"name": "small", "kind": "claude", "accept": {"min_confidence": 0.9}},
        {"name": "large", "kind": "claude"},
    ]
}
# (key, small's label, small's confidence, large's label or None when small accepted, gold)
# Small accepted two answers at >= 0.9; it escalated four, of which large agreed with the
# two at 0.85 and 0.8 and overruled the two at 0.6 and 0.55.
PAIRS = [
    ("a", "spam", 0.95, None, "spam"),
    ("b", "ham", 0.92, None, "ham"),
    ("c", "spam", 0.85, "spam", "spam"),
    ("d", "ham", 0.80, "ham", "ham"),
    ("e", "spam", 0.60, "ham", "ham"),
    ("f", "ham", 0.55, "spam", "spam"),
]
SMALL_COST, LARGE_COST = 10, 100


@pytest.fixture
def job(db_url: str) -> Iterator[tuple[str, int]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            job_id, sub_id = new_job(conn, "tune")
            conn.execute(
                text("UPDATE jobs SET pipeline = :p WHERE id = :id"),
                {"p": json.dumps(PIPELINE), "id": job_id},
            )
            for n, (key, label, conf, above, gold) in enumerate(PAIRS, start=1):
                final = above or label
                pk = add_item(
                    conn, job_id, sub_id, key, line_no=n, text=f"text {key}",
                    meta={"gold": gold}, status="done", tier_index=1 if above else 0,
                    label=final, final_tier="large" if above else "small",
                )  # fmt: skip
                add_attempt(
                    conn, job_id, pk, 1, tier_index=0, tier="small", role="primary",
                    provider="anthropic", model="s", outcome="ok",
                    decision="escalate" if above else "accept", label=label, confidence=conf,
                    cost_nanos=SMALL_COST,
                )  # fmt: skip
                if above:
                    add_attempt(
                        conn, job_id, pk, 2, tier_index=1, tier="large", role="primary",
                        provider="anthropic", model="l", outcome="ok", decision="accept",
                        label=above, confidence=0.97, cost_nanos=LARGE_COST,
                    )  # fmt: skip
        yield db_url, job_id
    finally:
        engine.dispose()


def test_recommendation_from_agreement_pairs(job: tuple[str, int]) -> None:
    url, job_id = job
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            items = tuning_items(session, job_id)
    finally:
        engine.dispose()
    obs = observations(items, 0, use_gold=False)
    assert len(obs) == 6 and sum(o.correct is not None for o in obs) == 4  # four pairs
    points = {p.threshold: p for p in curve(obs)}
    # At 0.8 small keeps its two agreeing escalations too: quality stays 1.0, cost falls.
    assert points[0.8].kept_share == pytest.approx(4 / 6)
    assert points[0.8].quality == pytest.approx(1.0)
    assert points[0.8].cost_per_item_nanos == pytest.approx(SMALL_COST + 2 * LARGE_COST / 6)
    # At 0.6 it would keep a wrong answer: 5/6 kept at 2/3 agreement, 1/6 escalated.
    assert points[0.6].quality == pytest.approx(5 / 6 * 2 / 3 + 1 / 6)
    rec = recommend(list(points.values()), 4, target=0.98)
    assert rec.point is not None and rec.point.threshold == 0.8


def test_gold_labels_train_the_local_tier(job: tuple[str, int]) -> None:
    url, job_id = job
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            gold = training_examples(session, job_id, source="gold")
            outcomes = training_examples(
                session, job_id, source="outcomes", exclude_tiers=["small"]
            )
    finally:
        engine.dispose()
    assert gold == [(f"text {k}", g) for k, *_, g in PAIRS]
    assert [t for t, _ in outcomes] == ["text c", "text d", "text e", "text f"]


def test_cli_tune_writes_the_threshold(
    job: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cascade.cli import app
    from common.settings import get_settings
    from tasks.runtime import reset_runtime

    url, job_id = job
    pipe = tmp_path / "p.toml"
    pipe.write_text(
        'name = "p"\nlabels = ["ham", "spam"]\ninstructions = "x"\n\n'
        '[[tiers]]  # small\nname = "small"\nkind = "claude"\nmodel = "m"\n'
        "[tiers.accept]\nmin_confidence = 0.9  # tuned by hand\n\n"
        '[[tiers]]\nname = "large"\nkind = "claude"\nmodel = "m"\n'
    )
    monkeypatch.setenv("CASCADE_DATABASE_URL", url)
    get_settings.cache_clear()
    reset_runtime()
    try:
        result = CliRunner().invoke(
            app, ["tune", "--job", str(job_id), "--write", "--pipeline", str(pipe)]
        )
    finally:
        get_settings.cache_clear()
        reset_runtime()
    assert result.exit_code == 0, result.output
    assert "recommend min_confidence = 0.8" in result.output
    # four pairs are far from enough: said beside the recommendation, in brackets
    assert "[few pairs: treat as a hint]" in result.output
    assert "min_confidence = 0.8  # tuned by hand\n" in pipe.read_text()


# Shadow samples of the two items small accepted: large agreed with "a" (0.95) and
# overruled "b" (0.92). Without them tuning has no pair for an accepted item.
SHADOWS = {"a": "spam", "b": "spam"}
SHADOW_COST = 90


@pytest.fixture
def shadowed(job: tuple[str, int]) -> tuple[str, int]:
    url, job_id = job
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for key, above in SHADOWS.items():
                pk = conn.execute(
                    text("SELECT id FROM items WHERE job_id = :j AND item_key = :k"),
                    {"j": job_id, "k": key},
                ).scalar_one()
                # a failed try first (its cost counts), then the answer
                add_attempt(
                    conn, job_id, pk, 2, tier_index=1, tier="large", role="shadow",
                    provider="anthropic", model="l", outcome="transient", cost_nanos=0,
                )  # fmt: skip
                add_attempt(
                    conn, job_id, pk, 3, tier_index=1, tier="large", role="shadow",
                    provider="anthropic", model="l", outcome="ok", label=above,
                    confidence=0.97, cost_nanos=SHADOW_COST,
                )  # fmt: skip
    finally:
        engine.dispose()
    return url, job_id


def test_recommendation_uses_shadow_pairs(shadowed: tuple[str, int]) -> None:
    url, job_id = shadowed
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            items = tuning_items(session, job_id)
    finally:
        engine.dispose()
    by_key = {i.pk: i for i in items}
    shadows = [i.shadows for i in by_key.values() if i.shadows]
    assert [(s[1].label, s[1].cost_nanos) for s in shadows] == [("spam", 90), ("spam", 90)]
    # the shadow's cost is calibration spend, not large's cost for the item
    assert all(1 not in i.cost_by_tier for i in items if i.final_tier == "small")

    obs = observations(items, 0, use_gold=False)

    assert sum(o.correct is not None for o in obs) == 6  # four pairs plus two shadow pairs
    points = {p.threshold: p for p in curve(obs)}
    # At 0.9 small keeps "b", which large overruled: agreement drops to 5/6.
    assert points[0.9].quality == pytest.approx(2 / 6 * 1 / 2 + 4 / 6)
    # At 0.95 it keeps only "a"; "b" would cost what its shadow cost.
    assert points[0.95].cost_per_item_nanos == pytest.approx(
        SMALL_COST + (SHADOW_COST + 4 * LARGE_COST) / 6
    )
    rec = recommend(list(points.values()), 6, target=0.98)
    # Without the shadow pairs the recommendation was 0.8 (see above): it kept "b" blind.
    assert rec.point is not None and rec.point.threshold == 0.95


def test_gold_judges_the_shadow_answer_too(shadowed: tuple[str, int]) -> None:
    url, job_id = shadowed
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            items = tuning_items(session, job_id)
    finally:
        engine.dispose()

    obs = observations(items, 0, use_gold=True)

    kept = [o for o in obs if o.confidence >= 0.9]
    # a: small right (spam), large's shadow right; b: small right (ham), large's shadow wrong
    assert sorted((o.correct, o.above_correct) for o in kept) == [(True, False), (True, True)]


GUARANTEE_PIPE = (
    'name = "p"\nlabels = ["ham", "spam"]\ninstructions = "x"\n\n'
    '[[tiers]]\nname = "small"\nkind = "claude"\nmodel = "m"\n'
    "[tiers.accept]\nmin_confidence = 0.9\n\n"
    '[[tiers]]\nname = "large"\nkind = "claude"\nmodel = "m"\n'
)


@pytest.mark.parametrize(
    ("args", "written", "said"),
    [
        # six gold pairs, two wrong: nothing certifies 5 %, so nothing is accepted there
        (
            ["--max-error", "0.05"],
            'min_confidence_by_label = { ham = "never", spam = "never" }',
            ["labels pooled", "*: 2/6 wrong at >= 0.50: at that error rate no number of "
             "samples certifies it", "tier small certifies no label"],
        ),
        (
            ["--max-error", "0.05", "--per-label"],
            'min_confidence_by_label = { ham = "never", spam = "never" }',
            ["per label", "ham: 1/3 wrong at >= 0.50", "spam: 1/3 wrong at >= 0.50",
             'uncertified labels are written "never"'],
        ),
        # --allow-uncertified: no override, the tier's min_confidence stands
        (
            ["--max-error", "0.05", "--per-label", "--allow-uncertified"],
            "min_confidence_by_label = {}",
            ["ham: NOT certified"],
        ),
        # a loose target: the wrong answers sit below each label's certified threshold
        (
            ["--max-error", "0.5", "--confidence", "0.5", "--per-label"],
            "min_confidence_by_label = { ham = 0.6, spam = 0.65 }",
            ["ham: accepted at >= 0.60, the error (against gold) is at most 50.0% with 50% "
             "confidence: 0 of 2 judged answers wrong, upper bound 0.2929"],
        ),
    ],
)  # fmt: skip
def test_cli_tune_guarantee_writes_thresholds_per_label(
    job: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    written: str,
    said: list[str],
) -> None:
    from cascade.cli import app
    from common.settings import get_settings
    from tasks.runtime import reset_runtime

    url, job_id = job
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE jobs SET pipeline = :p WHERE id = :id"),
                {"p": json.dumps(PIPELINE | {"labels": ["ham", "spam"]}), "id": job_id},
            )
    finally:
        engine.dispose()
    pipe = tmp_path / "p.toml"
    pipe.write_text(GUARANTEE_PIPE)
    monkeypatch.setenv("CASCADE_DATABASE_URL", url)
    get_settings.cache_clear()
    reset_runtime()
    try:
        result = CliRunner().invoke(
            app,
            ["tune", "--job", str(job_id), "--write", "--pipeline", str(pipe), *args],
            env={"COLUMNS": "200"},
        )
    finally:
        get_settings.cache_clear()
        reset_runtime()
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for part in said:
        assert part in output
    assert f"wrote min_confidence_by_label for 1 tier(s) to {pipe}" in output
    text_after = pipe.read_text()
    assert f"min_confidence = 0.9\n{written}\n" in text_after
    # the file is still a pipeline the loader takes
    from workers.pipeline import load_pipeline

    assert load_pipeline(pipe).tiers[0].name == "small"

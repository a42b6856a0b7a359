"""Moderation pieces around the decision: review on disagreement, writing per-label
thresholds into the pipeline file, and the pairs `tune --max-error` judges."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from cascade.tune_guarantee import answered_counts, judged_answers
from models.tuning import ShadowAnswer, TierVerdict, TuningItem
from workers.decision import Accept, Escalate, Review, shadow_sampled
from workers.guarantee import Judged
from workers.moderation import mark_disagreements
from workers.pipeline import Pipeline, load_pipeline
from workers.records import ItemResult, Step
from workers.tuning import set_by_label

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "moderation.toml"


def _pipeline(review: bool) -> Pipeline:
    return load_pipeline(EXAMPLE).model_copy(update={"review_on_disagreement": review})


def _step(tier_index: int, role: str, label: str, decision: str | None) -> Step:
    return Step(1, 1, tier_index, "t", role, "anthropic", "m", "ok", decision, label, 0.9)


def test_the_last_tier_disagreeing_with_the_tier_below_goes_to_review() -> None:
    pipe = _pipeline(review=True)
    results = [
        ItemResult(1, Accept("spam", 0.9, ""), [_step(2, "primary", "spam", "accept")]),
        ItemResult(2, Accept("safe", 0.9, ""), [_step(2, "primary", "safe", "accept")]),
    ]
    # item 1: the small tier said "safe" before escalating; item 2: it said "safe" too
    mark_disagreements(pipe, 2, {1: "safe", 2: "safe"}, results)
    assert isinstance(results[0].decision, Review)
    assert results[0].steps[0].decision == "review"  # the ledger row says so too
    assert isinstance(results[1].decision, Accept)


def test_a_shadow_sample_that_disagrees_sends_the_accepted_answer_to_review() -> None:
    pipe = _pipeline(review=True)
    steps = [_step(1, "primary", "spam", "accept"), _step(2, "shadow", "safe", None)]
    results = [ItemResult(1, Accept("spam", 0.95, ""), steps)]
    mark_disagreements(pipe, 1, {}, results)
    assert isinstance(results[0].decision, Review)
    assert "shadow" in results[0].decision.why


def test_disagreement_changes_nothing_unless_the_pipeline_asks() -> None:
    pipe = _pipeline(review=False)
    results = [ItemResult(1, Accept("spam", 0.9, ""), [_step(2, "primary", "spam", "accept")])]
    mark_disagreements(pipe, 2, {1: "safe"}, results)
    assert isinstance(results[0].decision, Accept)


def test_set_by_label_keeps_comments_and_round_trips(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    out = set_by_label(text, 1, {"spam": 0.93, "hate": "never"})
    parsed = tomllib.loads(out)["tiers"][1]["accept"]
    assert parsed["min_confidence_by_label"] == {"spam": 0.93, "hate": "never"}
    assert parsed["min_confidence"] == 0.85  # untouched
    assert out.count("\n") == text.count("\n") + 1  # one line added, none lost
    again = set_by_label(out, 1, {"spam": 0.9})
    assert again.count("\n") == out.count("\n")  # replaced in place
    # its instructions_file is relative to it: the policy goes beside it
    policy = tomllib.loads(text)["instructions_file"]
    shutil.copy(EXAMPLE.with_name(policy), tmp_path / policy)
    (tmp_path / "written.toml").write_text(again)
    assert load_pipeline(tmp_path / "written.toml").tiers[1].accept.threshold("spam") == 0.9


def test_set_by_label_refuses_an_inline_accept() -> None:
    text = 'name = "x"\nlabels = ["a", "b"]\ninstructions = "i"\n[[tiers]]\nname = "s"\n'
    text += 'kind = "claude"\nmodel = "m"\naccept = { min_confidence = 0.8 }\n'
    with pytest.raises(ValueError, match=r"\[tiers.accept\] table"):
        set_by_label(text, 0, {"a": 0.9})


def _item(pk: int, decision: str, label: str, conf: float, above: str | None) -> TuningItem:
    item = TuningItem(pk, "done", above, None, None)
    item.verdicts.append(TierVerdict(1, "small", label, conf, decision))
    if above is not None and decision == "escalate":
        item.verdicts.append(TierVerdict(2, "large", above, 0.9, "accept"))
    if above is not None and decision == "accept":
        item.shadows[2] = ShadowAnswer(2, above, 0.9, 10)
    return item


def test_judged_answers_thin_escalations_to_the_shadow_rate() -> None:
    # Given 200 escalated items, all answered above, and a shadow rate of 0.25
    items = [_item(pk, "escalate", "spam", 0.5, "safe") for pk in range(200)]
    got = judged_answers(items, 1, use_gold=False, job_id=7, rate=0.25)
    # Then only those the shadow hash picks are pairs: one rate for every pair
    expected = sum(shadow_sampled(7, pk, 1, 0.25) for pk in range(200))
    assert len(got) == expected and 0 < expected < 200
    assert all(j == ("spam", Judged(0.5, True)) for j in got)


def test_judged_answers_accepted_items_need_a_shadow_and_gold_wins() -> None:
    items = [
        _item(1, "accept", "spam", 0.95, "spam"),  # shadowed, agrees
        _item(2, "accept", "spam", 0.95, None),  # not shadowed: no pair
    ]
    got = judged_answers(items, 1, use_gold=False, job_id=7, rate=0.5)
    assert got == [("spam", Judged(0.95, False))]
    items[1].gold = "safe"
    items[0].gold = "spam"
    got = judged_answers(items, 1, use_gold=True, job_id=7, rate=0.5)
    assert got == [("spam", Judged(0.95, False)), ("spam", Judged(0.95, True))]
    assert answered_counts(items, 1) == {"spam": 2}


def test_escalate_decision_is_unchanged_by_review_disagreement() -> None:
    pipe = _pipeline(review=True)
    results = [ItemResult(1, Escalate("low"), [_step(1, "primary", "spam", "escalate")])]
    mark_disagreements(pipe, 1, {}, results)
    assert isinstance(results[0].decision, Escalate)


def _spec(rate: float) -> dict[str, object]:
    tiers = [
        {"name": "rules", "kind": "rules"},  # skipped: a rule's confidence is set by hand
        {"name": "small", "kind": "claude", "shadow_rate": rate},
        {"name": "large", "kind": "claude"},
    ]
    return {"labels": ["safe", "spam"], "tiers": tiers}


def _ledger() -> list[TuningItem]:
    """small: 300 "safe" answers, sure and right (shadowed: the large tier agreed);
    40 "spam" answers, 8 of them overruled above."""
    items = [_item(pk, "accept", "safe", 0.97, "safe") for pk in range(300)]
    items += [_item(300 + i, "accept", "spam", 0.9, "safe" if i < 8 else "spam") for i in range(40)]
    return items


def test_tier_thresholds_certify_what_the_pairs_support() -> None:
    from cascade.tune_guarantee import tier_thresholds

    got = tier_thresholds(
        _ledger(), _spec(1.0), 7, max_error=0.02, confidence=0.95, per_label=True,
        allow_uncertified=False, use_gold=False,
    )  # fmt: skip
    # "safe": 0 of 300 wrong at >= 0.97 (bound 1 - 0.05^(1/300) = 0.00994), so every
    # lower threshold down to 0.5 adds nothing and passes; "spam": 20 % wrong: never
    assert got == {1: {"safe": 0.5, "spam": "never"}}
    kept = tier_thresholds(
        _ledger(), _spec(1.0), 7, max_error=0.02, confidence=0.95, per_label=True,
        allow_uncertified=True, use_gold=False,
    )  # fmt: skip
    assert kept == {1: {"safe": 0.5}}  # spam keeps the tier's min_confidence
    pooled = tier_thresholds(
        _ledger(), _spec(1.0), 7, max_error=0.05, confidence=0.95, per_label=False,
        allow_uncertified=False, use_gold=False,
    )  # fmt: skip
    # pooled, 8 of 340 wrong at >= 0.9 (2.4 %, bound under 5 %): one threshold for both
    assert pooled == {1: {"safe": 0.5, "spam": 0.5}}

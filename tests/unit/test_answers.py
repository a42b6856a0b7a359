from __future__ import annotations

from typing import Any

import pytest

from workers.answers import Answer, Malformed, Refused, is_hedged, judge
from workers.providers.base import Reply, Usage

LABELS = ("billing", "technical", "account")


def reply(
    structured: dict[str, Any] | None, stop_reason: str | None = "tool_use", text: str = ""
) -> Reply:
    return Reply(stop_reason=stop_reason, structured=structured, text=text, usage=Usage(10, 5))


def good(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"label": "billing", "confidence": 0.9, "reason": "About a charge."}
    data.update(overrides)
    return data


def test_valid_answer() -> None:
    assert judge(reply(good()), LABELS) == Answer("billing", 0.9, "About a charge.", False)


def test_labels_may_be_a_list() -> None:
    assert isinstance(judge(reply(good()), list(LABELS)), Answer)


def test_integer_confidence_becomes_a_float() -> None:
    judged = judge(reply(good(confidence=1)), LABELS)

    assert isinstance(judged, Answer)
    assert judged.confidence == 1.0
    assert type(judged.confidence) is float


@pytest.mark.parametrize("confidence", [0, 0.0, 1, 1.0])
def test_confidence_bounds_are_inclusive(confidence: float) -> None:
    assert isinstance(judge(reply(good(confidence=confidence)), LABELS), Answer)


def test_missing_reason_is_an_empty_reason() -> None:
    data = good()
    del data["reason"]

    assert judge(reply(data), LABELS) == Answer("billing", 0.9, "", False)


def test_a_hedged_reason_marks_the_answer_hedged() -> None:
    judged = judge(reply(good(reason="Maybe billing, maybe account.")), LABELS)

    assert isinstance(judged, Answer)
    assert judged.hedged is True


def test_a_long_reason_is_cut_to_500_characters_but_judged_whole() -> None:
    # Given a reason whose hedge sits after character 500
    reason = "x" * 600 + " but I think it is billing"

    # When it is judged
    judged = judge(reply(good(reason=reason)), LABELS)

    # Then the stored reason is truncated and the hedge still counts
    assert isinstance(judged, Answer)
    assert judged.reason == "x" * 500
    assert judged.hedged is True


def test_refusal_wins_even_with_a_valid_looking_answer() -> None:
    judged = judge(reply(good(), stop_reason="refusal"), LABELS)

    assert judged == Refused("the model refused (stop_reason=refusal)")


# (structured, stop_reason, expected Malformed detail)
MALFORMED: list[tuple[dict[str, Any] | None, str | None, str]] = [
    # no tool call / no JSON at all
    (None, "end_turn", "no structured answer (stop_reason=end_turn)"),
    # cut off before the tool call
    (None, "max_tokens", "no structured answer (stop_reason=max_tokens)"),
    # a label outside the set is never accepted
    (good(label="shipping"), "tool_use", "label 'shipping' is not one of the labels"),
    # labels are matched exactly, case included
    (good(label="Billing"), "tool_use", "label 'Billing' is not one of the labels"),
    # a missing label
    ({"confidence": 0.9, "reason": "r"}, "tool_use", "label None is not one of the labels"),
    # a label that is not a string
    (good(label=1), "tool_use", "label 1 is not one of the labels"),
    # a list label (unhashable) is rejected, not crashed on
    (good(label=["billing"]), "tool_use", "label ['billing'] is not one of the labels"),
    # confidence missing
    ({"label": "billing", "reason": "r"}, "tool_use", "confidence is missing or not a number"),
    # a bool is an int in Python but not a confidence
    (good(confidence=True), "tool_use", "confidence is missing or not a number"),
    # a number in a string is not a number
    (good(confidence="0.9"), "tool_use", "confidence is missing or not a number"),
    # null confidence
    (good(confidence=None), "tool_use", "confidence is missing or not a number"),
    # NaN compares false with everything, so it must be caught explicitly
    (good(confidence=float("nan")), "tool_use", "confidence nan is outside 0..1"),
    # infinity
    (good(confidence=float("inf")), "tool_use", "confidence inf is outside 0..1"),
    # negative
    (good(confidence=-0.1), "tool_use", "confidence -0.1 is outside 0..1"),
    # above one (a percentage, say)
    (good(confidence=85), "tool_use", "confidence 85 is outside 0..1"),
    # just above one
    (good(confidence=1.0001), "tool_use", "confidence 1.0001 is outside 0..1"),
    # a reason that is not a string
    (good(reason=["a", "b"]), "tool_use", "reason is not a string"),
    # a null reason is not an empty one
    (good(reason=None), "tool_use", "reason is not a string"),
]


@pytest.mark.parametrize(("structured", "stop_reason", "detail"), MALFORMED)
def test_malformed_answers(
    structured: dict[str, Any] | None, stop_reason: str | None, detail: str
) -> None:
    assert judge(reply(structured, stop_reason), LABELS) == Malformed(detail)


# (reason, hedged?)
HEDGES = [
    # "I think" is the model's own doubt
    ("I think it's billing", True),
    # "thinks" is a different word: the customer's opinion is not the model's hedge
    ("The customer thinks the app is great", False),
    # a plain, confident statement
    ("Clearly a billing issue", False),
    # "unclear" as a word is a hedge (and "Clearly" above is not "unclear")
    ("The intent is unclear", True),
    # "not sure"
    ("Not sure whether this is billing", True),
    # "not entirely certain"
    ("I am not entirely certain", True),
    # "unsure", case-insensitive
    ("UNSURE between labels", True),
    # "uncertain"
    ("Uncertain; could concern the account", True),
    # "it depends"
    ("It depends on what they mean", True),
    # "I guess"
    ("I guess technical", True),
    # "maybe"
    ("Maybe account", True),
    # "maybe" only as a whole word
    ("Asks about Maybelline products", False),
    # "perhaps"
    ("Perhaps shipping", True),
    # "possibly"
    ("Possibly a technical fault", True),
    # "might be"
    ("It might be an account issue", True),
    # "could be"
    ("This could be billing", True),
    # "hard to tell"
    ("Hard to tell from the text", True),
    # "difficult to determine"
    ("Difficult to determine the intent", True),
    # "can't tell" with an ASCII apostrophe
    ("I can't tell which", True),
    # "cant tell" without an apostrophe
    ("cant tell", True),
    # "cannot determine"
    ("Cannot determine the problem", True),
    # "ambiguous"
    ("The ticket is ambiguous", True),
    # "either ... or" within 60 characters
    ("Either billing or account", True),
    # "either" alone is not a hedge
    ("The customer cannot log in on either device", False),
    # "either ... or" too far apart is not matched
    ("Either " + "x" * 70 + " or not", False),
    # the regex flags doubt phrases wherever they appear, even about the customer
    ("The customer is not sure where the parcel is", True),
    # a confident reason with a certainty word
    ("Certainly a shipping question about a late parcel", False),
    # an empty reason does not hedge
    ("", False),
]


@pytest.mark.parametrize(("reason", "hedged"), HEDGES)
def test_is_hedged(reason: str, hedged: bool) -> None:
    assert is_hedged(reason) is hedged

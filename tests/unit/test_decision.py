from __future__ import annotations

import pytest

from workers.answers import Answer, Malformed, Refused
from workers.decision import (
    Accept,
    CallFailed,
    Decision,
    Defer,
    Escalate,
    Fallback,
    GiveUp,
    Outcome,
    Pause,
    after_chain,
    decide,
    defer_delay,
)
from workers.pipeline import AcceptPolicy

STRICT = AcceptPolicy(min_confidence=0.8, reject_hedging=True)
LENIENT = AcceptPolicy(min_confidence=0.8, reject_hedging=False)
ANY = AcceptPolicy(min_confidence=0.0, reject_hedging=False)


def answer(confidence: float, *, hedged: bool = False, label: str = "billing") -> Answer:
    return Answer(label, confidence, "a reason", hedged)


# (policy, outcome, is_last, expected decision type)
TABLE: list[tuple[AcceptPolicy, Outcome, bool, type]] = [
    # a confident, plain answer on a middle tier is kept
    (STRICT, answer(0.95), False, Accept),
    # below the threshold on a middle tier: let the next tier try
    (STRICT, answer(0.79), False, Escalate),
    # exactly at the threshold is good enough (the check is >=)
    (STRICT, answer(0.8), False, Accept),
    # confident but hedging, and the policy rejects hedging: escalate
    (STRICT, answer(0.95, hedged=True), False, Escalate),
    # confident and hedging, but the policy does not care about hedging: keep it
    (LENIENT, answer(0.95, hedged=True), False, Accept),
    # low confidence is still escalated when hedging is not checked
    (LENIENT, answer(0.5), False, Escalate),
    # a zero threshold keeps even a zero-confidence answer
    (ANY, answer(0.0), False, Accept),
    # the last tier always answers: a low-confidence answer is accepted
    (STRICT, answer(0.1), True, Accept),
    # the last tier always answers: a hedged answer is accepted even under a strict policy
    (STRICT, answer(0.95, hedged=True), True, Accept),
    # a malformed answer on a middle tier: a stronger model may do better
    (STRICT, Malformed("label 'x' is not one of the labels"), False, Escalate),
    # a malformed answer on the last tier has nowhere to escalate: try its fallback chain
    (STRICT, Malformed("no structured answer"), True, Fallback),
    # a refusal is never accepted; on a middle tier it goes to the fallback chain
    (STRICT, Refused("the model refused"), False, Fallback),
    # a refusal on the last tier also goes to the fallback chain
    (ANY, Refused("the model refused"), True, Fallback),
    # transient errors that outlived the retries: fall back to another model
    (STRICT, CallFailed("transient", "overloaded"), False, Fallback),
    # permanent errors (e.g. model retired): fall back
    (STRICT, CallFailed("permanent", "model not found"), False, Fallback),
    # prompt too long: a fallback with a longer context may serve it
    (STRICT, CallFailed("context", "prompt is too long"), False, Fallback),
    # a failed call on the last tier falls back too
    (ANY, CallFailed("transient", "overloaded"), True, Fallback),
    # the spend limit pauses the item: no tier or fallback can be paid for until resumed
    (STRICT, CallFailed("spend_limit", "limit reached"), False, Pause),
    # the spend limit also pauses the last tier
    (ANY, CallFailed("spend_limit", "limit reached"), True, Pause),
]


@pytest.mark.parametrize(("policy", "outcome", "is_last", "expected"), TABLE)
def test_decide_table(
    policy: AcceptPolicy, outcome: Outcome, is_last: bool, expected: type
) -> None:
    assert type(decide(policy, outcome, is_last=is_last)) is expected


# (policy, outcome, is_last, exact decision value)
VALUES: list[tuple[AcceptPolicy, Outcome, bool, Decision]] = [
    # an accepted answer carries its label, confidence and reason through
    (STRICT, answer(0.9, label="shipping"), False, Accept("shipping", 0.9, "a reason")),
    # the last tier keeps the answer's own (low) confidence, it does not invent one
    (STRICT, answer(0.2, label="other"), True, Accept("other", 0.2, "a reason")),
    # the escalation says which confidence missed which threshold
    (STRICT, answer(0.5), False, Escalate("confidence 0.50 < 0.80")),
    # the hedging escalation says why
    (STRICT, answer(0.9, hedged=True), False, Escalate("the answer hedges")),
    # a malformed escalation keeps the detail
    (
        STRICT,
        Malformed("no structured answer"),
        False,
        Escalate("malformed answer: no structured answer"),
    ),
    # a malformed fallback at the last tier keeps the detail as is
    (STRICT, Malformed("no structured answer"), True, Fallback("no structured answer")),
    # a refusal's detail is kept
    (STRICT, Refused("the model refused"), False, Fallback("the model refused")),
    # a failed call's fallback names the error kind
    (STRICT, CallFailed("permanent", "HTTP 404"), False, Fallback("permanent: HTTP 404")),
    # the pause says it was the spend limit
    (STRICT, CallFailed("spend_limit", "org cap"), False, Pause("spend limit reached: org cap")),
    # a refused key stops the job: no fallback model passes with the same key
    (
        STRICT,
        CallFailed("auth", "HTTP 401"),
        False,
        Pause("the model API refused the credentials: HTTP 401"),
    ),
]


@pytest.mark.parametrize(("policy", "outcome", "is_last", "expected"), VALUES)
def test_decide_values(
    policy: AcceptPolicy, outcome: Outcome, is_last: bool, expected: Decision
) -> None:
    assert decide(policy, outcome, is_last=is_last) == expected


@pytest.mark.parametrize("is_last", [False, True])
@pytest.mark.parametrize("policy", [STRICT, LENIENT, ANY])
def test_refusal_is_never_accepted(policy: AcceptPolicy, is_last: bool) -> None:
    assert not isinstance(decide(policy, Refused("no"), is_last=is_last), Accept)


@pytest.mark.parametrize("kind", ["transient", "permanent", "context", "spend_limit"])
@pytest.mark.parametrize("is_last", [False, True])
def test_a_failed_call_is_never_accepted_or_escalated(kind: str, is_last: bool) -> None:
    decision = decide(ANY, CallFailed(kind, "x"), is_last=is_last)

    assert isinstance(decision, Pause if kind == "spend_limit" else Fallback)


# after_chain: every link of a fallback chain failed; defer or dead-letter?
@pytest.mark.parametrize(
    ("kinds", "deferrals", "expected", "n"),
    [
        # an overloaded link may recover: defer, first time
        (["transient", "permanent"], 0, Defer, 1),
        # an open breaker or a drill passes with time too
        (["breaker_open"], 2, Defer, 3),
        (["drill"], 0, Defer, 1),
        # only permanent failures and bad answers: deferring cannot help
        (["permanent", "answer", "context"], 0, GiveUp, None),
        # the deferral budget is spent: dead-letter even though it might pass
        (["transient"], 6, GiveUp, None),
    ],
)
def test_after_chain(kinds: list[str], deferrals: int, expected: type, n: int | None) -> None:
    decision = after_chain(kinds, deferrals, 6, "why")
    assert type(decision) is expected
    if isinstance(decision, Defer):
        assert decision.n == n
    if deferrals >= 6:
        assert "dead-lettered after 6 deferrals" in decision.why


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, 15.0),  # the first deferral waits the base
        (2, 30.0),  # then doubles
        (5, 240.0),
        (6, 300.0),  # capped, far under the broker's 1 h visibility timeout
        (20, 300.0),
    ],
)
def test_defer_delay(n: int, expected: float) -> None:
    assert defer_delay(n, 15.0, 300.0) == expected


# -- moderation: per-label thresholds, review, refusal policy ---------------------------
from workers.decision import Review, refusal, review_disagreement  # noqa: E402

BY_LABEL = AcceptPolicy(
    min_confidence=0.8,
    reject_hedging=False,
    min_confidence_by_label={"harassment": 0.97, "spam": "never"},
)
REVIEW_LOW = AcceptPolicy(min_confidence=0.8, review_below=0.6)

# (policy, outcome, is_last, on_refusal, expected decision type)
MODERATION: list[tuple[AcceptPolicy, Outcome, bool, str, type]] = [
    # a label with its own threshold: 0.95 is enough for the default but not for it
    (BY_LABEL, answer(0.95, label="harassment"), False, "fallback", Escalate),
    # at or above its own threshold it is kept
    (BY_LABEL, answer(0.97, label="harassment"), False, "fallback", Accept),
    # a label without an entry uses min_confidence
    (BY_LABEL, answer(0.85, label="billing"), False, "fallback", Accept),
    # "never": a label that could not be certified is not kept at this tier, even at 1.0
    (BY_LABEL, answer(1.0, label="spam"), False, "fallback", Escalate),
    # the last tier below review_below: a person decides
    (REVIEW_LOW, answer(0.59), True, "fallback", Review),
    # the last tier at review_below is accepted as before
    (REVIEW_LOW, answer(0.6), True, "fallback", Accept),
    # review_below means nothing below the last tier (validation forbids it there)
    (REVIEW_LOW, answer(0.59), False, "fallback", Escalate),
    # a refusal under the default policy still goes to the fallback chain
    (STRICT, Refused("declined"), False, "fallback", Fallback),
    # on_refusal = "escalate": the next tier tries instead of another provider
    (STRICT, Refused("declined"), False, "escalate", Escalate),
    # "escalate" at the last tier has nowhere to go: review
    (STRICT, Refused("declined"), True, "escalate", Review),
    # on_refusal = "review": straight to a person
    (STRICT, Refused("declined"), False, "review", Review),
    # on_refusal = "label:unsafe": the refusal is the answer
    (STRICT, Refused("declined"), True, "label:unsafe", Accept),
    # the refusal policy never touches a valid answer
    (STRICT, answer(0.5), False, "review", Escalate),
]


@pytest.mark.parametrize(("policy", "outcome", "is_last", "on_refusal", "expected"), MODERATION)
def test_decide_moderation(
    policy: AcceptPolicy, outcome: Outcome, is_last: bool, on_refusal: str, expected: type
) -> None:
    assert type(decide(policy, outcome, is_last=is_last, on_refusal=on_refusal)) is expected


def test_a_refusal_as_a_label_keeps_the_reason() -> None:
    got = refusal("label:unsafe", "policy violation", is_last=False)
    assert isinstance(got, Accept)
    assert (got.label, got.confidence) == ("unsafe", 1.0)
    assert "policy violation" in got.reason


@pytest.mark.parametrize(
    ("decision", "other", "expected"),
    [
        (Accept("spam", 0.9, ""), "ham", Review),  # another tier said otherwise
        (Accept("spam", 0.9, ""), "spam", Accept),  # they agree
        (Accept("spam", 0.9, ""), None, Accept),  # no other answer to compare
        (Escalate("low"), "ham", Escalate),  # only accepted answers are contested
    ],
)
def test_review_disagreement(decision: Decision, other: str | None, expected: type) -> None:
    got = review_disagreement(decision, other, "small")
    assert type(got) is expected
    if isinstance(got, Review):
        assert (got.label, got.confidence) == ("spam", 0.9)


# -- the budget: keep a lower tier's answer, else hold ----------------------------------

from workers.decision import Capped, Hold, check_consistency, over_budget  # noqa: E402


@pytest.mark.parametrize(
    ("label", "confidence", "expected"),
    [
        # a lower tier answered: its answer is kept, flagged (Capped), with who gave it
        ("billing", 0.6, Capped("billing", 0.6, "budget spent", "small")),
        # a confidence of 0.0 is still an answer
        ("billing", 0.0, Capped("billing", 0.0, "budget spent", "small")),
        # no answer yet: the item waits for `cascade resume --budget`
        (None, None, Hold("budget spent")),
        # half an answer is no answer
        ("billing", None, Hold("budget spent")),
        (None, 0.7, Hold("budget spent")),
    ],
)
def test_over_budget(label: str | None, confidence: float | None, expected: Capped | Hold) -> None:
    assert over_budget(label, confidence, "budget spent", "small") == expected


def test_a_review_reads_its_reason_like_an_accept() -> None:
    review = Review("billing", 0.4, "last tier's confidence 0.40 < review_below 0.50")

    assert review.reason == review.why


def test_a_consistency_failure_says_what_each_disagreeing_answer_was() -> None:
    primary = Accept("billing", 0.9, "About a charge.")
    extras: list[Outcome] = [
        Malformed("no json"),
        Refused("refused"),
        CallFailed("transient", "529"),
        answer(0.9, label="shipping"),
        answer(0.9),
    ]

    decision = check_consistency(primary, extras, 1.0)

    assert decision == Escalate(
        "consistency: 1/5 extra answers agree with 'billing' (need 1.00; others said "
        "malformed, refused, no answer (transient), shipping)"
    )

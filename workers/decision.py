"""What to do with an item after one tier has spoken: a pure function over values."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from common.lifecycle import Outcome as StepOutcome
from common.lifecycle import Verdict
from common.stops import AUTH_FAILED
from workers.answers import Answer, Judged, Malformed, Refused
from workers.pipeline import AcceptPolicy


@dataclass(frozen=True, slots=True)
class CallFailed:
    """Every try of a call failed (after the retry policy): the provider error's kind."""

    kind: str  # transient | permanent | context | auth | spend_limit
    detail: str


class _Decision:
    """A decision names its verdict as a class keyword: ``class Escalate(_Why, kind=...)``."""

    __slots__ = ()
    kind: ClassVar[Verdict]

    def __init_subclass__(cls, kind: Verdict | None = None) -> None:
        # None keeps the class's own: ``@dataclass(slots=True)`` builds the class
        # again, without the keyword
        if kind is not None:
            cls.kind = kind


@dataclass(frozen=True, slots=True)
class Accept(_Decision, kind=Verdict.ACCEPT):
    label: str
    confidence: float
    reason: str

    def noting(self, check: str) -> Accept:
        """The same answer, its reason noting a check it passed."""
        return Accept(self.label, self.confidence, f"{self.reason} [{check}]".strip())


@dataclass(frozen=True, slots=True)
class _Why(_Decision):
    """A decision that carries only its reason."""

    why: str


class Escalate(_Why, kind=Verdict.ESCALATE):
    """This tier's answer is not kept (unsure, malformed, hedging): the next tier tries."""


class Fallback(_Why, kind=Verdict.FALLBACK):
    """The tier could not answer (a failed call, a refusal): its fallback chain tries."""


class GiveUp(_Why, kind=Verdict.FAIL):
    """Nothing more to try: the item fails, with the reason."""


class Pause(_Why, kind=Verdict.PAUSE):
    """The spend limit is reached: the item waits, unspent, until the job is resumed."""


class Hold(_Why, kind=Verdict.HOLD):
    """The budget is spent and the item has no answer yet: it waits for `cascade resume`."""


@dataclass(frozen=True, slots=True)
class Defer(_Why, kind=Verdict.DEFER):
    """Every link is unavailable for now: try the fallback chain again later."""

    n: int = 1  # this item's deferral number (1 for the first)


@dataclass(frozen=True, slots=True)
class Capped(_Decision, kind=Verdict.CAPPED):
    """The budget is spent: the item keeps its best lower-tier answer, flagged for review."""

    label: str
    confidence: float
    why: str
    tier: str = ""  # the lower tier that gave the answer


@dataclass(frozen=True, slots=True)
class Review(_Decision, kind=Verdict.REVIEW):
    """Final for the machine: a person decides. The machine's best answer, if any, rides along."""

    label: str | None
    confidence: float | None
    why: str

    @property
    def reason(self) -> str:
        return self.why


Decision = Accept | Escalate | Fallback | GiveUp | Defer | Pause | Capped | Hold | Review
# Failures that may pass with time (a retry later can succeed); the rest are permanent.
TEMPORARY_KINDS = frozenset({StepOutcome.TRANSIENT, StepOutcome.BREAKER_OPEN, StepOutcome.DRILL})
Outcome = Judged | CallFailed


def decide(
    policy: AcceptPolicy, outcome: Outcome, *, is_last: bool, on_refusal: str = Verdict.FALLBACK
) -> Decision:
    """Accept, escalate to the next tier, hand to the fallback chain, review, or give up.

    The last tier always answers: a valid answer there is accepted whatever its
    confidence, unless it is below the policy's ``review_below`` (then a person
    decides); anything it cannot answer goes to its fallback chain. A lower tier
    keeps an answer at or above its label's threshold (``min_confidence_by_label``,
    else ``min_confidence``). A refusal follows ``on_refusal`` (see :func:`refusal`).
    """
    match outcome:
        case CallFailed(kind=StepOutcome.SPEND_LIMIT, detail=detail):
            return Pause(f"spend limit reached: {detail}")
        case CallFailed(kind="auth", detail=detail):
            # no other model or later try passes with the same key: stop the job
            return Pause(f"{AUTH_FAILED}: {detail}")
        case CallFailed(kind=kind, detail=detail):
            return Fallback(f"{kind}: {detail}")
        case Refused(detail=detail):
            return refusal(on_refusal, detail, is_last=is_last)
        case Malformed(detail=detail):
            return Fallback(detail) if is_last else Escalate(f"malformed answer: {detail}")
        case Answer() as answer:
            return _judge(policy, answer, is_last)
    raise AssertionError(f"unknown outcome {outcome!r}")  # pragma: no cover


def _judge(policy: AcceptPolicy, answer: Answer, is_last: bool) -> Decision:
    if is_last:
        floor = policy.review_below
        if floor is not None and answer.confidence < floor:
            why = f"last tier's confidence {answer.confidence:.2f} < review_below {floor:.2f}"
            return Review(answer.label, answer.confidence, why)
        return Accept(answer.label, answer.confidence, answer.reason)
    needed = policy.threshold(answer.label)
    if needed is None:
        return Escalate(f"label {answer.label!r} is never accepted at this tier")
    if answer.confidence < needed:
        return Escalate(f"confidence {answer.confidence:.2f} < {needed:.2f}")
    if policy.reject_hedging and answer.hedged:
        return Escalate("the answer hedges")
    return Accept(answer.label, answer.confidence, answer.reason)


def refusal(policy: str, detail: str, *, is_last: bool) -> Decision:
    """A model refused: its fallback chain (the default), the next tier, review, or a label.

    ``label:NAME`` makes the refusal itself the answer (a moderation signal), with
    confidence 1.0; ``escalate`` on the last tier (no next tier) goes to review.
    """
    why = f"refused: {detail}"
    if policy == Verdict.REVIEW or (policy == Verdict.ESCALATE and is_last):
        return Review(None, None, why)
    if policy == Verdict.ESCALATE:
        return Escalate(why)
    if policy.startswith("label:"):
        return Accept(policy.removeprefix("label:"), 1.0, f"{why} [on_refusal = {policy}]")
    return Fallback(detail)


def review_disagreement(decision: Decision, other: str | None, whose: str) -> Decision:
    """An accepted answer that another tier's answer (``other``) contradicts goes to review."""
    if isinstance(decision, Accept) and other is not None and other != decision.label:
        why = f"tiers disagree: {decision.label!r} here, {other!r} from {whose}"
        return Review(decision.label, decision.confidence, why)
    return decision


def after_chain(
    failures: list[str], deferrals: int, max_deferrals: int, reasons: str
) -> Defer | GiveUp:
    """Every link of a fallback chain failed: defer while any failure may pass, else give up.

    ``failures`` are the error kinds of the last try of each link.
    """
    if deferrals < max_deferrals and any(k in TEMPORARY_KINDS for k in failures):
        return Defer(f"deferred ({deferrals + 1}/{max_deferrals}): {reasons}", deferrals + 1)
    if deferrals >= max_deferrals:
        return GiveUp(f"dead-lettered after {deferrals} deferrals: {reasons}")
    return GiveUp(reasons)


def over_budget(
    label: str | None, confidence: float | None, why: str, answered_by: str = ""
) -> Capped | Hold:
    """An item the budget cannot pay for: keep a lower tier's answer if it has one."""
    if label is not None and confidence is not None:
        return Capped(label, confidence, why, answered_by)
    return Hold(why)


def defer_delay(n: int, base_s: float, cap_s: float) -> float:
    """Seconds before the ``n``-th deferral is tried again: doubling from ``base_s``, capped."""
    return float(min(cap_s, base_s * 2 ** max(0, n - 1)))


# -- checks before accepting (consistency, verifier) -------------------------------
VERDICT_CORRECT, VERDICT_INCORRECT = "correct", "incorrect"
VERDICT_LABELS = (VERDICT_CORRECT, VERDICT_INCORRECT)


def _said(outcome: Outcome) -> str:
    match outcome:
        case Answer(label=label):
            return label
        case CallFailed(kind=kind):
            return f"no answer ({kind})"
        case Refused():
            return "refused"
        case _:
            return StepOutcome.MALFORMED


def check_consistency(
    primary: Accept, extras: Sequence[Outcome], min_agree: float
) -> Accept | Escalate:
    """Keep ``primary`` only if enough of the extra answers give the same label.

    An extra call that failed, was refused or answered badly counts as not agreeing:
    a check that could not run does not pass.
    """
    if not extras:
        return primary
    agree = sum(1 for e in extras if isinstance(e, Answer) and e.label == primary.label)
    share = agree / len(extras)
    if share + 1e-9 >= min_agree:
        return primary.noting(f"{agree}/{len(extras)} consistency answers agree")
    others = ", ".join(
        _said(e) for e in extras if not (isinstance(e, Answer) and e.label == primary.label)
    )
    return Escalate(
        f"consistency: {agree}/{len(extras)} extra answers agree with {primary.label!r} "
        f"(need {min_agree:.2f}; others said {others})"
    )


def check_verdict(primary: Accept, verdict: Outcome, min_confidence: float) -> Accept | Escalate:
    """Keep ``primary`` only if the verifier says "correct" with at least ``min_confidence``."""
    match verdict:
        case Answer(label=label, confidence=confidence) if (
            label == VERDICT_CORRECT and confidence >= min_confidence
        ):
            return primary.noting(f"verifier: correct {confidence:.2f}")
        case Answer(label=label, confidence=confidence, reason=reason):
            return Escalate(
                f"verifier: {label} ({confidence:.2f}, need correct >= {min_confidence:.2f}): "
                f"{reason}"[:500]
            )
        case CallFailed(kind=kind, detail=detail):
            return Escalate(f"verifier could not answer: {kind}: {detail}"[:500])
        case Refused(detail=detail) | Malformed(detail=detail):
            return Escalate(f"verifier gave no verdict: {detail}"[:500])
    raise AssertionError(f"unknown verdict {verdict!r}")  # pragma: no cover


def shadow_sampled(job_id: int, item_pk: int, tier_index: int, rate: float) -> bool:
    """Whether an item a tier accepted is also sent to the next tier (a shadow sample).

    Deterministic per (job, item, tier): a redelivered batch samples the same items.
    """
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.sha256(f"shadow:{job_id}:{item_pk}:{tier_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < rate

"""What to do with an item after one tier has spoken: a pure function over values."""

from __future__ import annotations

from dataclasses import dataclass

from workers.answers import Answer, Judged, Malformed, Refused
from workers.pipeline import AcceptPolicy


@dataclass(frozen=True, slots=True)
class CallFailed:
    """Every try of a call failed (after the retry policy): the provider error's kind."""

    kind: str  # transient | permanent | context | spend_limit
    detail: str


@dataclass(frozen=True, slots=True)
class Accept:
    label: str
    confidence: float
    reason: str


@dataclass(frozen=True, slots=True)
class Escalate:
    why: str


@dataclass(frozen=True, slots=True)
class Fallback:
    why: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    why: str


Decision = Accept | Escalate | Fallback | GiveUp
Outcome = Judged | CallFailed


def decide(policy: AcceptPolicy, outcome: Outcome, *, is_last: bool) -> Decision:
    """Accept, escalate to the next tier, hand to the fallback chain, or give up.

    The last tier always answers: a valid answer there is accepted whatever its
    confidence; anything it cannot answer goes to its fallback chain.
    """
    match outcome:
        case CallFailed(kind="spend_limit", detail=detail):
            return GiveUp(f"spend limit reached: {detail}")
        case CallFailed(kind=kind, detail=detail):
            return Fallback(f"{kind}: {detail}")
        case Refused(detail=detail):
            return Fallback(detail)
        case Malformed(detail=detail):
            return Fallback(detail) if is_last else Escalate(f"malformed answer: {detail}")
        case Answer() as answer:
            if is_last:
                return Accept(answer.label, answer.confidence, answer.reason)
            if answer.confidence < policy.min_confidence:
                return Escalate(f"confidence {answer.confidence:.2f} < {policy.min_confidence:.2f}")
            if policy.reject_hedging and answer.hedged:
                return Escalate("the answer hedges")
            return Accept(answer.label, answer.confidence, answer.reason)
    raise AssertionError(f"unknown outcome {outcome!r}")  # pragma: no cover

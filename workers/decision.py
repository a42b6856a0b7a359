"""What to do with an item after one tier has spoken: a pure function over values."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from common.stops import AUTH_FAILED
from workers.answers import Answer, Judged, Malformed, Refused
from workers.pipeline import AcceptPolicy


@dataclass(frozen=True, slots=True)
class CallFailed:
    """Every try of a call failed (after the retry policy): the provider error's kind."""

    kind: str  # transient | permanent | context | auth | spend_limit
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


@dataclass(frozen=True, slots=True)
class Defer:
    """Every link is unavailable for now: try the fallback chain again later."""

    why: str
    n: int = 1  # this item's deferral number (1 for the first)


@dataclass(frozen=True, slots=True)
class Pause:
    """The spend limit is reached: the item waits, unspent, until the job is resumed."""

    why: str


@dataclass(frozen=True, slots=True)
class Capped:
    """The budget is spent: the item keeps its best lower-tier answer, flagged for review."""

    label: str
    confidence: float
    why: str
    tier: str = ""  # the lower tier that gave the answer


@dataclass(frozen=True, slots=True)
class Hold:
    """The budget is spent and the item has no answer yet: it waits for `cascade resume`."""

    why: str


Decision = Accept | Escalate | Fallback | GiveUp | Defer | Pause | Capped | Hold
# Failures that may pass with time (a retry later can succeed); the rest are permanent.
TEMPORARY_KINDS = frozenset({"transient", "breaker_open", "drill"})
Outcome = Judged | CallFailed


def decide(policy: AcceptPolicy, outcome: Outcome, *, is_last: bool) -> Decision:
    """Accept, escalate to the next tier, hand to the fallback chain, or give up.

    The last tier always answers: a valid answer there is accepted whatever its
    confidence; anything it cannot answer goes to its fallback chain.
    """
    match outcome:
        case CallFailed(kind="spend_limit", detail=detail):
            return Pause(f"spend limit reached: {detail}")
        case CallFailed(kind="auth", detail=detail):
            # no other model or later try passes with the same key: stop the job
            return Pause(f"{AUTH_FAILED}: {detail}")
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
            return "malformed"


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
        return Accept(
            primary.label,
            primary.confidence,
            f"{primary.reason} [{agree}/{len(extras)} consistency answers agree]".strip(),
        )
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
            return Accept(
                primary.label,
                primary.confidence,
                f"{primary.reason} [verifier: correct {confidence:.2f}]".strip(),
            )
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

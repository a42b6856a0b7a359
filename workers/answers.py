"""Judging a reply that arrived: a valid answer, a refusal, or a malformed answer.

Nothing that fails these checks is ever accepted as an answer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from workers.providers.base import Reply

# Phrases that mark a hedged answer (the article's "pattern matching" signal).
_HEDGES = re.compile(
    r"\b(not (?:entirely |completely |totally )?(?:sure|certain|clear)|unsure|uncertain|"
    r"it depends|i think|i guess|maybe|perhaps|possibly|might be|could be|hard to (?:say|tell)"
    r"|difficult to (?:say|tell|determine)|can'?t tell|cannot (?:tell|determine)|unclear"
    r"|ambiguous|either\b.{1,60}\bor)\b",
    re.IGNORECASE,
)


def is_hedged(reason: str) -> bool:
    return _HEDGES.search(reason) is not None


@dataclass(frozen=True, slots=True)
class Answer:
    label: str
    confidence: float
    reason: str
    hedged: bool


@dataclass(frozen=True, slots=True)
class Refused:
    detail: str


@dataclass(frozen=True, slots=True)
class Malformed:
    detail: str


Judged = Answer | Refused | Malformed


def judge(reply: Reply, labels: tuple[str, ...] | list[str]) -> Judged:
    if reply.stop_reason == "refusal":
        return Refused("the model refused (stop_reason=refusal)")
    data = reply.structured
    if data is None:
        return Malformed(f"no structured answer (stop_reason={reply.stop_reason})")
    label = data.get("label")
    if not isinstance(label, str) or label not in labels:
        return Malformed(f"label {label!r} is not one of the labels")
    confidence = data.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return Malformed("confidence is missing or not a number")
    if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
        return Malformed(f"confidence {confidence!r} is outside 0..1")
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        return Malformed("reason is not a string")
    return Answer(label, float(confidence), reason[:500], is_hedged(reason))

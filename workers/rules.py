"""The rules tier: ordered regular expressions, first match wins; free and instant."""

from __future__ import annotations

import re
from dataclasses import dataclass

from workers.pipeline import RulesTier


@dataclass(frozen=True, slots=True)
class RuleHit:
    index: int
    label: str
    confidence: float


class CompiledRules:
    def __init__(self, tier: RulesTier) -> None:
        self._rules = [(re.compile(r.pattern), r.label, r.confidence) for r in tier.rules]

    def match(self, text: str) -> RuleHit | None:
        for i, (pattern, label, confidence) in enumerate(self._rules):
            if pattern.search(text):
                return RuleHit(i, label, confidence)
        return None

"""The rules tier: the first rule in order wins, not the one matching leftmost."""

from __future__ import annotations

from workers.pipeline import RulesTier
from workers.rules import CompiledRules


def _tier(patterns: list[str]) -> RulesTier:
    return RulesTier.model_validate(
        {
            "name": "rules",
            "kind": "rules",
            "rules": [{"pattern": p, "label": f"l{i}"} for i, p in enumerate(patterns)],
        }
    )


def test_an_earlier_rule_wins_over_one_matching_further_left() -> None:
    rules = CompiledRules(_tier([r"(?i)\brefund\b", r"\border\b", r"(?i)where"]))
    hit = rules.match("Where is my order? I want a REFUND")
    assert hit is not None and (hit.index, hit.label) == (0, "l0")
    hit = rules.match("where is my order")
    assert hit is not None and hit.index == 1
    assert rules.match("nothing here") is None

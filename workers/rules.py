"""The rules tier: ordered regular expressions, first match wins; free and instant.

A prefilter skips most regex searches. When a tier is compiled, each pattern's parse tree
(``re._parser``) is walked for *required literals*: strings that every possible match of the pattern
contains (a run of plain characters outside any optional part, or one that every branch
of an alternation has). If the text lacks one of them, the pattern cannot match, so its
search is skipped; otherwise the search runs as before. The result is therefore always the
one the plain "search each rule in order" loop gives.

Why this is sound:

* A literal is only called required when it appears in every match: literals under a
  repeat that may run zero times, in a branch that others do not share, or inside a
  lookaround or a character class count for nothing. Any construct the walk does not know,
  a parser that is missing or fails, or an unusual flag (LOCALE) gives the rule no
  prefilter at all; compilation never fails because of the prefilter.
* Only literals made of ASCII characters are kept, and the prefilter is applied only to
  ASCII text. Under IGNORECASE some non-ASCII characters match ASCII letters (KELVIN SIGN
  matches 'k', 'ſ' matches 's'), so ``text.lower()`` models case-insensitive matching
  faithfully only for ASCII text. Case-insensitive literals are stored lowercased and looked
  for in ``text.lower()``; case-sensitive ones are looked for in ``text`` itself (and, as a
  first cheap test, lowercased in ``text.lower()``, which an ASCII text containing them
  passes too). Non-ASCII text (``str.isascii`` is O(1)) runs every rule's search, as
  without the prefilter. For example ``(?i)stop`` matches "ſtop", whose ``lower()`` has no
  "stop".

One frozen RuleHit per rule is built at compile time and returned by every match of it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.lifecycle import Outcome
from workers.decision import Accept, Decision, Escalate
from workers.pipeline import RulesTier

Search = Callable[[str], "re.Match[str] | None"]
RequiredLiteral = tuple[str, bool]  # (text, case_insensitive); case-insensitive text is lowercased
MAX_LITERALS = 3  # per rule, the longest ones: they are the most selective

# flags that do not change which characters a literal matches in ASCII text
_SAFE_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE | re.VERBOSE | re.ASCII


class _Unknown(Exception):
    """The parse tree holds something the walk does not model: no prefilter for the rule."""


class _Walk:
    """Collects the literals every match of a parsed pattern contains (``re._parser`` trees)."""

    def __init__(self, parser: Any) -> None:
        p = parser
        self.literal = p.LITERAL
        self.subpattern = p.SUBPATTERN
        self.atomic = p.ATOMIC_GROUP
        self.branch = p.BRANCH
        self.repeats = (p.MAX_REPEAT, p.MIN_REPEAT, p.POSSESSIVE_REPEAT)
        # nodes that contribute no literal of their own (never looked inside)
        self.opaque = (
            p.AT,
            p.IN,
            p.ANY,
            p.NOT_LITERAL,
            p.ASSERT,
            p.ASSERT_NOT,
            p.GROUPREF,
            p.GROUPREF_EXISTS,
        )

    def sequence(self, nodes: Any, ignorecase: bool) -> set[RequiredLiteral]:
        required: set[RequiredLiteral] = set()
        run: list[str] = []

        def end_run() -> None:
            if run:
                text = "".join(run)
                required.add((text.lower(), True) if ignorecase else (text, False))
                run.clear()

        for op, av in nodes:
            if op is self.literal and av < 128:
                run.append(chr(av))
                continue
            end_run()
            if op is self.literal or op in self.opaque:
                continue
            if op is self.subpattern:
                _group, add_flags, del_flags, body = av
                if (add_flags | del_flags) & ~_SAFE_FLAGS:
                    raise _Unknown(add_flags, del_flags)
                scoped = (ignorecase or bool(add_flags & re.IGNORECASE)) and not (
                    del_flags & re.IGNORECASE
                )
                required |= self.sequence(body, scoped)
            elif op is self.atomic:
                required |= self.sequence(av, ignorecase)
            elif op in self.repeats:
                low, _high, body = av
                if low >= 1:
                    required |= self.sequence(body, ignorecase)
            elif op is self.branch:
                _none, alternatives = av
                common = self.sequence(alternatives[0], ignorecase)
                for alternative in alternatives[1:]:
                    common &= self.sequence(alternative, ignorecase)
                required |= common
            else:
                raise _Unknown(op)
        end_run()
        return required


def required_literals(pattern: str) -> tuple[RequiredLiteral, ...]:
    """Up to MAX_LITERALS ASCII literals every match of `pattern` contains; () if unsure."""
    try:
        parser = importlib.import_module("re._parser")
        tree = parser.parse(pattern)
        flags = tree.state.flags
        if flags != re.compile(pattern).flags or flags & ~_SAFE_FLAGS:
            return ()
        found = _Walk(parser).sequence(tree, bool(flags & re.IGNORECASE))
    except Exception:  # any surprise only means that the rule has no prefilter
        return ()
    kept: list[RequiredLiteral] = []
    for text, insensitive in sorted(found, key=lambda lit: (-len(lit[0]), lit)):
        # a literal inside a longer kept one (same case mode) is implied by it
        if text and not any(text in k and insensitive == i for k, i in kept):
            kept.append((text, insensitive))
    return tuple(kept[:MAX_LITERALS])


@dataclass(frozen=True, slots=True)
class RuleHit:
    index: int
    label: str
    confidence: float


class CompiledRules:
    def __init__(self, tier: RulesTier) -> None:
        patterns = [re.compile(r.pattern) for r in tier.rules]
        self._required = tuple(required_literals(r.pattern) for r in tier.rules)
        # RuleHit is frozen: one instance per rule, shared by every match
        hits = [RuleHit(i, r.label, r.confidence) for i, r in enumerate(tier.rules)]
        self._plain: list[tuple[Search, RuleHit]] = [
            (p.search, hit) for p, hit in zip(patterns, hits, strict=True)
        ]
        # per rule: (search, key, more, exact, hit). `key`, the longest literal lowercased
        # ("" when there is none, which every string contains), is looked for in the
        # lowercased text first; a case-sensitive literal is also looked for as it is.
        self._checks: list[tuple[Search, str, tuple[str, ...], tuple[str, ...], RuleHit]] = []
        for (search, hit), literals in zip(self._plain, self._required, strict=True):
            key = literals[0][0].lower() if literals else ""
            more = tuple(text for text, insensitive in literals[1:] if insensitive)
            exact = tuple(text for text, insensitive in literals if not insensitive)
            self._checks.append((search, key, more, exact, hit))

    @property
    def required(self) -> tuple[tuple[RequiredLiteral, ...], ...]:
        """Per rule, the literals its prefilter checks (empty: the search always runs)."""
        return self._required

    def match(self, text: str) -> RuleHit | None:
        if not text.isascii():  # no prefilter: see the module docstring
            for search, hit in self._plain:
                if search(text):
                    return hit
            return None
        low = text.lower()
        for search, key, more, exact, hit in self._checks:
            if key in low:
                for literal in more:
                    if literal not in low:
                        break
                else:
                    for literal in exact:
                        if literal not in text:
                            break
                    else:
                        if search(text):
                            return hit
        return None


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What a rules tier records for an item one rule (or no rule) matched; the local
    tier says what its model answered in the same shape."""

    decision: Decision
    model: str  # "rule:<index>", or "rules" for no match
    outcome: Outcome
    label: str | None = None
    confidence: float | None = None


def rule_outcomes(tier: RulesTier) -> list[RuleOutcome]:
    """Per rule in order, then one for no rule matching (escalate)."""
    out = []
    for i, rule in enumerate(tier.rules):
        decision: Decision = (
            Accept(rule.label, rule.confidence, f"rule {i} matched")
            if rule.confidence >= tier.accept.min_confidence
            else Escalate("no rule matched")
        )
        out.append(
            RuleOutcome(decision, f"rule:{i}", Outcome.RULE_MATCH, rule.label, rule.confidence)
        )
    out.append(RuleOutcome(Escalate("no rule matched"), "rules", Outcome.RULE_MISS))
    return out

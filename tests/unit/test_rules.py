"""The rules tier: the first rule in order wins, not the one matching leftmost; the
required-literal prefilter never changes which rule that is."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest

from workers.pipeline import RulesTier, load_pipeline
from workers.rules import CompiledRules, RuleHit, required_literals


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


# --- the required-literal prefilter ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _example_patterns(name: str) -> list[str]:
    tier = load_pipeline(EXAMPLES / name).tiers[0]
    assert isinstance(tier, RulesTier)
    return [rule.pattern for rule in tier.rules]


TRIAGE = _example_patterns("support_triage.toml")
MODERATION = _example_patterns("moderation.toml")

# Patterns chosen to trip a careless walk: top-level alternations, optional and repeated
# groups, scoped flags, lookarounds, backreferences, conditionals, non-ASCII literals that
# case-fold onto ASCII letters, and patterns with no literal at all.
TRICKY = [
    r"fOo|bar",
    r"abc|abd",
    r"order|reorder",
    r"a(?:bc)?d",
    r"(?:foo|bar)",
    r"x{0,3}yz",
    r"(?:ab){2,}c",
    r"(?:ab)++c",
    r"(?>ab|a)c",
    r"(?i)x(?-i:Foo)y",
    r"(?i:AB)cd",
    r"(?i)(?:password|PASS)word",
    r"q(?=uit)",
    r"(?<!un)lock(?!ed)",
    r"(?<=my )order",
    r"(\w+) \1",
    r"(?P<w>a|b)c(?P=w)",
    r"(x)?(?(1)a|b)c",
    r"\bis\b",
    r"^Where\b",
    r"(?m)^my$",
    r"(?x) t r a c k  # a comment",
    r"(?s)o.{1,3}r",
    r"[0-9]+",
    r"\d{2,}x",
    r"[^a]bc",
    r"[k]elvin",
    r"(?i)[k]elvin",
    r"(?i)kelvin",
    r"(?i)stop",
    r"(?i)link",
    r"(?ai)kel",
    r"(?i)stra\u00dfe",
    r"(?i)\u0130d",
    r"caf\u00e9",
    r"(?i)\bmy\s+account\b",
    r"(?:ab)*?c",
    r"a|",
    r"",
    r"(?:)",
]


# Texts that match (or nearly match) the patterns above; the corpus mutates them.
SEEDS = [
    "I forgot my password",
    "how do I reset the password?",
    "Password reset link please",
    "Where's my parcel?",
    "where\u2019s my package",
    "where is my order",
    "no tracking number yet",
    "a PDF of the receipts",
    "copy of an invoice",
    "what is your refunds policy",
    "business hours on Sunday",
    "the app keeps crashing at start-up",
    "App crashed immediately on opening",
    "please delete my account",
    "see bit.ly/abc123",
    "use promo code SAVE",
    "free gift cards",
    "earn $5,000k per day",
    "xFooy XFOOY",
    "ABcd abCD",
    "abababc ababc",
    "quit it",
    "lock unlock locked",
    "my order, reorder",
    "bcb aca xac",
    "word word",
    "track a kelvin stop link",
    "stra\u00dfe STRASSE",
    "\u0130d id",
    "caf\u00e9 cafe",
    "order",
    "top\nmy\nend",
]


def _reference(patterns: list[str], text: str) -> RuleHit | None:
    """The plain loop the prefilter must agree with: search every rule in order."""
    for i, pattern in enumerate(patterns):
        if re.search(pattern, text):
            return RuleHit(i, f"l{i}", 1.0)
    return None


def _corpus() -> list[str]:
    rng = random.Random(20240611)
    lines = (EXAMPLES / "tickets.jsonl").read_text(encoding="utf-8").splitlines()
    tickets = [json.loads(line)["text"] for line in lines[:-3]]  # the last 3 are bad on purpose
    words = sorted(
        {w for p in TRIAGE + MODERATION + TRICKY for w in re.findall(r"[A-Za-z]{2,}", p)}
        | {lit for p in TRIAGE + MODERATION + TRICKY for lit, _ in required_literals(p)}
        | {"my", "is", "of", "on", "at", "a", "an", "the", "'s", "\u2019s", "#12", "$5k"}
    )
    separators = [" ", " ", " ", "", "  ", "\t", "\n", ", ", "-", "/", "'"]
    odd = ["\u212a", "\u017f", "\u0131", "\u0130", "\u00e9", "\u00df", "\u2019", "\u00e1"]
    folds = {"k": "\u212a", "s": "\u017f", "i": "\u0131", "I": "\u0130"}

    def recase(word: str) -> str:
        mode = rng.randrange(4)
        if mode == 0:
            return word
        if mode == 1:
            return word.upper()
        if mode == 2:
            return word.capitalize()
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in word)

    def mix() -> str:
        parts = [recase(rng.choice(words)) for _ in range(rng.randint(1, 7))]
        return "".join(p + rng.choice(separators) for p in parts)

    def mutate(text: str) -> str:
        chars = list(text)
        for _ in range(rng.randint(0, 3)):
            j = rng.randrange(len(chars) + 1)
            op = rng.randrange(4)
            if op == 0 and j < len(chars):
                del chars[j]
            elif op == 1 and j < len(chars):
                chars[j] = folds.get(chars[j], chars[j].swapcase())
            elif op == 2:
                chars.insert(j, rng.choice(separators))
            else:
                chars.insert(j, rng.choice(odd) if rng.random() < 0.3 else rng.choice(words))
        return "".join(chars)

    texts = list(tickets)
    for _ in range(2000):
        seed = rng.choice(SEEDS + tickets)
        if rng.random() < 0.3:
            seed = seed + rng.choice(separators) + rng.choice(SEEDS)
        text = " ".join(recase(w) for w in seed.split(" ")) if rng.random() < 0.5 else seed
        texts.append(mutate(text))
    texts += [mix() for _ in range(2500)]
    ascii_letters = "abcdeiklmnoprstuwxyzABKS0123456789 .,'#$/\n"
    texts += [
        "".join(rng.choice(ascii_letters) for _ in range(rng.randint(0, 40))) for _ in range(800)
    ]
    texts += ["".join(chr(rng.randrange(32, 127)) for _ in range(30)) for _ in range(200)]
    for _ in range(1200):
        text = list(mix())
        for j, c in enumerate(text):
            if c in folds and rng.random() < 0.4:
                text[j] = folds[c]
        if rng.random() < 0.5:
            text.insert(rng.randint(0, len(text)), rng.choice(odd))
        texts.append("".join(text))
    return texts


CORPUS = _corpus()


def test_the_corpus_has_both_ascii_and_non_ascii_texts() -> None:
    assert sum(t.isascii() for t in CORPUS) > 2000
    assert sum(not t.isascii() for t in CORPUS) > 1000
    for odd in ("\u212a", "\u017f", "\u0131", "\u0130", "\u00e9"):
        assert any(odd in t for t in CORPUS)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (TRIAGE[0], {("password", True)}),
        (TRIAGE[1], {("where", True), ("my", True)}),
        (TRIAGE[2], {("tracking", True)}),
        (TRIAGE[6], {("crash", True), ("app", True)}),
        (r"a(?:bc)?d", {("a", False), ("d", False)}),
        (r"(?:foo|bar)", set()),
        (r"(?i)Foo", {("foo", True)}),
        (r"(?i)x(?-i:Foo)", {("Foo", False), ("x", True)}),
        (r"(?i:AB)cd", {("ab", True), ("cd", False)}),
        (r"x{0,3}yz", {("yz", False)}),
        (r"(?:ab){2,}c", {("ab", False), ("c", False)}),
        (r"q(?=uit)e", {("q", False), ("e", False)}),
        (r"(?<!un)lock(?!ed)", {("lock", False)}),
        (r"abc|abd", {("ab", False)}),
        (r"fOo|bar", set()),
        (r"(\w+) \1", {(" ", False)}),
        (r"(x)?(?(1)a|b)c", {("c", False)}),
        (r"(?x) t r a c k  # a comment", {("track", False)}),
        (r"[k]elvin", {("kelvin", False)}),
        (r"(?i)stra\u00dfe", {("stra", True), ("e", True)}),
        (r"\d+|\w", set()),
        ("", set()),
    ],
)
def test_required_literals(pattern: str, expected: set[tuple[str, bool]]) -> None:
    assert set(required_literals(pattern)) == expected


def test_only_the_longest_literals_are_kept_and_implied_ones_are_dropped() -> None:
    literals = required_literals(r"a\bbb\bccc\bdddd\bpassword\bpass")
    assert literals == (("password", False), ("dddd", False), ("ccc", False))


def test_a_missing_parser_only_costs_the_prefilter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "re._parser", None)  # importing it now fails
    rules = CompiledRules(_tier([r"(?i)\brefund\b", r"order"]))
    assert rules.required == ((), ())
    hit = rules.match("my ORDER, not a Refund")
    assert hit is not None and hit.index == 0


def test_the_compiled_tier_exposes_each_rules_literals() -> None:
    rules = CompiledRules(_tier([TRIAGE[0], r"\d+", r"(?i)x(?-i:Foo)"]))
    assert rules.required == ((("password", True),), (), (("Foo", False), ("x", True)))


@pytest.mark.parametrize(
    "patterns",
    [
        pytest.param(TRIAGE, id="support_triage"),
        pytest.param(MODERATION, id="moderation"),
        pytest.param(TRICKY, id="tricky"),
        pytest.param(TRIAGE[::-1] + TRICKY[::3], id="mixed"),
    ],
)
def test_match_equals_the_plain_loop(patterns: list[str]) -> None:
    rules = CompiledRules(_tier(patterns))
    for text in CORPUS:
        assert rules.match(text) == _reference(patterns, text), (patterns, text)


@pytest.mark.parametrize("pattern", TRIAGE + MODERATION + TRICKY)
def test_each_pattern_alone_equals_a_plain_search(pattern: str) -> None:
    rules = CompiledRules(_tier([pattern]))
    for text in CORPUS:
        assert rules.match(text) == _reference([pattern], text), (pattern, text)


def test_non_ascii_text_is_searched_without_the_prefilter() -> None:
    # Under IGNORECASE, 'ſ' matches 's' and 'ı' matches 'i', but lower() keeps them as they
    # are, so a lower()-based prefilter on this text would wrongly skip the rule.
    assert "stop" not in "\u017ftop".lower() and "link" not in "l\u0131nk".lower()
    rules = CompiledRules(_tier([r"(?i)kelvin", r"(?i)stop", r"(?i)link"]))
    for text, index in [("\u212aelvin", 0), ("\u017ftop", 1), ("l\u0131nk", 2)]:
        hit = rules.match(text)
        assert hit is not None and hit.index == index

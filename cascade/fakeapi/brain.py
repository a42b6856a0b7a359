"""The fake model's "thinking": deterministic keyword scoring, no I/O.

A small vocabulary per known label (support triage and moderation) is matched
against the item's words after a crude stemming, so "charges", "charged" and
"charging" all hit "charge". Only labels in the request's label set count.

Small models (id contains "haiku") are unsure on ties and on long texts with
no signal, sometimes saying so in the reason; large models always commit.
All jitter comes from ``sha256(model + text)``, so the same call always gets
the same answer. Instructions inside the text are just more words.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

VOCABULARY: dict[str, tuple[str, ...]] = {
    # support triage
    "billing": (
        "charge", "charged", "invoice", "refund", "payment", "billing", "overcharged",
        "credit card", "price", "receipt",
    ),
    "technical": (
        "error", "crash", "bug", "broken", "not loading", "timeout", "freezes", "install",
        "sync", "outage",
    ),
    "account": (
        "password", "account", "login", "username", "locked", "2fa", "two-factor",
        "email address", "sign in", "profile",
    ),
    "shipping": (
        "order", "delivery", "shipped", "tracking", "package", "courier", "parcel", "arrived",
        "warehouse",
    ),
    "feedback": (
        "love", "great", "suggestion", "feature request", "would be nice", "awesome", "thanks",
        "disappointed", "review",
    ),
    # moderation
    "spam": (
        "buy now", "free money", "click here", "discount", "crypto", "limited offer",
        "giveaway", "promo code", "dm me",
    ),
    "harassment": ("idiot", "stupid", "loser", "shut up", "nobody likes you", "pathetic"),
    "hate": ("vermin", "subhuman", "go back to your country", "those people are animals"),
    "self_harm": ("hurt myself", "end it all", "no reason to live", "kill myself"),
    "sexual": ("nsfw", "explicit", "nude", "onlyfans"),
    "violence": ("kill you", "beat you", "punch", "shoot", "bomb", "stab"),
}  # fmt: skip

SMALL_MARKER = "haiku"
LONG_TEXT_CHARS = 120

_WORD = re.compile(r"[a-z0-9]+")
_SUFFIXES = ("ing", "ed", "es", "s")
_VOWELS = frozenset("aeiou")


@dataclass(frozen=True, slots=True)
class Verdict:
    label: str
    confidence: float
    reason: str


def stem(word: str) -> str:
    """A crude stemmer: enough that 'charged', 'charges', 'charging' meet 'charge'."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    # "stabbed" -> "stabb" -> "stab"; but not "kill" or "sell" (needs a vowel before).
    if (
        len(word) > 3
        and word[-1] == word[-2]
        and word[-1] not in _VOWELS
        and word[-1] not in "lsz"
        and word[-3] in _VOWELS
    ):
        word = word[:-1]
    return word


def words(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower())]


def _build_index() -> dict[str, list[tuple[str, tuple[str, ...], str]]]:
    """First stem of each phrase -> (label, stems of the phrase, phrase)."""
    index: dict[str, list[tuple[str, tuple[str, ...], str]]] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for label, phrases in VOCABULARY.items():
        for phrase in phrases:
            stems = tuple(words(phrase))
            if (label, stems) in seen:  # "charge" and "charged" share a stem: count once
                continue
            seen.add((label, stems))
            index.setdefault(stems[0], []).append((label, stems, phrase))
    return index


_INDEX = _build_index()


def default_label(labels: Sequence[str]) -> str:
    if "other" in labels:
        return "other"
    if "safe" in labels:
        return "safe"
    return labels[-1]


def score(text: str, labels: Sequence[str]) -> dict[str, list[str]]:
    """Label -> the phrases that matched it, for labels in ``labels`` only."""
    wanted = set(labels)
    tokens = words(text)
    hits: dict[str, list[str]] = {}
    for i, token in enumerate(tokens):
        for label, stems, phrase in _INDEX.get(token, ()):
            if label in wanted and tuple(tokens[i : i + len(stems)]) == stems:
                hits.setdefault(label, []).append(phrase)
    return hits


def _unit(digest: bytes, start: int) -> float:
    """A float in [0, 1) from 8 bytes of the digest."""
    return int.from_bytes(digest[start : start + 8], "big") / 2.0**64


def _in_range(low: float, high: float, u: float) -> float:
    return round(low + (high - low) * u, 2)


def _because(label: str, phrases: list[str]) -> str:
    seen = list(dict.fromkeys(phrases))[:2]
    cues = " and ".join(f"'{p}'" for p in seen)
    return f"Mentions {cues}, which points to {label}."[:119]


def classify(model: str, text: str, labels: Sequence[str]) -> Verdict:
    """Deterministic verdict for ``text`` among ``labels`` as ``model`` would give it."""
    if not labels:
        raise ValueError("labels must not be empty")
    digest = hashlib.sha256((model + "\x00" + text).encode()).digest()
    u = _unit(digest, 0)
    hedge = digest[8] % 2 == 1
    fallback = default_label(labels)
    hits = score(text, labels)
    order = {label: i for i, label in enumerate(labels)}
    ranked = sorted(hits, key=lambda lb: (-len(hits[lb]), order[lb]))
    top = len(hits[ranked[0]]) if ranked else 0
    second = len(hits[ranked[1]]) if len(ranked) > 1 else 0
    small = SMALL_MARKER in model.lower()

    if not small:
        if ranked:
            best = ranked[0]
            return Verdict(best, _in_range(0.85, 0.98, u), _because(best, hits[best]))
        return Verdict(fallback, _in_range(0.85, 0.98, u), f"No specific signal; {fallback}.")

    if ranked and top > second:
        best = ranked[0]
        return Verdict(best, _in_range(0.86, 0.97, u), _because(best, hits[best]))
    if ranked:  # the top two tie
        best, runner_up = ranked[0], ranked[1]
        if hedge:
            reason = f"I'm not sure; it could be {best} or {runner_up}."
        else:
            reason = _because(best, hits[best])
        return Verdict(best, _in_range(0.40, 0.65, u), reason)
    if len(text) > LONG_TEXT_CHARS:
        others = [lb for lb in labels if lb != fallback] or [fallback]
        maybe = others[digest[9] % len(others)]
        if hedge:
            reason = f"I'm not sure; it could be {fallback} or {maybe}."
        else:
            reason = f"Nothing specific stands out; {fallback}."
        return Verdict(fallback, _in_range(0.40, 0.65, u), reason)
    return Verdict(
        fallback, _in_range(0.70, 0.80, u), f"Short text with no specific signal; {fallback}."
    )


VERDICT_LABELS = ("correct", "incorrect")


def verify(model: str, text: str, labels: Sequence[str], proposed: str) -> Verdict:
    """A verifier's verdict on ``proposed``: "correct" when it is what ``model`` would answer.

    The confidence is the model's own confidence in its answer, so a verifier is
    unsure exactly where the model itself would be (ties, long texts with no signal).
    """
    own = classify(model, text, labels)
    if own.label == proposed:
        return Verdict("correct", own.confidence, f"The label fits: {own.reason}"[:119])
    return Verdict(
        "incorrect", own.confidence, f"It is {own.label}, not {proposed}: {own.reason}"[:119]
    )

"""Deterministic input files with a known mix, chosen with the fake's own brain.

Categories (for examples/support_triage.toml and the fake models):
- ``rules``: a rule of the rules tier matches;
- ``small``: no rule matches and the small model (claude-haiku-5-5) answers with
  confidence >= 0.8 and no hedging, so the item is settled at tier 1;
- ``large``: no rule matches and the small model is unsure, so it escalates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from cascade.fakeapi.brain import classify
from workers.answers import is_hedged
from workers.pipeline import ClaudeTier, RulesTier, load_pipeline
from workers.rules import CompiledRules

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "examples" / "support_triage.toml"
POOL = 300
RULE_TEMPLATES = (
    "Where is my order #{n}? It was supposed to arrive last week and nothing yet.",
    "I forgot my password again, can you help me get back in? Ref {n}.",
    "Can I get a copy of my invoice for order {n}, please? Accounting needs it.",
    "What are your opening hours on public holidays? Asking for store {n}.",
    "Please delete my account, customer number {n}. I no longer use the service.",
    "The tracking number for parcel {n} does not work on the courier's site.",
)
PAD = "x" * 40  # brings a line to ~200 bytes like real tickets with metadata


def submitted_pipeline(work: Path) -> Path:
    """The pipeline the throughput scenarios submit with: PIPELINE with ``reuse = false``.

    The files repeat a few hundred texts (a pool per category), so with reuse on the
    cascade would answer each text once and take the rest from it: a figure about
    reuse, not about making every call, and not comparable with the raw ceiling, which
    calls for every item.
    """
    path = work / "support_triage_no_reuse.toml"
    path.write_text("reuse = false\n" + PIPELINE.read_text())
    return path


def _base_texts() -> list[str]:
    texts = []
    for line in (ROOT / "examples" / "tickets.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        text = row.get("text") if isinstance(row, dict) else None
        if isinstance(text, str) and text.strip() and len(text) < 400:
            texts.append(text)
    return sorted(set(texts))


def pools() -> dict[str, list[str]]:
    pipe = load_pipeline(PIPELINE)
    rules_tier, small_tier = pipe.tiers[0], pipe.tiers[1]
    assert isinstance(rules_tier, RulesTier) and isinstance(small_tier, ClaudeTier)
    rules = CompiledRules(rules_tier)
    small_min = small_tier.accept.min_confidence
    out: dict[str, list[str]] = {"rules": [], "small": [], "large": []}
    out["rules"] = [RULE_TEMPLATES[k % len(RULE_TEMPLATES)].format(n=k) for k in range(POOL)]
    assert all(rules.match(t) for t in out["rules"])
    bases = _base_texts()
    k = 0
    while len(out["small"]) < POOL or len(out["large"]) < POOL:
        base = bases[k % len(bases)]
        text = base if k < len(bases) else f"{base} (ref {k})"
        k += 1
        if rules.match(text):
            continue
        v = classify(small_tier.model, text, pipe.labels)
        confident = v.confidence >= small_min and not is_hedged(v.reason)
        bucket = out["small"] if confident else out["large"]
        if len(bucket) < POOL:
            bucket.append(text)
    return out


def _line(i: int, text: str) -> str:
    row = {"id": f"i{i:08d}", "text": text, "channel": "email", "customer_tier": "free",
           "note": PAD}  # fmt: skip
    return json.dumps(row, ensure_ascii=False)


def mixed(n: int, p: dict[str, list[str]]) -> Iterator[str]:
    """60 % rules, 30 % small, 10 % escalated, interleaved (i % 10)."""
    for i in range(n):
        r = i % 10
        cat = "rules" if r < 6 else "small" if r < 9 else "large"
        pool = p[cat]
        yield _line(i, pool[(i // 10) % len(pool)])


def only(n: int, category: str, p: dict[str, list[str]]) -> Iterator[str]:
    pool = p[category]
    for i in range(n):
        yield _line(i, pool[i % len(pool)])


def write(path: Path, lines: Iterator[str]) -> Path:
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    tmp.rename(path)
    return path


MODERATION = ROOT / "examples" / "moderation.toml"


def posts(n: int) -> Iterator[str]:
    """``n`` forum posts for examples/moderation.toml: the 200 of examples/posts.jsonl in
    turn, each round after the first with a ``(round k)`` tail, and a repeated text with
    a ``(#i)`` tail, so every text is its own: the soak tells items apart by their text
    (about 16 % rules, 11 % settled by the small model, 73 % escalated to the large one)."""
    rows = [
        json.loads(line)
        for line in (ROOT / "examples" / "posts.jsonl").read_text().splitlines()
        if line.strip()
    ]
    seen: set[str] = set()
    for i in range(n):
        row = rows[i % len(rows)]
        k = i // len(rows)
        text = row["text"] if k == 0 else f"{row['text']} (round {k})"
        if text in seen:
            text = f"{text} (#{i})"
        seen.add(text)
        yield json.dumps({**row, "id": f"p{i:07d}", "text": text}, ensure_ascii=False)

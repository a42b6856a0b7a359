"""The recorded data: FrugalGPT's answers of 12 LLM APIs on OVERRULING (2,160 sentences)."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared/bench/frugalgpt/overruling_12llm.csv"
LABELS = ("no", "yes")


@dataclass(frozen=True, slots=True)
class Row:
    qid: str
    text: str
    gold: str  # "no" | "yes"
    answers: dict[str, str]  # model -> raw recorded completion
    ok: dict[str, bool]  # model -> the completion equals the gold label
    cost_nanos: dict[str, int]  # model -> recorded cost of the call, nano-USD

    def valid(self, model: str) -> bool:
        return self.answers[model].strip().lower() in LABELS


def to_nanos(usd: str) -> int:
    return int((Decimal(usd) * 1_000_000_000).to_integral_value(rounding=ROUND_HALF_UP))


def load(path: Path = DEFAULT_CSV) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        models = [c.removeprefix("ans__") for c in reader.fieldnames or [] if c.startswith("ans__")]
        return [
            Row(
                qid=r["qid"],
                text=r["text"],
                gold=r["label"].strip().lower(),
                answers={m: r[f"ans__{m}"] for m in models},
                ok={m: r[f"ok__{m}"] == "1" for m in models},
                cost_nanos={m: to_nanos(r[f"cost__{m}"]) for m in models},
            )
            for r in reader
        ]


def split(rows: list[Row], seed: int) -> tuple[list[Row], list[Row]]:
    """A seeded 50/50 permutation: (train half, test half)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    half = len(rows) // 2
    return [rows[i] for i in order[:half]], [rows[i] for i in order[half:]]

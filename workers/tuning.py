"""Threshold tuning from outcome data: pure functions over values, no I/O.

Two views of the same question, "how low may a tier's ``min_confidence`` go?":

- **One tier** (:func:`curve`, :func:`recommend`): each item the tier answered is
  an :class:`Observation`: its confidence, whether its answer matched the
  reference (gold, or the higher tier's answer when the item escalated) and what
  it cost here and above. For each candidate threshold the curve gives the share
  of items the tier keeps, the job-level quality (kept answers judged against the
  reference, escalated items taking the higher tier's quality) and the cost per
  item. Unknowns (no reference seen) are left out of the quality, and their
  count is reported, so a recommendation says how many pairs it rests on.
- **A whole cascade** (:func:`simulate`, :func:`cheapest`): per item, every
  tier's answer is known (a replay, or shadow samples); run the cascade for a
  list of thresholds and find the cheapest setting that reaches an accuracy.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_GRID: tuple[float, ...] = (
    0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98,
    0.99, 1.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Observation:
    """One item as seen by one tier."""

    confidence: float
    correct: bool | None  # this tier's answer vs the reference; None: no reference
    cost_nanos: int  # what this tier spent on the item
    above_correct: bool | None = None  # the higher tier's answer vs the reference, if seen
    above_cost_nanos: int | None = None  # what the higher tiers spent, if it escalated


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    kept_share: float  # items this tier would accept
    quality: float | None  # agreement (or accuracy) of the job's answers; None: no pairs
    verified: int  # kept answers that had a reference to be judged against
    cost_per_item_nanos: float  # this tier plus the (estimated) tiers above


@dataclass(frozen=True, slots=True)
class Recommendation:
    point: CurvePoint | None  # None: no threshold meets the target
    reason: str
    pairs: int  # observations with a reference, what the recommendation rests on


def _mean(values: Iterable[float], default: float) -> float:
    items = list(values)
    return sum(items) / len(items) if items else default


def curve(
    observations: Sequence[Observation], thresholds: Sequence[float] = DEFAULT_GRID
) -> list[CurvePoint]:
    """The trade-off at each threshold (an item is kept when confidence >= threshold).

    Quality = kept share x (agreement of the kept answers that have a reference)
    + escalated share x (the higher tier's measured quality, 1.0 when it *is* the
    reference). Kept answers without a reference are assumed to do as well as the
    kept ones that have one: conservative, since those were the more confident.
    """
    n = len(observations)
    if n == 0:
        return []
    above_cost = _mean(
        (o.above_cost_nanos for o in observations if o.above_cost_nanos is not None), 0.0
    )
    above_quality = _mean(
        (float(o.above_correct) for o in observations if o.above_correct is not None), 1.0
    )
    points = []
    for t in sorted(thresholds):
        kept = [o for o in observations if o.confidence >= t]
        escalated = [o for o in observations if o.confidence < t]
        judged = [float(o.correct) for o in kept if o.correct is not None]
        share = len(kept) / n
        quality: float | None
        if kept and not judged:
            quality = None
        else:
            quality = share * _mean(judged, 0.0) + (1 - share) * above_quality
        cost = sum(o.cost_nanos for o in observations) + sum(
            o.above_cost_nanos if o.above_cost_nanos is not None else above_cost for o in escalated
        )
        points.append(
            CurvePoint(
                threshold=t,
                kept_share=share,
                quality=quality,
                verified=len(judged),
                cost_per_item_nanos=cost / n,
            )
        )
    return points


def recommend(
    points: Sequence[CurvePoint],
    pairs: int,
    *,
    target: float | None = None,
    budget_nanos: float | None = None,
) -> Recommendation:
    """The cheapest point meeting ``target``, or the most careful point within ``budget``."""
    if (target is None) == (budget_nanos is None):
        raise ValueError("give exactly one of target and budget_nanos")
    if target is not None:
        meeting = [p for p in points if p.quality is not None and p.quality >= target]
        if not meeting:
            return Recommendation(None, f"no threshold reaches {target:.3f}", pairs)
        best = min(meeting, key=lambda p: (p.cost_per_item_nanos, -p.threshold))
        return Recommendation(best, f"cheapest threshold with quality >= {target:.3f}", pairs)
    assert budget_nanos is not None
    affordable = [p for p in points if p.cost_per_item_nanos <= budget_nanos]
    if not affordable:
        return Recommendation(None, "no threshold fits the budget", pairs)
    best = max(affordable, key=lambda p: (p.threshold, p.quality or 0.0))
    return Recommendation(best, "most careful threshold within the budget", pairs)


# -- a whole cascade -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TierAnswer:
    """What one tier would say about one item."""

    confidence: float | None  # None: no valid answer (malformed), so the item escalates
    correct: bool
    cost_nanos: int


@dataclass(frozen=True, slots=True)
class CascadeResult:
    thresholds: tuple[float, ...]
    accuracy: float
    cost_nanos: int
    kept: tuple[int, ...]  # items settled at each tier


def simulate(rows: Sequence[Sequence[TierAnswer]], thresholds: Sequence[float]) -> CascadeResult:
    """Run the cascade: tier k keeps an item when its confidence >= thresholds[k].

    ``thresholds`` has one entry per tier but the last, which always answers.
    """
    if not rows:
        return CascadeResult(tuple(thresholds), 0.0, 0, ())
    tiers = len(rows[0])
    if len(thresholds) != tiers - 1:
        raise ValueError(f"need {tiers - 1} thresholds, got {len(thresholds)}")
    right = cost = 0
    kept = [0] * tiers
    for row in rows:
        for k, answer in enumerate(row):
            cost += answer.cost_nanos
            last = k == tiers - 1
            if last or (answer.confidence is not None and answer.confidence >= thresholds[k]):
                right += answer.correct
                kept[k] += 1
                break
    return CascadeResult(tuple(thresholds), right / len(rows), cost, tuple(kept))


def cheapest(
    rows: Sequence[Sequence[TierAnswer]],
    candidates: Iterable[Sequence[float]],
    target_accuracy: float,
) -> CascadeResult | None:
    """The cheapest threshold setting whose accuracy reaches the target (ties: more accurate)."""
    meeting = [r for r in (simulate(rows, c) for c in candidates) if r.accuracy >= target_accuracy]
    if not meeting:
        return None
    return min(meeting, key=lambda r: (r.cost_nanos, -r.accuracy))


# -- writing a threshold back into the pipeline file ----------------------------------

_TIERS_HEADER = re.compile(r"^\s*\[\[\s*tiers\s*\]\]")
_ANY_HEADER = re.compile(r"^\s*\[")
_ACCEPT_HEADER = re.compile(r"^\s*\[\s*tiers\s*\.\s*accept\s*\]")
_MIN_CONF = re.compile(r"^(\s*min_confidence\s*=\s*)([0-9.eE+\-]+)")
_INLINE_ACCEPT = re.compile(r"^\s*accept\s*=\s*\{")
_INLINE_MIN_CONF = re.compile(r"(min_confidence\s*=\s*)([0-9.eE+\-]+)")


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.1f}"


def set_min_confidence(toml_text: str, tier_index: int, value: float) -> str:
    """The pipeline file's text with ``tiers[tier_index].accept.min_confidence = value``.

    Edits the one number in place (or adds the key or the ``[tiers.accept]`` table),
    leaving every other line, comment and blank as it was; the result is parsed
    back and checked.
    """
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"min_confidence must be within 0..1, got {value}")
    lines = toml_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _TIERS_HEADER.match(line)]
    if not 0 <= tier_index < len(starts):
        raise ValueError(f"the file has no tiers[{tier_index}] written as a [[tiers]] table")
    begin = starts[tier_index]
    end = starts[tier_index + 1] if tier_index + 1 < len(starts) else len(lines)
    new = _number(value)
    done = False
    for i in range(begin + 1, end):
        if _ACCEPT_HEADER.match(lines[i]):
            j = i + 1
            while j < end and not _ANY_HEADER.match(lines[j]):
                if _MIN_CONF.match(lines[j]):
                    lines[j] = _MIN_CONF.sub(lambda m: m.group(1) + new, lines[j], count=1)
                    done = True
                    break
                j += 1
            if not done:
                lines.insert(i + 1, f"min_confidence = {new}\n")
                done = True
            break
        if _ANY_HEADER.match(lines[i]):
            continue
        if _INLINE_ACCEPT.match(lines[i]) and _INLINE_MIN_CONF.search(lines[i]):
            lines[i] = _INLINE_MIN_CONF.sub(lambda m: m.group(1) + new, lines[i], count=1)
            done = True
            break
    if not done:
        at = end
        while at > begin + 1 and not lines[at - 1].strip():
            at -= 1
        if at > 0 and not lines[at - 1].endswith("\n"):
            lines[at - 1] += "\n"
        lines[at:at] = ["[tiers.accept]\n", f"min_confidence = {new}\n"]
    out = "".join(lines)
    try:
        parsed = tomllib.loads(out)
    except tomllib.TOMLDecodeError:  # e.g. a second accept table beside an inline one
        parsed = None
    got = parsed["tiers"][tier_index].get("accept", {}).get("min_confidence") if parsed else None
    if got is None or abs(float(got) - float(new)) > 1e-12:
        raise ValueError("could not set min_confidence without rewriting the file")
    return out


_BY_LABEL = re.compile(r"^\s*min_confidence_by_label\s*=")
_BY_LABEL_TABLE = re.compile(r"^\s*\[\s*tiers\s*\.\s*accept\s*\.\s*min_confidence_by_label\s*\]")


def _inline(by_label: dict[str, float | str]) -> str:
    cells = ", ".join(
        f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {_number(v)}"
        for k, v in sorted(by_label.items())
    )
    return f"min_confidence_by_label = {{ {cells} }}\n".replace("{  }", "{}")


def set_by_label(toml_text: str, tier_index: int, by_label: dict[str, float | str]) -> str:
    """The pipeline file's text with ``tiers[i].accept.min_confidence_by_label`` set.

    Written as one inline-table line in the tier's ``[tiers.accept]`` table (replacing
    the line if there is one, else after ``min_confidence``); every other line stays.
    """
    current = min_confidence_of(tomllib.loads(toml_text)["tiers"][tier_index])
    text = set_min_confidence(toml_text, tier_index, current)
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _TIERS_HEADER.match(line)]
    begin = starts[tier_index]
    end = starts[tier_index + 1] if tier_index + 1 < len(starts) else len(lines)
    if any(_BY_LABEL_TABLE.match(lines[i]) for i in range(begin, end)):
        raise ValueError("write min_confidence_by_label inline, in [tiers.accept]")
    accept = next((i for i in range(begin, end) if _ACCEPT_HEADER.match(lines[i])), None)
    if accept is None:
        raise ValueError(f"write tiers[{tier_index}].accept as a [tiers.accept] table")
    j = accept + 1
    while j < end and not _ANY_HEADER.match(lines[j]) and not _BY_LABEL.match(lines[j]):
        j += 1
    if j < end and _BY_LABEL.match(lines[j]):
        lines[j] = _inline(by_label)
    else:
        at = next(i for i in range(accept + 1, end) if _MIN_CONF.match(lines[i])) + 1
        lines.insert(at, _inline(by_label))
    out = "".join(lines)
    got = tomllib.loads(out)["tiers"][tier_index]["accept"].get("min_confidence_by_label")
    if got != by_label:
        raise ValueError("could not set min_confidence_by_label without rewriting the file")
    return out


def min_confidence_of(tier: Mapping[str, Any]) -> float:
    """A pipeline tier's min_confidence as written (0.8, the default, when absent)."""
    return float(tier.get("accept", {}).get("min_confidence", 0.8))

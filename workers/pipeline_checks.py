"""Checks of a pipeline file across its fields, on the raw data (before the schema),
so that they report beside the schema's own problems and a user fixes all in one pass."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from common.lifecycle import Verdict

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,39}$")


def cross_checks(data: dict[str, Any]) -> list[str]:
    """Checks across fields, run on the raw data so they report even beside field errors."""
    problems: list[str] = []
    labels = data.get("labels")
    labels = (
        set(labels)
        if isinstance(labels, list) and all(isinstance(x, str) for x in labels)
        else None
    )
    tiers = data.get("tiers")
    if not isinstance(tiers, list):
        return problems
    seen: set[str] = set()
    for i, tier in _tables(tiers):
        name = tier.get("name")
        if isinstance(name, str):
            if not NAME_RE.match(name):
                problems.append(f"tiers[{i}].name: use lowercase letters, digits, '-' or '_'")
            if name in seen:
                problems.append(f"tiers[{i}].name: duplicate tier name {name!r}")
            seen.add(name)
        rules = tier.get("rules") if tier.get("kind") == "rules" else None
        if labels is not None and isinstance(rules, list):
            for j, rule in enumerate(rules):
                label = rule.get("label") if isinstance(rule, dict) else None
                if isinstance(label, str) and label not in labels:
                    problems.append(
                        f"tiers[{i}].rules[{j}].label: {label!r} is not one of the labels"
                    )
    examples = data.get("examples")
    if labels is not None and isinstance(examples, list):
        for j, example in enumerate(examples):
            label = example.get("label") if isinstance(example, dict) else None
            if isinstance(label, str) and label not in labels:
                problems.append(f"examples[{j}].label: {label!r} is not one of the labels")
    problems += _quality_checks(tiers)
    problems += _moderation_checks(tiers, labels)
    if tiers and isinstance(tiers[-1], dict) and tiers[-1].get("kind") in ("rules", "local"):
        problems.append(
            f"tiers[{len(tiers) - 1}]: the last tier must be a model tier (it always answers)"
        )
    return problems


def _tables(tiers: list[Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The tiers written as tables, with their index (any other is the schema's to report)."""
    return ((i, tier) for i, tier in enumerate(tiers) if isinstance(tier, dict))


def _quality_checks(tiers: list[Any]) -> list[str]:
    """Shadow sampling and accept checks need a next tier and realtime calls."""
    problems: list[str] = []
    last = len(tiers) - 1
    for i, tier in _tables(tiers):
        rate = tier.get("shadow_rate")
        batch = tier.get("mode") == "batch"
        if i == last and isinstance(rate, int | float) and rate > 0:
            problems.append(
                f"tiers[{i}].shadow_rate: not allowed on the last tier (no tier above to compare)"
            )
        elif batch and isinstance(rate, int | float) and rate > 0:
            problems.append(f'tiers[{i}].shadow_rate: needs mode = "realtime"')
        accept = tier.get("accept")
        if not isinstance(accept, dict):
            continue
        for check in ("consistency", "verifier"):
            if accept.get(check) is None or tier.get("kind") != "claude":
                continue  # on a rules or local tier the key is reported as unknown
            if i == last:
                problems.append(
                    f"tiers[{i}].accept.{check}: not allowed on the last tier (it always answers)"
                )
            elif batch:
                problems.append(f'tiers[{i}].accept.{check}: needs mode = "realtime"')
    return problems


def _moderation_checks(tiers: list[Any], labels: set[str] | None) -> list[str]:
    """Per-label thresholds name labels; review_below and escalating refusals need a place."""
    problems: list[str] = []
    last = len(tiers) - 1
    for i, tier in _tables(tiers):
        accept = tier.get("accept")
        accept = accept if isinstance(accept, dict) else {}
        by_label = accept.get("min_confidence_by_label")
        if isinstance(by_label, dict) and by_label:
            where = f"tiers[{i}].accept.min_confidence_by_label"
            if i == last:
                problems.append(f"{where}: not allowed on the last tier (use review_below)")
            elif tier.get("kind") == "rules":
                problems.append(f"{where}: a rules tier sets each rule's confidence instead")
            unknown = sorted(k for k in by_label if labels is not None and k not in labels)
            if unknown:
                problems.append(f"{where}: {unknown} are not among the labels")
        if accept.get("review_below") is not None and i != last:
            problems.append(f"tiers[{i}].accept.review_below: only on the last tier")
        refusal = tier.get("on_refusal")
        if refusal == Verdict.ESCALATE and i == last:
            problems.append(f"tiers[{i}].on_refusal: the last tier has no next tier")
        named = refusal.removeprefix("label:") if isinstance(refusal, str) else None
        if named != refusal and labels is not None and named not in labels:
            problems.append(f"tiers[{i}].on_refusal: {refusal!r} names no label")
    return problems

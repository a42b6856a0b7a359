"""Human review when tiers disagree: the pipeline's ``review_on_disagreement``.

Pure over values: given a tier visit's results and what the tier below said,
an accepted answer goes to review (a person decides) when another tier's answer
contradicts it: at the last tier, the answer of the tier that escalated the item
(kept on the item as its best lower answer); at a lower tier, the next tier's
shadow sample for the item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from common.lifecycle import Outcome
from workers.decision import review_disagreement
from workers.pipeline import Pipeline
from workers.records import ItemResult, Step

SHADOW_ANSWERED = (Outcome.OK, Outcome.RULE_MATCH)


def _shadow_label(steps: Sequence[Step]) -> str | None:
    return next(
        (
            s.label
            for s in reversed(steps)
            if s.role == "shadow" and s.outcome in SHADOW_ANSWERED and s.label is not None
        ),
        None,
    )


def mark_disagreements(
    pipeline: Pipeline,
    tier_index: int,
    below: Mapping[int, str | None],
    results: Sequence[ItemResult],
) -> None:
    """Turn contradicted accepts into :class:`Review` decisions, in place.

    ``below``: per item, the label a lower tier gave before escalating it (None: none).
    The step that carried the decision records ``review`` too.
    """
    if not pipeline.review_on_disagreement:
        return
    tiers = pipeline.tiers
    last = tier_index == len(tiers) - 1
    for r in results:
        if last:
            other, whose = below.get(r.pk), tiers[tier_index - 1].name if tier_index else ""
        else:
            other, whose = _shadow_label(r.steps), f"{tiers[tier_index + 1].name} (shadow)"
        decision = review_disagreement(r.decision, other, whose)
        if decision is r.decision:
            continue
        r.decision = decision
        step = r.decided_step
        if step is not None:
            r.steps[r.steps.index(step)] = replace(step, decision=decision.kind)

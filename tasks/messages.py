"""What travels on the broker: a batch of item ids for one tier visit, nothing else."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from common.lifecycle import TRANSITIONS, Phase, Verdict
from common.settings import Settings
from models.ledger import Settled
from models.reuse import Released
from workers.decision import Decision, Defer, defer_delay


@dataclass(frozen=True, slots=True)
class Message:
    phase: Phase
    job_id: int
    tier_index: int
    ids: list[int]
    countdown: float = 0.0  # seconds before a worker should take it
    urgent: bool = False  # re-sent by the sweeper: ahead of the queue's backlog


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def destination(tier_index: int, verdict: Verdict) -> tuple[int, Phase] | None:
    """The tier and queue a verdict sends an item to next, if any (the lifecycle's table)."""
    move = TRANSITIONS[verdict]
    if move.route is None:
        return None
    return (tier_index + 1 if move.next_tier else tier_index), move.route


def countdown(decisions: Sequence[Decision], settings: Settings) -> float:
    """How long a message of deferred items waits: as long as its most deferred item."""
    n = max((d.n for d in decisions if isinstance(d, Defer)), default=0)
    return defer_delay(n, settings.defer_base_s, settings.defer_cap_s) if n else 0.0


def follow_ups(
    msg: Message,
    kept: Sequence[Settled],
    decisions: Mapping[int, Decision],
    settings: Settings,
    size: Callable[[int, Phase], int],
) -> list[Message]:
    """The messages that carry a settled tier visit's items onward, in batches."""
    groups: dict[tuple[int, Phase, bool], list[int]] = {}
    for s in kept:
        found = destination(msg.tier_index, s.decision)
        if found is not None:
            tier_index, phase = found
            groups.setdefault((tier_index, phase, TRANSITIONS[s.decision].later), []).append(s.pk)
    out = []
    for (tier_index, phase, later), ids in groups.items():
        wait = countdown([decisions[pk] for pk in ids], settings) if later else 0.0
        out += [
            Message(phase, msg.job_id, tier_index, c, countdown=wait)
            for c in chunks(ids, size(tier_index, phase))
        ]
    return out


def released_messages(released: Sequence[Released]) -> list[Message]:
    """Messages for repeats put back on a tier because the item they waited on failed."""
    return [Message(Phase.TIER, r.job_id, r.tier_index, r.ids) for r in released if r.ids]

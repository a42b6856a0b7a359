"""The item lifecycle (common/lifecycle.py): where each verdict sends an item, which
statuses are final or unfinished, and which phase a status belongs to. The workers,
the ledger and the sweeper all read these tables; a hole in them strands items."""

from __future__ import annotations

import typing

import pytest

from common.lifecycle import (
    FINAL_STATUSES,
    FINAL_VERDICTS,
    PHASE_STATUS,
    RUNNING,
    STOPS_JOB,
    TRANSITIONS,
    UNFINISHED,
    Phase,
    Status,
    Verdict,
    phase_of,
)
from workers.decision import Decision


def test_every_verdict_has_a_transition() -> None:
    assert set(TRANSITIONS) == set(Verdict)


def test_every_decision_the_engine_can_take_has_a_transition() -> None:
    kinds = {cls.kind for cls in typing.get_args(Decision)}

    assert kinds == set(Verdict)


@pytest.mark.parametrize(
    ("verdict", "status", "route"),
    [
        (Verdict.ACCEPT, Status.DONE, None),
        (Verdict.ESCALATE, Status.PENDING, Phase.TIER),
        (Verdict.FALLBACK, Status.FALLBACK, Phase.FALLBACK),
        (Verdict.DEFER, Status.FALLBACK, Phase.FALLBACK),
        (Verdict.FAIL, Status.FAILED, None),
        (Verdict.PAUSE, Status.PAUSED, None),
        (Verdict.CAPPED, Status.BUDGET_CAPPED, None),
        (Verdict.HOLD, Status.PAUSED_BUDGET, None),
        (Verdict.REVIEW, Status.REVIEW, None),
    ],
)
def test_where_each_verdict_sends_the_item(
    verdict: Verdict, status: Status, route: Phase | None
) -> None:
    move = TRANSITIONS[verdict]

    assert (move.status, move.route) == (status, route)
    # a final item goes nowhere next; an unfinished one either has a queue or waits
    # for a person's command (pause, hold)
    if move.final:
        assert move.route is None and not move.next_tier and not move.keeps_error
    else:
        assert move.route is not None or verdict in STOPS_JOB


def test_only_an_escalation_moves_to_the_next_tier_and_only_a_deferral_waits() -> None:
    assert [v for v, t in TRANSITIONS.items() if t.next_tier] == [Verdict.ESCALATE]
    assert [v for v, t in TRANSITIONS.items() if t.later] == [Verdict.DEFER]


def test_final_and_unfinished_statuses_split_every_status() -> None:
    assert {Verdict.ACCEPT, Verdict.FAIL, Verdict.CAPPED, Verdict.REVIEW} == FINAL_VERDICTS
    assert {Status.DONE, Status.FAILED, Status.BUDGET_CAPPED, Status.REVIEW} == FINAL_STATUSES
    assert FINAL_STATUSES.isdisjoint(UNFINISHED)
    assert set(Status) == FINAL_STATUSES | UNFINISHED
    # an item waiting for a reused decision or for `cascade resume` keeps its job open
    assert {Status.REUSE_WAIT, Status.PAUSED, Status.PAUSED_BUDGET} <= UNFINISHED


def test_running_statuses_are_the_leased_ones_of_each_phase() -> None:
    assert {Status.RUNNING, Status.FALLBACK_RUNNING} == RUNNING
    assert PHASE_STATUS[Phase.TIER] == (Status.PENDING, Status.RUNNING)
    assert PHASE_STATUS[Phase.FALLBACK] == (Status.FALLBACK, Status.FALLBACK_RUNNING)


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (Status.PENDING, Phase.TIER),
        (Status.RUNNING, Phase.TIER),
        (Status.REUSE_WAIT, Phase.TIER),
        (Status.FALLBACK, Phase.FALLBACK),
        (Status.FALLBACK_RUNNING, Phase.FALLBACK),
        ("fallback_running", Phase.FALLBACK),  # a plain string from a database row
        ("pending", Phase.TIER),
    ],
)
def test_phase_of(status: str, phase: Phase) -> None:
    assert phase_of(status) is phase


def test_each_phase_status_belongs_to_its_phase() -> None:
    for phase, (waiting, running) in PHASE_STATUS.items():
        assert phase_of(waiting) is phase and phase_of(running) is phase

"""An item's lifecycle, as data: its statuses, the verdicts a tier visit ends in, and
the one table that says where each verdict sends the item.

No I/O and no imports of ours: the engine, the storage layer, the flow, the sweeper
and the reports all read these names and this table instead of spelling the words.
The values are plain strings (``StrEnum``), so they are what the database stores.

    pending ──claim──▶ running ──visit──▶ (verdict) ──TRANSITIONS──▶ next status
       ▲                  │ lease ran out (worker died): claimable again
       └── escalate ──────┘ (next tier)          fallback ─▶ fallback ─claim─▶ fallback_running
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """Where an item is. ``running`` statuses are held under a lease by one worker."""

    PENDING = "pending"  # waiting at its tier (on that tier's queue)
    REUSE_WAIT = "reuse_wait"  # a repeat of a text in flight: waits for its decision
    RUNNING = "running"
    FALLBACK = "fallback"  # waiting for its tier's fallback chain (maybe deferred)
    FALLBACK_RUNNING = "fallback_running"
    PAUSED = "paused"  # the spend limit: waits, unspent, for `cascade resume`
    PAUSED_BUDGET = "paused_budget"  # the budget: waits for `cascade resume --budget`
    DONE = "done"
    FAILED = "failed"
    BUDGET_CAPPED = "budget_capped"  # final: a lower tier's answer, kept for review
    REVIEW = "review"  # final for the machine: a person decides (`cascade review`)


class JobStatus(StrEnum):
    """Where a job is (``jobs.status``)."""

    SUBMITTING = "submitting"  # its file is being read in
    RUNNING = "running"
    PAUSED = "paused"  # the spend limit or the budget: `cascade resume`
    DONE = "done"
    FAILED = "failed"  # stopped, cancelled, or no model call passed (resumable)


class BatchStatus(StrEnum):
    """Where a Message Batch row is (``message_batches.status``)."""

    SUBMITTING = "submitting"  # row written, API not yet called
    IN_PROGRESS = "in_progress"  # the API's id stored
    COLLECTED = "collected"  # results settled
    FAILED = "failed"  # the API refused the batch: its items went to the fallback path
    ABANDONED = "abandoned"  # a submit that never stored its id: items released


class RunStatus(StrEnum):
    """Where a backfill run is (``backfill_runs.status``)."""

    RUNNING = "running"
    DONE = "done"  # read and enqueued
    EMPTY = "empty"  # nothing new
    FAILED = "failed"


class Role(StrEnum):
    """What a step was for (``attempts.role``)."""

    PRIMARY = "primary"
    FALLBACK = "fallback"
    RULES = "rules"
    LOCAL = "local"
    CONSISTENCY = "consistency"  # a check before accepting: part of the item's cost
    VERIFIER = "verifier"  # likewise
    SHADOW = "shadow"  # a sample sent to the next tier: calibration spend, never the item's


class Phase(StrEnum):
    """Which queue an item waits on: its tier's, or the fallback queue."""

    TIER = "tier"
    FALLBACK = "fallback"


class Verdict(StrEnum):
    """How one tier visit ends for an item (``attempts.decision``)."""

    ACCEPT = "accept"
    ESCALATE = "escalate"
    FALLBACK = "fallback"
    FAIL = "fail"
    DEFER = "defer"
    PAUSE = "pause"
    CAPPED = "capped"
    HOLD = "hold"
    REVIEW = "review"


class Outcome(StrEnum):
    """What one step amounted to (``attempts.outcome``)."""

    OK = "ok"
    REFUSAL = "refusal"
    MALFORMED = "malformed"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONTEXT = "context"  # the prompt is too long for the model
    SPEND_LIMIT = "spend_limit"
    BREAKER_OPEN = "breaker_open"  # no request sent
    DRILL = "drill"  # no request sent
    RULE_MATCH = "rule_match"
    RULE_MISS = "rule_miss"
    IN_FLIGHT = "in_flight"  # the request is being sent; its row is replaced by its reply
    UNKNOWN = "unknown"  # sent, and the worker died before the reply was recorded
    REUSED = "reused"  # no request: the decision of an item with the same text


# Outcomes of a step that sent no request to any API.
NOT_SENT = frozenset(
    {Outcome.BREAKER_OPEN, Outcome.DRILL, Outcome.RULE_MATCH, Outcome.RULE_MISS, Outcome.REUSED}
)
# Outcomes that carry a model's answer (good or bad): it arrived, it can be reused.
ANSWERED = frozenset({Outcome.OK, Outcome.REFUSAL, Outcome.MALFORMED})


@dataclass(frozen=True, slots=True)
class Transition:
    """Where a verdict sends the item."""

    status: Status
    next_tier: bool = False  # the item moves to the next tier
    final: bool = False  # the item is finished: label, cost and baseline are fixed
    route: Phase | None = None  # the queue a message goes to after the commit
    later: bool = False  # that message waits (a deferral's countdown)
    keeps_error: bool = False  # the reason is kept on the item for the next phase


TRANSITIONS: dict[Verdict, Transition] = {
    # a confident answer: the item is done
    Verdict.ACCEPT: Transition(Status.DONE, final=True),
    # not confident: the next tier's queue
    Verdict.ESCALATE: Transition(Status.PENDING, next_tier=True, route=Phase.TIER),
    # the call failed after retries: the tier's fallback chain
    Verdict.FALLBACK: Transition(Status.FALLBACK, route=Phase.FALLBACK, keeps_error=True),
    # every link may be back later: the fallback queue again, after a countdown
    Verdict.DEFER: Transition(Status.FALLBACK, route=Phase.FALLBACK, later=True, keeps_error=True),
    # nothing can serve it: dead-lettered with every reason
    Verdict.FAIL: Transition(Status.FAILED, final=True),
    # the spend limit: waits, unspent, for `cascade resume`
    Verdict.PAUSE: Transition(Status.PAUSED, keeps_error=True),
    # the budget is spent: keeps a lower tier's answer, flagged
    Verdict.CAPPED: Transition(Status.BUDGET_CAPPED, final=True),
    # the budget is spent and there is no answer yet: waits for a larger budget
    Verdict.HOLD: Transition(Status.PAUSED_BUDGET, keeps_error=True),
    # unsure, refused or contradicted where the pipeline says so: a person decides
    Verdict.REVIEW: Transition(Status.REVIEW, final=True),
}

FINAL_VERDICTS = frozenset(v for v, t in TRANSITIONS.items() if t.final)
FINAL_STATUSES = frozenset(t.status for t in TRANSITIONS.values() if t.final)
# Statuses of an item that is not finished (a job with any is not done).
UNFINISHED = frozenset(Status) - FINAL_STATUSES
# Verdicts that stop the job for the user (spend limit, budget).
STOPS_JOB = frozenset({Verdict.PAUSE, Verdict.HOLD})
# Per phase: the status an item waits in, and the status it runs in under a lease.
PHASE_STATUS: dict[Phase, tuple[Status, Status]] = {
    Phase.TIER: (Status.PENDING, Status.RUNNING),
    Phase.FALLBACK: (Status.FALLBACK, Status.FALLBACK_RUNNING),
}
RUNNING = frozenset(running for _, running in PHASE_STATUS.values())


def phase_of(status: str) -> Phase:
    """The phase an unfinished item's status belongs to."""
    return Phase.FALLBACK if status in (Status.FALLBACK, Status.FALLBACK_RUNNING) else Phase.TIER

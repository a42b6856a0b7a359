"""What goes on the broker after a tier visit: which verdict sends an item where, how
items are grouped and chunked into messages, how long a deferral waits, how a visit's
result becomes the ledger's settle values, and which queues a tier is served on."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.lifecycle import Phase, Verdict
from common.settings import Settings
from models.ledger import Settled
from models.reuse import Released
from tasks.fleet import serving
from tasks.messages import (
    Message,
    chunks,
    countdown,
    destination,
    follow_ups,
    released_messages,
)
from tasks.queues import PRIORITY_STEPS, queue_keys, tier_queue
from tasks.rows import attempt_rows, settled_of, step_row
from tasks.runtime import tier_batch_size
from workers.decision import (
    Accept,
    Capped,
    Decision,
    Defer,
    Escalate,
    Fallback,
    GiveUp,
    Hold,
    Pause,
    Review,
)
from workers.pipeline import load_pipeline
from workers.providers.base import Usage
from workers.records import ItemResult, Step

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(defer_base_s=15.0, defer_cap_s=100.0)


# -- chunks ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ids", "size", "expected"),
    [
        ([], 3, []),  # nothing to send: no message at all, not one empty message
        ([1, 2, 3], 3, [[1, 2, 3]]),  # exactly one batch
        ([1, 2, 3, 4], 3, [[1, 2, 3], [4]]),  # one over: a second, short batch
        ([1, 2, 3], 1, [[1], [2], [3]]),  # size 1: one message per item
        ([5, 6], 1_000, [[5, 6]]),  # a free tier's large batch size
    ],
)
def test_chunks_split_in_order_into_batches_of_at_most_size(
    ids: list[int], size: int, expected: list[list[int]]
) -> None:
    assert chunks(ids, size) == expected


def test_chunks_are_copies_not_views_of_the_input() -> None:
    ids = [1, 2, 3]
    out = chunks(ids, 2)
    out[0].append(99)
    assert ids == [1, 2, 3]


# -- destination: the lifecycle table, verdict by verdict ---------------------------------
@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        (Verdict.ACCEPT, None),  # done: nothing follows
        (Verdict.ESCALATE, (3, Phase.TIER)),  # the next tier's own queue
        (Verdict.FALLBACK, (2, Phase.FALLBACK)),  # this tier's fallback chain
        (Verdict.DEFER, (2, Phase.FALLBACK)),  # the same chain again, later
        (Verdict.FAIL, None),  # dead-lettered
        (Verdict.PAUSE, None),  # waits for `cascade resume`, no message
        (Verdict.CAPPED, None),  # final, a lower tier's answer
        (Verdict.HOLD, None),  # waits for a larger budget, no message
        (Verdict.REVIEW, None),  # a person decides
    ],
)
def test_destination_of_each_verdict_from_tier_two(
    verdict: Verdict, expected: tuple[int, Phase] | None
) -> None:
    assert destination(2, verdict) == expected


# -- countdown ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("decisions", "expected"),
    [
        ([], 0.0),  # no items: no wait
        ([Fallback("x"), Escalate("y")], 0.0),  # nothing deferred: go at once
        ([Defer("x", 1)], 15.0),  # the first deferral waits the base
        ([Defer("x", 1), Defer("y", 3)], 60.0),  # the most deferred item sets the wait
        ([Defer("x", 2), Fallback("z")], 30.0),  # other decisions do not shorten it
        ([Defer("x", 9)], 100.0),  # doubling stops at the cap
    ],
)
def test_countdown_waits_as_long_as_the_most_deferred_item(
    decisions: list[Decision], expected: float
) -> None:
    assert countdown(decisions, SETTINGS) == expected


# -- follow_ups ------------------------------------------------------------------------
def _settled(pk: int, decision: Verdict) -> Settled:
    return Settled(
        pk=pk,
        decision=decision,
        tier_index=1,
        tier="small",
        steps=None,
        model_calls=1,
        cost_nanos=0,
        latency_ms=0,
        fallback_used=False,
    )


def test_follow_ups_group_each_destination_into_its_own_messages() -> None:
    msg = Message(Phase.TIER, 7, 1, [1, 2, 3, 4, 5, 6, 7, 8])
    decisions: dict[int, Decision] = {
        1: Escalate("unsure"),
        2: Accept("billing", 0.9, "ok"),
        3: Escalate("unsure"),
        4: Fallback("transient: 529"),
        5: Defer("all links down", 2),
        6: Escalate("unsure"),
        7: GiveUp("no"),
        8: Defer("all links down", 1),
    }
    kept = [_settled(pk, d.kind) for pk, d in decisions.items()]
    sizes: list[tuple[int, Phase]] = []

    def size(tier_index: int, phase: Phase) -> int:
        sizes.append((tier_index, phase))
        return 2

    out = follow_ups(msg, kept, decisions, SETTINGS, size)

    assert out == [
        # escalations: the next tier, in batches of the size asked for that tier
        Message(Phase.TIER, 7, 2, [1, 3]),
        Message(Phase.TIER, 7, 2, [6]),
        # a fallback goes now; deferrals in their own message, after the longest wait
        Message(Phase.FALLBACK, 7, 1, [4]),
        Message(Phase.FALLBACK, 7, 1, [5, 8], countdown=30.0),
    ]
    assert set(sizes) == {(2, Phase.TIER), (1, Phase.FALLBACK)}


def test_follow_ups_from_the_fallback_phase_escalate_to_the_next_tier() -> None:
    msg = Message(Phase.FALLBACK, 3, 0, [10, 11])
    decisions: dict[int, Decision] = {10: Escalate("chain unsure"), 11: Defer("later", 1)}
    kept = [_settled(pk, d.kind) for pk, d in decisions.items()]
    out = follow_ups(msg, kept, decisions, SETTINGS, lambda t, p: 100)
    assert out == [
        Message(Phase.TIER, 3, 1, [10]),
        Message(Phase.FALLBACK, 3, 0, [11], countdown=15.0),
    ]


def test_follow_ups_carry_only_what_was_kept() -> None:
    """An item whose lease was lost (not in ``kept``) is someone else's: no message."""
    msg = Message(Phase.TIER, 1, 0, [1, 2])
    decisions: dict[int, Decision] = {1: Escalate("a"), 2: Escalate("b")}
    out = follow_ups(msg, [_settled(2, Verdict.ESCALATE)], decisions, SETTINGS, lambda t, p: 10)
    assert out == [Message(Phase.TIER, 1, 1, [2])]


def test_follow_ups_of_final_and_waiting_verdicts_are_none() -> None:
    msg = Message(Phase.TIER, 1, 0, [1, 2, 3, 4, 5])
    decisions: dict[int, Decision] = {
        1: Accept("a", 1.0, ""),
        2: GiveUp("x"),
        3: Pause("spend limit"),
        4: Hold("budget"),
        5: Capped("a", 0.5, "budget"),
    }
    kept = [_settled(pk, d.kind) for pk, d in decisions.items()]
    assert follow_ups(msg, kept, decisions, SETTINGS, lambda t, p: 10) == []


# -- released_messages -----------------------------------------------------------------
def test_released_repeats_go_back_to_their_tier_and_empty_groups_send_nothing() -> None:
    released = [Released(4, 1, [7, 8]), Released(4, 2, []), Released(5, 0, [9])]
    assert released_messages(released) == [
        Message(Phase.TIER, 4, 1, [7, 8]),
        Message(Phase.TIER, 5, 0, [9]),
    ]


# -- settled_of / step rows ---------------------------------------------------------------
def _step(n: int, **kw: object) -> Step:
    values: dict[str, object] = {
        "item_pk": 42,
        "step": n,
        "tier_index": 1,
        "tier": "small",
        "role": "primary",
        "provider": "anthropic",
        "model": "claude-small",
        "outcome": "ok",
    }
    values.update(kw)
    return Step(**values)  # type: ignore[arg-type]


def test_an_accepted_answer_settles_with_its_label_reason_and_costs() -> None:
    steps = [
        _step(3, decision="accept", label="billing", cost_nanos=500, latency_ms=40),
        _step(4, role="shadow", cost_nanos=70, latency_ms=900),  # calibration, not the item's
    ]
    result = ItemResult(42, Accept("billing", 0.93, "charged twice"), steps, baseline_nanos=9)
    s = settled_of(1, "small", result)
    assert (s.pk, s.decision, s.tier_index, s.tier) == (42, Verdict.ACCEPT, 1, "small")
    assert (s.label, s.confidence, s.reason, s.error) == ("billing", 0.93, "charged twice", None)
    assert s.steps == 5  # the next step number after the visit
    assert (s.cost_nanos, s.calibration_nanos, s.latency_ms) == (500, 70, 40)
    assert (s.model_calls, s.baseline_nanos, s.fallback_used) == (1, 9, False)
    assert s.error_kind is None


def test_an_escalation_keeps_the_lower_tiers_answer_for_a_budget_cap_later() -> None:
    steps = [_step(1, decision="escalate", label="bug", confidence=0.41)]
    s = settled_of(1, "small", ItemResult(42, Escalate("confidence 0.41 < 0.8"), steps))
    assert (s.label, s.confidence, s.error) == ("bug", 0.41, None)


def test_an_escalation_without_an_answer_carries_its_reason_as_the_error() -> None:
    s = settled_of(0, "rules", ItemResult(42, Escalate("no rule matched"), []))
    assert (s.label, s.confidence, s.error) == (None, None, "no rule matched")
    assert s.steps is None  # no step taken: the item's step counter is left as it is
    assert s.model_calls == 0


def test_a_capped_item_is_credited_to_the_tier_that_answered() -> None:
    d = Capped("spam", 0.7, "budget reached before tier 'large'", tier="small")
    s = settled_of(2, "large", ItemResult(42, d, []))
    assert (s.decision, s.tier, s.tier_index) == (Verdict.CAPPED, "small", 2)
    assert (s.label, s.confidence) == ("spam", 0.7)
    assert s.error == "budget reached before tier 'large'"  # kept although it has a label


def test_a_capped_item_without_a_named_tier_stays_at_the_visited_one() -> None:
    s = settled_of(2, "large", ItemResult(42, Capped("spam", 0.7, "budget"), []))
    assert s.tier == "large"


@pytest.mark.parametrize(
    ("result", "error_kind"),
    [
        # the failed call's outcome is what the fallback chain defers by
        (ItemResult(42, Fallback("transient: 529"), [_step(1, outcome="transient")]), "transient"),
        (
            ItemResult(42, Fallback("context: too long"), [_step(1), _step(2, outcome="context")]),
            "context",
        ),
        (ItemResult(42, Fallback("internal error: boom"), []), None),  # no call was made
        (ItemResult(42, GiveUp("dead"), [_step(1, outcome="transient")]), None),  # not a fallback
    ],
)
def test_error_kind_is_the_last_steps_outcome_of_a_fallback(
    result: ItemResult, error_kind: str | None
) -> None:
    s = settled_of(1, "small", result)
    assert s.error_kind == error_kind
    assert s.error == result.decision.why  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("decision", "label", "error"),
    [
        (Hold("budget reached"), None, "budget reached"),
        (Pause("spend limit reached"), None, "spend limit reached"),
        (Review("spam", 0.55, "unsure"), "spam", None),  # its label rides along, no error
        (Review(None, None, "refused"), None, "refused"),
    ],
)
def test_waiting_and_review_verdicts_keep_label_or_reason(
    decision: Decision, label: str | None, error: str | None
) -> None:
    s = settled_of(1, "small", ItemResult(42, decision, []))
    assert (s.decision, s.label, s.error) == (decision.kind, label, error)


def test_attempt_rows_are_one_per_step_of_every_result_with_the_jobs_id() -> None:
    usage = Usage(input_tokens=120, output_tokens=12, cache_write_tokens=5, cache_read_tokens=7)
    a = ItemResult(1, Escalate("x"), [_step(1, item_pk=1, usage=usage, http_status=200)])
    b = ItemResult(2, Accept("a", 1.0, ""), [_step(1, item_pk=2), _step(2, item_pk=2)])
    rows = attempt_rows(9, [a, b])
    assert [(r["job_id"], r["item_id"], r["step"]) for r in rows] == [
        (9, 1, 1),
        (9, 2, 1),
        (9, 2, 2),
    ]
    first = rows[0]
    assert (first["input_tokens"], first["output_tokens"]) == (120, 12)
    assert (first["cache_write_tokens"], first["cache_read_tokens"]) == (5, 7)
    assert first["http_status"] == 200
    assert step_row(9, a.steps[0]) == first


# -- queues and batch sizes ----------------------------------------------------------------
def test_a_tier_queue_is_named_after_its_tier_with_one_list_per_priority_step() -> None:
    assert tier_queue("small") == "tier.small"
    keys = queue_keys("tier.small")
    assert keys[0] == "tier.small"  # step 0 is the queue's own name (kombu)
    assert keys[1:] == [f"tier.small\x06\x16{s}" for s in PRIORITY_STEPS if s]
    assert len(keys) == len(PRIORITY_STEPS)


@pytest.mark.parametrize(
    ("tier_index", "phase", "expected"),
    [
        (0, Phase.TIER, 1_000),  # the rules tier: free, a big batch
        (0, Phase.FALLBACK, 50),  # ... but its fallback chain makes model calls
        (1, Phase.TIER, 50),  # a model tier
        (2, Phase.FALLBACK, 50),
    ],
)
def test_free_tiers_take_larger_batches_than_model_calls(
    tier_index: int, phase: Phase, expected: int
) -> None:
    pipeline = load_pipeline(ROOT / "examples" / "support_triage.toml")
    settings = Settings(batch_size=50, free_batch_size=1_000)
    assert tier_batch_size(settings, pipeline, tier_index, phase) == expected


def test_serving_counts_the_workers_of_each_queue_including_none() -> None:
    """`cascade doctor` warns about a queue no live worker consumes: it must read 0."""
    workers = {
        "w1@host": ["cascade.fallback", "tier.rules", "tier.small"],
        "w2@host": ["tier.small"],
    }
    queues = ["tier.rules", "tier.small", "tier.large", "cascade.fallback"]
    assert serving(workers, queues) == {
        "tier.rules": 1,
        "tier.small": 2,
        "tier.large": 0,
        "cascade.fallback": 1,
    }
    assert serving({}, queues) == dict.fromkeys(queues, 0)

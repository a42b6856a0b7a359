"""Report reads at their edges (models.reports, models.analytics, models.reviews,
models.tuning), on SQLite and Postgres: dead letters without a reason and past the
limit, breaker openings that close and open again, the item cost percentile of few
items, the offline-fake marker, and what training and the review queue leave out."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from models import analytics as an
from models import reports, reviews, tuning
from models.tables import RejectedLine
from models.tables_resilience import BreakerEvent, Drill
from tests.integration.conftest import add_attempt, add_item, new_job

DAY = datetime(2026, 11, 2, tzinfo=UTC)


def a_job(s: Session, name: str, *items: dict[str, Any]) -> tuple[int, int, list[int]]:
    """A job with items (columns each); returns (job, submission, item ids)."""
    conn = s.connection()
    job_id, sub = new_job(conn, name)
    pks = [
        add_item(conn, job_id, sub, f"k{n}", line_no=n, **({"meta": {}} | values))
        for n, values in enumerate(items, start=1)
    ]
    return job_id, sub, pks


def test_dead_letters_name_a_missing_reason_and_stop_at_the_limit(db_session: Session) -> None:
    s = db_session
    failed = [{"status": "failed", "error": e} for e in ("b", "a", "a", None, None, "a", "c")]
    job_id, _, _ = a_job(s, "j", *failed, {"status": "done"})
    scope = an.Scope(job_ids=(job_id,))

    rel = an.reliability(s, scope, dead_letter_limit=3)

    # most frequent first; a tie goes by the reason's text
    assert rel.dead_letters == [("a", 3), ("(no reason recorded)", 2), ("b", 1)]
    assert rel.dead_lettered == 7  # every failed item, past the limit too
    # no model step at all: every outcome is listed, at zero
    assert rel.calls == 0 and set(rel.outcomes.values()) == {0}
    assert set(rel.outcomes) == {*an.MODEL_OUTCOMES, "retried", "fell_back"}


def test_a_breaker_that_closes_and_opens_again_has_two_openings(db_session: Session) -> None:
    s = db_session
    key, other = "anthropic:small", "anthropic:large"
    events = [
        (key, "half_open", "closed", "a close with no opening seen", 0),
        (key, "closed", "open", "first", 10),
        (other, "closed", "open", "other's", 15),
        (key, "open", "half_open", "cool-down", 40),
        (key, "half_open", "closed", "probes ok", 70),
        (key, "closed", "open", "second", 100),
        (other, "open", "closed", "recovered", 130),
    ]
    for k, frm, to, reason, sec in events:
        s.execute(
            insert(BreakerEvent).values(breaker_key=k, from_state=frm, to_state=to,
                                        reason=reason, at=DAY + timedelta(seconds=sec))
        )  # fmt: skip

    got = an.breaker_openings(s, an.Scope())

    assert [(o.breaker_key, o.reason, o.seconds) for o in got] == [
        (key, "first", 60.0),
        (other, "other's", 115.0),
        (key, "second", None),  # still open
    ]
    assert got[0].opened_at == DAY + timedelta(seconds=10)
    # breakers are fleet-wide: a job filter does not hide them, a day range does
    assert len(an.breaker_openings(s, an.Scope(job_ids=(12345,)))) == 3
    assert an.breaker_openings(s, an.Scope(since=date(2026, 11, 3))) == []
    assert len(an.breaker_openings(s, an.Scope(until=date(2026, 11, 2)))) == 3


def test_drills_are_listed_by_the_day_they_started(db_session: Session) -> None:
    s = db_session
    for n, day in enumerate((1, 2, 3)):
        start = DAY.replace(day=day, hour=n)
        s.execute(
            insert(Drill).values(breaker_key=f"k:{day}", reason="game day", started_at=start,
                                 until=start + timedelta(minutes=5), calls_diverted=day)
        )  # fmt: skip

    ranged = an.drills(s, an.Scope(since=date(2026, 11, 2), until=date(2026, 11, 2)))
    assert [(d.breaker_key, d.calls_diverted, d.cleared_at) for d in ranged] == [("k:2", 2, None)]
    assert ranged[0].until - ranged[0].started_at == timedelta(minutes=5)
    assert [d.breaker_key for d in an.drills(s, an.Scope())] == ["k:1", "k:2", "k:3"]


@pytest.mark.parametrize(
    ("costs", "p95", "mean"),
    [
        ((), None, 0),  # no items: no percentile, a zero mean
        ((700,), 700, 700),
        ((5, 1, 3), 5, 3),
        (tuple(range(1, 21)), 19, 10),  # nearest rank: the 19th of 20
        (tuple(range(1, 22)), 20, 11),  # rank ceil(0.95 * 21) = 20: not the largest
    ],
)
def test_the_item_cost_percentile_is_nearest_rank(
    db_session: Session, costs: tuple[int, ...], p95: int | None, mean: int
) -> None:
    s = db_session
    job_id, _, _ = a_job(s, "j", *({"status": "done", "cost_nanos": c} for c in costs))

    got = an.cost(s, an.Scope(job_ids=(job_id,)))

    assert (got.items, got.cost_nanos, got.item_p95_nanos, got.item_mean_nanos) == (
        len(costs), sum(costs), p95, mean,
    )  # fmt: skip


def test_served_by_the_fake_is_told_per_job(db_session: Session) -> None:
    s = db_session
    fake_job, _, (a,) = a_job(s, "fake", {"status": "done"})
    real_job, _, (b,) = a_job(s, "real", {"status": "done"})
    common = {"tier_index": 1, "tier": "small", "role": "primary", "provider": "anthropic",
              "model": "m", "outcome": "ok"}  # fmt: skip
    add_attempt(s.connection(), fake_job, a, 1, request_id="req_fake_0001", **common)
    add_attempt(s.connection(), real_job, b, 1, request_id="req_011CXYZ", **common)
    add_attempt(s.connection(), real_job, b, 2, request_id=None, **common)

    assert reports.served_by_fake(s, (fake_job,))
    assert not reports.served_by_fake(s, (real_job,))
    assert reports.served_by_fake(s, (real_job, fake_job))
    assert reports.served_by_fake(s, ())  # every job


def test_rejected_lines_come_in_the_order_recorded_up_to_the_limit(db_session: Session) -> None:
    s = db_session
    job_id, sub, _ = a_job(s, "j")
    for line in (9, 2, 5):
        s.execute(
            insert(RejectedLine).values(job_id=job_id, submission_id=sub, source="f.jsonl",
                                        line_no=line, reason=f"bad {line}", raw=f"raw {line}")
        )  # fmt: skip

    assert [r.line_no for r in reports.rejected(s, job_id)] == [9, 2, 5]
    assert reports.rejected(s, job_id, limit=2) == [
        reports.RejectedRow("f.jsonl", 9, "bad 9", "raw 9"),
        reports.RejectedRow("f.jsonl", 2, "bad 2", "raw 2"),
    ]


def test_training_examples_leave_out_what_cannot_teach(db_session: Session) -> None:
    s = db_session
    job_id, _, _ = a_job(
        s, "j",
        {"text": "gold text", "meta": {"gold": "spam"}, "status": "pending"},
        {"text": "", "meta": {"gold": "spam"}, "status": "done", "label": "spam"},  # no text
        {"text": "odd gold", "meta": {"gold": 3}, "status": "done", "label": "ham",
         "final_tier": "small"},  # a gold that is not a label
        {"text": "empty gold", "meta": {"gold": ""}, "status": "failed"},
        {"text": "by local", "meta": {}, "status": "done", "label": "ham", "final_tier": "local"},
        {"text": "capped", "meta": {}, "status": "budget_capped", "label": "ham",
         "final_tier": "small"},
        {"text": None, "meta": {}, "status": "done", "label": "ham", "final_tier": "small"},
    )  # fmt: skip

    assert tuning.training_examples(s, job_id, source="gold") == [("gold text", "spam")]
    assert tuning.training_examples(s, job_id, source="outcomes", exclude_tiers=["local"]) == [
        ("odd gold", "ham")  # done and answered by another tier: only this one
    ]
    assert [t for t, _ in tuning.training_examples(s, job_id, source="outcomes")] == [
        "odd gold", "by local",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="source must be gold or outcomes, got 'labels'"):
        tuning.training_examples(s, job_id, source="labels")


def test_the_review_queue_is_in_item_order_up_to_the_limit(db_session: Session) -> None:
    s = db_session
    job_id, _, pks = a_job(
        s, "j",
        {"status": "review", "text": "one", "label": "ham", "confidence": 0.4,
         "final_tier": "large", "reason": "unsure", "error": "ignored"},
        {"status": "done", "text": "two"},
        {"status": "review", "text": "three", "error": "refused"},
        {"status": "review", "text": "four"},
    )  # fmt: skip

    queue = list(reviews.waiting(s, job_id, limit=2))

    assert queue == [
        reviews.Waiting(pks[0], "k1", "one", "ham", 0.4, "large", "unsure"),  # the reason first
        reviews.Waiting(pks[2], "k3", "three", None, None, None, "refused"),  # else the error
    ]
    assert [w.why for w in reviews.waiting(s, job_id)] == ["unsure", "refused", None]
    assert reviews.counts(s, job_id) == (3, 0)
    assert reviews.tier_accuracy(s, job_id) == []  # nobody has reviewed anything yet


def test_reliability_counts_calls_made_and_the_steps_that_sent_none_apart(
    db_session: Session,
) -> None:
    s = db_session
    job_id, _, (pk,) = a_job(s, "j", {"status": "done"})
    conn = s.connection()
    steps = [
        ("primary", "breaker_open"),  # the breaker was open: no request
        ("primary", "drill"),  # a chaos drill: no request
        ("fallback", "transient"),  # sent, failed
        ("fallback", "ok"),  # sent, answered
        ("shadow", "ok"),  # a shadow sample is a request too
        ("reuse", "reused"),  # another item's decision: no request
    ]
    for step, (role, outcome) in enumerate(steps):
        add_attempt(
            conn, job_id, pk, step, tier_index=1, tier="small", provider="anthropic",
            model="claude-haiku-5-5", role=role, outcome=outcome,
        )  # fmt: skip

    rel = an.reliability(s, an.Scope(job_ids=(job_id,)))

    assert (rel.calls, rel.not_sent) == (3, 3)
    assert (rel.outcomes["breaker_open"], rel.outcomes["drill"], rel.outcomes["ok"]) == (1, 1, 2)

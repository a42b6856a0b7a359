"""Message Batch rows and backfill bookkeeping (models.batches_repo), on SQLite and
Postgres: each state change only from the state it belongs to, poll chains that lose
their row to a newer one, items held and released under the claim's token, watermarks
that never move back, backfill runs and batch-priced calls."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.lifecycle import BatchStatus, RunStatus
from models import batches_repo as br
from models.core import ITEMS, utcnow
from models.db import as_utc
from tests.integration.conftest import add_attempt, add_item, new_job


def a_job(s: Session, name: str = "j", items: int = 0, **values: Any) -> tuple[int, list[int]]:
    conn = s.connection()
    job_id, sub = new_job(conn, name)
    pks = [
        add_item(conn, job_id, sub, f"k{n}", line_no=n, meta={}, text=f"text {n}", **values)
        for n in range(items)
    ]
    return job_id, pks


def batches(s: Session, job_id: int, groups: list[list[tuple[int, int]]]) -> list[int]:
    return br.add_batches(
        s, job_id=job_id, tier_index=1, tier="small", provider="anthropic", model="m",
        mechanism="tool", token="lease", groups=groups,
    )  # fmt: skip


def row(s: Session, row_id: int) -> Any:
    return s.execute(select(br.BATCHES).where(br.BATCHES.c.id == row_id)).one()


def submitted(s: Session, job_id: int, poll: str = "p1") -> int:
    (row_id,) = batches(s, job_id, [[(1, 0)]])
    br.mark_submitted(s, row_id, f"msgbatch_{row_id}", poll, utcnow() + timedelta(seconds=30))
    return row_id


def test_batches_are_written_submitting_one_row_per_group(db_session: Session) -> None:
    s = db_session
    job_id, _ = a_job(s)

    ids = batches(s, job_id, [[(10, 0), (11, 2)], [(12, 1)]])

    assert len(ids) == 2 and ids == sorted(ids)
    first, second = row(s, ids[0]), row(s, ids[1])
    assert (first.status, first.items, first.request_count, first.poll_count) == (
        "submitting", [[10, 0], [11, 2]], 2, 0,
    )  # fmt: skip
    assert (second.items, second.request_count, second.lease_token) == ([[12, 1]], 1, "lease")
    assert first.batch_id is None and first.submitted_at is None
    assert [b.id for b in br.job_batches(s, job_id)] == ids
    got = br.get_batch(s, ids[0])
    assert got is not None and (got.id, got.tier, got.mechanism) == (ids[0], "small", "tool")
    assert br.get_batch(s, ids[1] + 1_000) is None
    assert br.open_batch_count(s, job_id) == 2


def test_submitted_only_once_and_only_from_submitting(db_session: Session) -> None:
    s = db_session
    job_id, _ = a_job(s)
    (row_id,) = batches(s, job_id, [[(1, 0)]])
    poll_at = utcnow() + timedelta(seconds=30)

    br.mark_submitted(s, row_id, "msgbatch_1", "p1", poll_at)
    br.mark_submitted(s, row_id, "msgbatch_2", "p2", poll_at)  # a late duplicate: no effect

    r = row(s, row_id)
    assert (r.status, r.batch_id, r.poll_token) == ("in_progress", "msgbatch_1", "p1")
    assert as_utc(r.next_poll_at) == poll_at and r.submitted_at is not None
    # a submitted batch can no longer be failed as a lost submit
    br.mark_failed(s, row_id, BatchStatus.ABANDONED, "lost")
    assert (row(s, row_id).status, row(s, row_id).error) == ("in_progress", None)


@pytest.mark.parametrize("status", [BatchStatus.FAILED, BatchStatus.ABANDONED])
def test_a_refused_or_lost_submit_closes_the_row_with_its_reason(
    db_session: Session, status: BatchStatus
) -> None:
    s = db_session
    job_id, _ = a_job(s)
    (row_id,) = batches(s, job_id, [[(1, 0)]])

    br.mark_failed(s, row_id, status, "400 invalid_request: " + "x" * 3000)

    r = row(s, row_id)
    assert r.status == status and r.collected_at is not None
    assert r.error.startswith("400 invalid_request: x") and len(r.error) == 2000
    assert br.open_batch_count(s, job_id) == 0


def test_only_the_current_poll_chain_counts_its_polls(db_session: Session) -> None:
    s = db_session
    job_id, _ = a_job(s)
    row_id = submitted(s, job_id, poll="p1")
    counts = {"processing": 3, "succeeded": 1}
    later = utcnow() + timedelta(minutes=1)

    assert br.record_poll(s, row_id, "p1", counts, ended=False, next_poll_at=later)
    assert not br.record_poll(s, row_id, "stale", {"processing": 0}, ended=True, next_poll_at=None)

    r = row(s, row_id)
    assert (r.poll_count, r.counts, r.ended_at) == (1, counts, None)
    assert as_utc(r.next_poll_at) == later

    # a recovery takes the row over: the old chain's next poll counts for nothing
    token = br.take_over_poll(s, row_id)
    assert token is not None and token != "p1" and len(token) == 16
    assert not br.record_poll(s, row_id, "p1", counts, ended=False, next_poll_at=later)
    assert br.record_poll(s, row_id, token, {"succeeded": 4}, ended=True, next_poll_at=None)
    r = row(s, row_id)
    assert (r.poll_count, r.counts, r.next_poll_at) == (2, {"succeeded": 4}, None)
    assert r.ended_at is not None


def test_a_collected_batch_is_closed_to_polls_and_take_overs(db_session: Session) -> None:
    s = db_session
    job_id, _ = a_job(s)
    row_id = submitted(s, job_id, poll="p1")
    other = submitted(s, job_id, poll="p2")

    br.mark_collected(s, row_id)

    r = row(s, row_id)
    assert (r.status, r.poll_token, r.next_poll_at) == ("collected", None, None)
    assert r.collected_at is not None
    assert br.take_over_poll(s, row_id) is None
    assert not br.record_poll(s, row_id, "p1", {}, ended=True, next_poll_at=None)
    assert br.open_batch_count(s, job_id) == 1  # the other one is still open
    br.mark_collected(s, other)
    assert br.open_batch_count(s, job_id) == 0


def test_overdue_batches_are_late_polls_and_stalled_submits(db_session: Session) -> None:
    s = db_session
    job_id, _ = a_job(s)
    now = utcnow()
    (stalled,) = batches(s, job_id, [[(1, 0)]])
    late, on_time = batches(s, job_id, [[(2, 0)], [(3, 0)]])
    br.mark_submitted(s, late, "msgbatch_late", "p1", now - timedelta(minutes=10))
    br.mark_submitted(s, on_time, "msgbatch_ok", "p2", now + timedelta(minutes=10))
    done = submitted(s, job_id)
    br.mark_collected(s, done)

    found = br.overdue_batches(s, polls_before=now, submits_before=now + timedelta(minutes=1))
    assert found == [
        br.OpenBatch(stalled, "submitting", job_id, 1, "small"),
        br.OpenBatch(late, "in_progress", job_id, 1, "small"),
    ]
    # a submit younger than the cut-off is still in hand
    found = br.overdue_batches(s, polls_before=now, submits_before=now - timedelta(minutes=10))
    assert [b.id for b in found] == [late]


def test_held_items_and_release_only_touch_the_claims_items(db_session: Session) -> None:
    s = db_session
    later = utcnow() + timedelta(minutes=5)
    _, pks = a_job(s, items=3, status="running", lease_token="mine", lease_until=later, steps=2)
    s.execute(ITEMS.update().where(ITEMS.c.id == pks[1]).values(label="spam", text=None))
    s.execute(ITEMS.update().where(ITEMS.c.id == pks[2]).values(lease_token="theirs"))

    held = br.held_items(s, pks, "mine")
    assert sorted(held, key=lambda h: h.pk) == [
        br.HeldItem(pks[0], "text 0", 2, None),
        br.HeldItem(pks[1], "", 2, "spam"),  # a dropped text reads as empty
    ]

    assert sorted(br.release_items(s, pks, "mine")) == pks[:2]
    rows = {
        r.id: (r.status, r.lease_token, r.lease_until)
        for r in s.execute(select(ITEMS).where(ITEMS.c.id.in_(pks)))
    }
    assert rows[pks[0]] == rows[pks[1]] == ("pending", None, None)
    assert rows[pks[2]][:2] == ("running", "theirs")
    assert br.held_items(s, pks, "mine") == []
    assert br.release_items(s, pks, "mine") == []


def test_a_watermark_moves_forward_only(db_session: Session) -> None:
    s = db_session

    def mark(source: str) -> datetime | None:
        found = br.get_watermark(s, "triage", source)
        return None if found is None else as_utc(found)

    t = datetime(2026, 3, 1, 12, tzinfo=utcnow().tzinfo)
    long_source = "postgresql://db/forum#table=" + "p" * 600

    assert mark(long_source) is None
    br.set_watermark(s, "triage", long_source, t)
    br.set_watermark(s, "triage", long_source, t - timedelta(hours=1))  # a late, older run
    assert mark(long_source) == t

    br.set_watermark(s, "triage", long_source, t + timedelta(hours=2))
    assert mark(long_source) == t + timedelta(hours=2)
    # the source is stored cut to 500 characters: any name with that head is the same
    assert mark(long_source[:500] + "q") == t + timedelta(hours=2)
    # each pipeline keeps its own watermark for the same source
    assert br.get_watermark(s, "other", long_source) is None


def test_backfill_runs_are_recorded_start_to_finish(db_session: Session) -> None:
    s = db_session
    job_id, _ = a_job(s)
    since = datetime(2026, 3, 1, tzinfo=utcnow().tzinfo)
    first = br.start_run(
        s, name="nightly", pipeline="triage", source="db#table=posts", mode="batch", since=since
    )
    second = br.start_run(
        s, name=None, pipeline="triage", source="x" * 600, mode="realtime", since=None
    )

    r = br.last_runs(s)[1]
    assert (r.id, r.status, r.items_added, r.finished_at) == (first, RunStatus.RUNNING, 0, None)

    br.finish_run(
        s, first, status=RunStatus.DONE, job_id=job_id, until=since + timedelta(hours=5),
        items_added=40, lines_rejected=2, message="",
    )  # fmt: skip
    br.finish_run(s, second, status=RunStatus.FAILED, message="boom " * 1000)

    newest, oldest = br.last_runs(s)
    assert [r.id for r in br.last_runs(s, limit=1)] == [second]
    assert (oldest.status, oldest.job_id, oldest.items_added, oldest.lines_rejected) == (
        "done", job_id, 40, 2,
    )  # fmt: skip
    assert as_utc(oldest.until) == since + timedelta(hours=5) and oldest.message is None
    assert oldest.finished_at is not None and oldest.name == "nightly"
    assert (newest.status, newest.job_id, len(newest.source), len(newest.message)) == (
        "failed", None, 500, 2000,
    )  # fmt: skip


def test_batch_calls_are_the_jobs_batch_priced_calls_only(db_session: Session) -> None:
    s = db_session
    job_id, (pk,) = a_job(s, items=1)
    other, (other_pk,) = a_job(s, "other", items=1)
    conn = s.connection()
    common = {"tier_index": 1, "tier": "small", "role": "primary", "provider": "anthropic",
              "outcome": "ok"}  # fmt: skip
    add_attempt(
        conn, job_id, pk, 1, model="haiku", is_batch=True, input_tokens=100, output_tokens=10,
        cache_write_tokens=5, cache_read_tokens=7, cost_nanos=1_234, **common,
    )  # fmt: skip
    add_attempt(conn, job_id, pk, 2, model="haiku", is_batch=False, cost_nanos=9, **common)
    add_attempt(conn, other, other_pk, 1, model="haiku", is_batch=True, cost_nanos=9, **common)

    assert br.batch_calls(s, job_id) == [br.CallUsage("haiku", 100, 10, 5, 7, 1_234)]
    assert br.batch_calls(s, job_id + other + 1) == []

"""Breaker events and chaos drills in the ledger (models.resilience), and retention's
purge (models.retention) on both databases: which drills are in force, which a clear
ends, and what a purge forgets and keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import resilience
from models.core import ITEMS
from models.db import as_utc
from models.retention import REJECTED, purge
from models.tables_resilience import BreakerEvent, Drill
from tests.integration.conftest import add_item, new_job


def drill(s: Session, key: str, *, until: timedelta, cleared: bool = False) -> int:
    """A drill started an hour ago, in force until ``until`` from now."""
    now = datetime.now(UTC)
    row = Drill(
        breaker_key=key,
        reason=f"drill on {key}",
        started_at=now - timedelta(hours=1),
        until=now + until,
        cleared_at=now - timedelta(minutes=1) if cleared else None,
        calls_diverted=0,
    )
    s.add(row)
    s.flush()
    return row.id


def test_breaker_changes_are_stored_with_their_time_job_and_worker(db_session: Session) -> None:
    s = db_session
    at = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    key, t = "anthropic:m", at.timestamp()
    changes = [
        resilience.BreakerChange(key, "closed", "open", "5 of 10 failed", t),
        resilience.BreakerChange(key, "open", "half_open", "cool-down over", t + 30),
    ]

    resilience.add_breaker_events(s, changes, job_id=7, worker="w1@host")
    resilience.add_breaker_events(s, [], job_id=None, worker="w2@host")  # nothing to add
    s.flush()

    rows = s.scalars(select(BreakerEvent).order_by(BreakerEvent.id)).all()
    assert [
        (r.breaker_key, r.from_state, r.to_state, r.reason, r.job_id, r.worker) for r in rows
    ] == [
        ("anthropic:m", "closed", "open", "5 of 10 failed", 7, "w1@host"),
        ("anthropic:m", "open", "half_open", "cool-down over", 7, "w1@host"),
    ]
    assert [as_utc(r.at) for r in rows] == [at, at + timedelta(seconds=30)]


def test_a_drill_is_in_force_until_it_ends_or_is_cleared(db_session: Session) -> None:
    s = db_session
    drill(s, "anthropic:a", until=timedelta(minutes=5))
    drill(s, "anthropic:b", until=timedelta(minutes=-5))  # over
    drill(s, "anthropic:c", until=timedelta(minutes=5), cleared=True)

    assert resilience.active_drills(s) == {"anthropic:a": "drill on anthropic:a"}
    # as of a given time: an hour ago the ended one was in force too
    now = datetime.now(UTC)
    assert resilience.active_drills(s, now - timedelta(minutes=30)) == {
        "anthropic:a": "drill on anthropic:a",
        "anthropic:b": "drill on anthropic:b",
    }
    assert resilience.active_drills(s, now + timedelta(minutes=10)) == {}


def test_start_drill_runs_for_its_seconds(db_session: Session) -> None:
    s = db_session
    before = datetime.now(UTC)

    made = resilience.start_drill(s, "bedrock:m", 90, "game day")

    assert (made.breaker_key, made.reason, made.calls_diverted, made.cleared_at) == (
        "bedrock:m", "game day", 0, None,
    )  # fmt: skip
    assert made.until - made.started_at == timedelta(seconds=90)
    assert before <= made.started_at <= datetime.now(UTC)
    assert resilience.active_drills(s) == {"bedrock:m": "game day"}


@pytest.mark.parametrize(
    ("key", "cleared", "left"), [("anthropic:a", 2, {"anthropic:b"}), (None, 3, set())]
)
def test_clear_ends_the_drills_in_force_of_a_key_or_all(
    db_session: Session, key: str | None, cleared: int, left: set[str]
) -> None:
    s = db_session
    drill(s, "anthropic:a", until=timedelta(minutes=5))
    drill(s, "anthropic:a", until=timedelta(minutes=9))
    drill(s, "anthropic:b", until=timedelta(minutes=5))
    drill(s, "anthropic:a", until=timedelta(minutes=-5))  # over: not cleared, not counted
    drill(s, "anthropic:a", until=timedelta(minutes=5), cleared=True)  # cleared before

    assert resilience.clear_drills(s, key) == cleared
    s.flush()

    assert set(resilience.active_drills(s)) == left
    assert resilience.clear_drills(s, key) == 0  # nothing left to clear


def test_list_drills_is_newest_first(db_session: Session) -> None:
    s = db_session
    ids = [drill(s, f"k:{n}", until=timedelta(minutes=n)) for n in range(3)]

    assert [d.id for d in resilience.list_drills(s)] == ids[::-1]
    assert [d.id for d in resilience.list_drills(s, limit=2)] == ids[:0:-1]


def test_purge_forgets_old_texts_and_raw_lines_and_keeps_the_ledger(db_session: Session) -> None:
    s = db_session
    conn = s.connection()
    job_id, sub = new_job(conn, "j")
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    common = {"meta": {"user": 1}, "cost_nanos": 7, "label": "spam"}
    old_done = add_item(
        conn, job_id, sub, "a", text="secret a", status="done", finished_at=old, **common
    )
    new_done = add_item(
        conn, job_id, sub, "b", text="secret b", status="done", finished_at=recent, **common
    )
    pending = add_item(conn, job_id, sub, "c", text="secret c", status="pending", **common)
    line = {"job_id": job_id, "submission_id": sub, "source": "f", "reason": "invalid JSON"}
    conn.execute(REJECTED.insert().values(line_no=1, raw="{secret", created_at=old, **line))
    conn.execute(REJECTED.insert().values(line_no=2, raw="{recent", **line))  # recorded now

    assert purge(s, now - timedelta(days=30)) == (1, 1)
    assert purge(s, now - timedelta(days=30)) == (0, 0)  # nothing left to forget

    items = {
        r.id: (r.text, r.meta, r.label, r.cost_nanos, r.status)
        for r in s.execute(select(ITEMS).where(ITEMS.c.job_id == job_id))
    }
    assert items == {
        old_done: (None, {}, "spam", 7, "done"),
        new_done: ("secret b", {"user": 1}, "spam", 7, "done"),
        pending: ("secret c", {"user": 1}, "spam", 7, "pending"),
    }
    lines = s.execute(
        select(REJECTED.c.line_no, REJECTED.c.raw, REJECTED.c.reason).order_by(REJECTED.c.line_no)
    )
    assert [tuple(r) for r in lines] == [(1, "", "invalid JSON"), (2, "{recent", "invalid JSON")]

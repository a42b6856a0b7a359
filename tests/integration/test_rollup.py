"""The report_daily rollup, on SQLite and Postgres: refreshed or not, fully or in
parts, ``report_daily`` and ``analytics.daily`` give exactly the rows of the live
aggregate over the attempts (what the view was before the rollup)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from models import analytics as an
from models import rollup
from models.tables import Attempt
from models.tables_rollup import RollupDaily, RollupDailyLatency
from models.views_daily import REPORT_DAILY_LIVE
from tests.integration.conftest import Ledger, add_attempt, add_item, new_job
from tests.integration.test_analytics import DAILY, build_triage

LATER = datetime.now(UTC) + timedelta(hours=1)  # "now" for a refresh that takes every row
Row = tuple[Any, ...]


def _row(r: Any) -> Row:
    return (str(r.day), r.pipeline, r.tier_index, r.tier, int(r.items), int(r.accepted),
            int(r.escalated), int(r.failed), int(r.calls),
            int(Decimal(str(r.cost_usd)) * 10**9), int(Decimal(str(r.baseline_cost_usd)) * 10**9),
            None if r.p95_ms is None else int(r.p95_ms))  # fmt: skip


def _daily_row(r: an.DailyRow) -> Row:
    return (r.day.isoformat(), r.pipeline, r.tier_index, r.tier, r.items, r.accepted,
            r.escalated, r.failed, r.calls, r.cost_nanos, r.baseline_nanos, r.p95_ms)  # fmt: skip


def live(ledger: Ledger) -> list[Row]:
    """The aggregate over the attempts themselves, no rollup involved."""
    with ledger.engine.connect() as conn:
        sql = REPORT_DAILY_LIVE[conn.dialect.name].format(where="")
        return sorted(_row(r) for r in conn.execute(text(sql)))


def view(ledger: Ledger) -> list[Row]:
    with ledger.engine.connect() as conn:
        return sorted(_row(r) for r in conn.execute(text("SELECT * FROM report_daily")))


def rolled(ledger: Ledger) -> tuple[list[Row], list[Row]]:
    with Session(ledger.engine) as s:
        sums = s.execute(select(*RollupDaily.__table__.c)).all()
        hist = s.execute(select(*RollupDailyLatency.__table__.c)).all()
        return sorted(tuple(map(str, r)) for r in sums), sorted(tuple(map(str, r)) for r in hist)


def refresh(ledger: Ledger, **kw: Any) -> rollup.Refreshed:
    kw.setdefault("now", LATER)
    return rollup.refresh(sessionmaker(ledger.engine), **kw)


@pytest.fixture
def both(ledger: Ledger) -> Iterator[Ledger]:
    """The conftest ledger (made now) plus the triage job (made on 2026-11-01/02)."""
    with ledger.engine.begin() as conn:
        build_triage(conn)
    yield ledger


def _triage(rows: list[Row]) -> list[Row]:
    # in test_analytics' DAILY shape: (day, tier, items, esc, failed, calls, cost, baseline, p95)
    return [(r[0], r[3], *r[4:5], *r[6:]) for r in rows if r[1] == "triage"]


def test_refreshed_view_equals_the_live_aggregate(both: Ledger) -> None:
    expected = live(both)
    assert _triage(expected) == DAILY  # the live aggregate is the pre-rollup view
    assert view(both) == expected  # nothing rolled up yet: all tail

    done = refresh(both)

    assert done.before == 0 and done.batches == 1
    with Session(both.engine) as s:
        assert done.after == s.execute(select(func.max(Attempt.id))).scalar_one()
        assert rollup.state(s).tail == 0
        assert sorted(map(_daily_row, an.daily(s, an.Scope()))) == expected
        triage = an.daily(s, an.Scope(pipeline="triage", since=date(2026, 11, 2)))
    assert view(both) == expected  # all rollup now
    assert [_daily_row(r) for r in triage] == [
        r for r in expected if r[:2] == ("2026-11-02", "triage")
    ]


def test_refresh_in_parts_and_a_mark_in_the_middle(both: Ledger) -> None:
    """Chunks of 3 ids put the mark inside items' tier visits and days: same rows."""
    expected = live(both)
    with Session(both.engine) as s, s.begin():
        top = int(s.execute(select(func.max(Attempt.id))).scalar_one())
        # Given a mark part-way through the ledger
        rollup.add_range(s, 0, top // 2)
        s.execute(text("UPDATE rollup_mark SET last_id = :w"), {"w": top // 2})
    # Then rollup + tail is exact
    assert view(both) == expected
    # When the rest is added three ids per transaction
    done = refresh(both, chunk=3)
    assert done.batches == -(-(top - top // 2) // 3)
    assert view(both) == expected


def test_incremental_refresh_adds_new_attempts_once(both: Ledger) -> None:
    refresh(both)
    first = rolled(both)
    # Given new attempts: a second step of item c at the small tier on the same day
    # (not a new item there) and a new item of the main job
    with both.engine.begin() as conn:
        c = both.items["c"]
        add_attempt(conn, both.job_id, c, 20, tier_index=1, tier="small", role="primary",
                    provider="anthropic", model="claude-small", outcome="ok",
                    decision=None, cost_nanos=5, latency_ms=77)  # fmt: skip
        job_id, sub = new_job(conn, "late")
        item = add_item(conn, job_id, sub, "z", meta={}, status="done", baseline_nanos=9)
        add_attempt(conn, job_id, item, 1, tier_index=1, tier="small", role="primary",
                    provider="anthropic", model="claude-small", outcome="ok",
                    decision="accept", cost_nanos=11, latency_ms=5000)  # fmt: skip
    expected = live(both)
    assert view(both) == expected  # the tail, live

    done = refresh(both)

    assert done.batches == 1 and done.after > done.before
    assert view(both) == expected
    today = [r for r in expected if r[1] == "moderation" and r[3] == "small"]
    # items a, c, d, e, the other job's a and z (c's extra step is a call, not an item);
    # accepted a, other a, z; baselines of the accepted and failed (a, e, other a, z)
    cost = 1_234_567 + 2_000_003 + 3_000_005 + 999_999 + 777 + 5 + 11
    assert [r[4:] for r in today] == [(6, 3, 2, 1, 8, cost, 2 * 20_000_001 + 5 + 9, 5000)]
    assert rolled(both) != first


def test_refresh_is_idempotent(both: Ledger) -> None:
    refresh(both)
    once = rolled(both)

    again = refresh(both)

    assert again.batches == 0 and again.before == again.after
    assert rolled(both) == once
    assert view(both) == live(both)


def test_shadow_steps_count_nowhere(both: Ledger) -> None:
    before = live(both)
    with both.engine.begin() as conn:
        for step, (tier_index, tier) in enumerate(((1, "small"), (2, "large")), start=50):
            add_attempt(conn, both.job_id, both.items["a"], step, tier_index=tier_index,
                        tier=tier, role="shadow", provider="anthropic", model="m",
                        outcome="ok", decision="accept", cost_nanos=10**9,
                        latency_ms=99_999)  # fmt: skip

    assert live(both) == before
    assert view(both) == before  # in the tail
    refresh(both)
    assert view(both) == before  # in the rollup
    assert "99999" not in str(rolled(both))


def test_recent_attempts_wait_for_the_grace_period(ledger: Ledger) -> None:
    """Attempts younger than the grace period stay in the live tail."""
    now = datetime.now(UTC)
    with ledger.engine.begin() as conn:
        job_id, sub = new_job(conn, "fresh")
        item = add_item(conn, job_id, sub, "x", meta={}, status="done", baseline_nanos=1)
        old = add_attempt(conn, job_id, item, 1, tier_index=1, tier="small", role="primary",
                          provider="p", model="m", outcome="ok", decision="escalate",
                          latency_ms=10, created_at=now - timedelta(minutes=10))  # fmt: skip
        young = add_attempt(conn, job_id, item, 2, tier_index=2, tier="large", role="primary",
                            provider="p", model="m", outcome="ok", decision="accept",
                            latency_ms=20, created_at=now - timedelta(minutes=1))  # fmt: skip
    # The conftest ledger's rows were written "now" too: all but `old` are young.
    done = refresh(ledger, now=now, grace=timedelta(minutes=5))

    assert done.after == old < young
    assert view(ledger) == live(ledger)
    with Session(ledger.engine) as s:
        assert rollup.state(s).last_id == old
    later = refresh(ledger, now=now + timedelta(minutes=5), grace=timedelta(minutes=5))
    assert later.after == young
    assert view(ledger) == live(ledger)


@pytest.mark.postgres
def test_concurrent_refreshers_never_double_count(pg_url: str) -> None:
    from migrations.runner import upgrade
    from models.db import make_engine
    from tests.integration.conftest import build_ledger

    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            build_ledger(conn)
            build_triage(conn)
        ledger = Ledger(url=pg_url, engine=engine, job_id=0, other_job_id=0)
        expected = live(ledger)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                rollup.refresh(sessionmaker(engine), now=LATER, chunk=2)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert view(ledger) == expected
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM rollup_mark")).scalar_one() == 1
    finally:
        engine.dispose()


def _calls_job(conn: Any) -> int:
    """Pipeline "calls", tier small: a call, a breaker-open and a drill step (each then
    served by a fallback call) and a repeat that reused the first item's decision."""
    from models.tables import Job, Submission

    job_id = _insert(conn, Job, name="calls-1", pipeline_name="calls", pipeline={"tiers": 1})
    sub = _insert(conn, Submission, job_id=job_id, source="calls.jsonl")
    step = {"tier_index": 0, "tier": "small", "provider": "anthropic", "model": "claude-small"}
    src = add_item(conn, job_id, sub, "src", meta={}, status="done", cost_nanos=500,
                   baseline_nanos=1000)  # fmt: skip
    add_attempt(conn, job_id, src, 1, **step, role="primary", outcome="ok", decision="accept",
                cost_nanos=500, latency_ms=40)  # fmt: skip
    for n, (key, outcome, cost, ms) in enumerate(
        (("breaker", "breaker_open", 300, 60), ("drill", "drill", 200, 80)), start=2
    ):
        item = add_item(conn, job_id, sub, key, line_no=n, meta={}, status="done",
                        cost_nanos=cost, baseline_nanos=1000)  # fmt: skip
        add_attempt(conn, job_id, item, 1, **step, role="primary", outcome=outcome,
                    decision="fallback", cost_nanos=0, latency_ms=0)  # fmt: skip
        add_attempt(conn, job_id, item, 2, **step, role="fallback", outcome="ok",
                    decision="accept", cost_nanos=cost, latency_ms=ms)  # fmt: skip
    repeat = add_item(conn, job_id, sub, "repeat", line_no=4, meta={}, status="done",
                      cost_nanos=0, baseline_nanos=1000, reuse_of=src)  # fmt: skip
    add_attempt(conn, job_id, repeat, 1, tier_index=0, tier="small", role="reuse",
                provider="reuse", model="reuse", outcome="reused", decision="accept",
                cost_nanos=0, latency_ms=0, reuse_of=src)  # fmt: skip
    return job_id


def _insert(conn: Any, entity: Any, **values: Any) -> int:
    from sqlalchemy import insert

    pk = conn.execute(insert(entity).values(**values)).inserted_primary_key
    return int(pk[0])


def _calls(rows: list[an.DailyRow]) -> list[tuple[Any, ...]]:
    return [(r.items, r.accepted, r.calls, r.not_sent, r.reused, r.reuse_saved_nanos,
             r.cost_nanos, r.baseline_nanos, r.p95_ms)
            for r in rows if r.pipeline == "calls"]  # fmt: skip


def test_daily_counts_calls_made_and_reused_items_apart(ledger: Ledger) -> None:
    """Issue 18 point 6, issue 19 point 5: a breaker-open step, a drill step and a reuse
    row are no call (nor a latency); the reused item counts, with what its source cost."""
    # Given a job whose 4 items made 3 requests (2 steps sent none, 1 item was reused)
    with ledger.engine.begin() as conn:
        job_id = _calls_job(conn)
    # items, accepted, calls, not_sent, reused, saved, cost, baseline, p95
    expected = [(4, 4, 3, 2, 1, 500, 1000, 4000, 80)]
    pipeline = an.Scope(pipeline="calls")
    with Session(ledger.engine) as s:
        # Then the view's live tail, and the live aggregate (a job scope), count so
        assert _calls(an.daily(s, pipeline)) == expected
        assert _calls(an.daily(s, an.Scope(job_ids=(job_id,)))) == expected
    # When the rollup takes every attempt
    refresh(ledger)
    with Session(ledger.engine) as s:
        # Then the rollup counts the same, and its histogram holds only the 3 requests
        assert rollup.state(s).tail == 0
        assert _calls(an.daily(s, pipeline)) == expected
        hist = s.execute(
            select(func.sum(RollupDailyLatency.n)).where(RollupDailyLatency.pipeline == "calls")
        ).scalar_one()
        assert int(hist) == 3
        # And the job report's reuse section agrees with the daily view
        from models.cache_report import reuse_summary

        reuse = reuse_summary(s, an.Scope(job_ids=(job_id,)))
        assert (reuse.items, reuse.saved_nanos) == (1, 500)
    assert [r for r in view(ledger) if r[1] == "calls"] == [
        r for r in live(ledger) if r[1] == "calls"
    ]

"""A submission's bookkeeping, on both databases: opening it (job created or reopened,
one statement on Postgres for a job that exists) and closing it (counts recorded, job
running or done, one statement on Postgres)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from common.lifecycle import Verdict
from models import ledger, repo
from models.db import make_sessionmaker
from models.ledger import Settled
from models.repo import JOBS, SUBMISSIONS, JobConflictError, NewItem

PIPE = {"name": "p", "tiers": [1, 2]}


def job_row(engine: Engine, job_id: int) -> tuple[str, bool]:
    with make_sessionmaker(engine)() as s:
        row = s.execute(select(JOBS.c.status, JOBS.c.finished_at).where(JOBS.c.id == job_id)).one()
    return row.status, row.finished_at is not None


def submissions(engine: Engine, job_id: int) -> list[tuple[str, int, int, bool]]:
    with make_sessionmaker(engine)() as s:
        rows = s.execute(
            select(SUBMISSIONS).where(SUBMISSIONS.c.job_id == job_id).order_by(SUBMISSIONS.c.id)
        ).all()
    return [(r.source, r.lines_read, r.items_added, r.finished_at is not None) for r in rows]


def test_open_creates_then_reopens_and_refuses_another_pipeline(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    # Given a new job name: the job is created, submitting, with its first submission
    with sessions.begin() as s:
        opened = repo.open_submission(s, "nightly", PIPE, "a.jsonl", draw=2)
    job_id, first = opened.job_id, opened.submission_id
    assert opened.created
    assert (opened.ids, opened.now) == ([], None)  # a new job: the caller draws ids itself
    assert job_row(engine, job_id) == ("submitting", False)
    with sessions.begin() as s:
        repo.close_submission(s, job_id, first, {"lines_read": 3, "items_added": 0})
    assert job_row(engine, job_id) == ("done", True)

    # When it is opened again with the same pipeline: the same job, a new submission,
    # submitting again and no longer finished
    with sessions.begin() as s:
        opened = repo.open_submission(s, "nightly", PIPE, "b.jsonl" + "x" * 600, draw=3)
        again, created, second = opened.job_id, opened.created, opened.submission_id
        if s.get_bind().dialect.name == "postgresql":  # ids drawn in the same statement
            row = s.execute(select(func.now(), func.currval("items_id_seq"))).one()
            assert opened.now == row[0] and len(set(opened.ids)) == 3
            assert max(opened.ids) == row[1]
        else:
            assert (opened.ids, opened.now) == ([], None)
    assert (again, created) == (job_id, False) and second != first
    assert job_row(engine, job_id) == ("submitting", False)
    assert [r[0][:7] for r in submissions(engine, job_id)] == ["a.jsonl", "b.jsonl"]
    assert len(submissions(engine, job_id)[1][0]) == 500  # the source is cut, not refused

    # Then another pipeline under that name is refused, and its transaction leaves
    # nothing, also when the statement began the transaction itself
    for begin in (False, True):
        with pytest.raises(JobConflictError, match="different pipeline"), sessions.begin() as s:
            repo.open_submission(s, "nightly", {"name": "q", "tiers": []}, "c.jsonl", begin=begin)
    assert len(submissions(engine, job_id)) == 2
    with engine.connect() as conn:  # the pool's connection is back out of autocommit
        raw = conn.connection.driver_connection
        assert getattr(raw, "autocommit", False) is False
    with sessions() as s:
        assert s.execute(select(func.count()).select_from(JOBS)).scalar_one() == 1


def test_close_records_counts_and_leaves_a_job_with_pending_items_running(
    engine: Engine,
) -> None:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        opened = repo.open_submission(s, "bulk", PIPE, "a.jsonl")
        job_id, sub = opened.job_id, opened.submission_id
        added = repo.add_items(s, job_id, sub, [NewItem(i, f"k{i}", "t", {}) for i in (1, 2)])
        # one item settled, one still pending
        pk = added.added[0]
        done = Settled(
            pk, Verdict.ACCEPT, 0, "rules", 1, 0, 0, 0, False, 1, "billing", 1.0, "rule 0"
        )
        ledger.settle(s, ledger.new_token(), [], [done], drop_text=False, held={pk})
        repo.close_submission(s, job_id, sub, {"lines_read": 2, "items_added": 2})
    assert job_row(engine, job_id) == ("running", False)
    assert submissions(engine, job_id) == [("a.jsonl", 2, 2, True)]

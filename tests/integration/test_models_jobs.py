"""A job's rows (models.jobs, models.jobctl): found by id or name, opened, submitted,
finished or failed for want of any answered call, paused, resumed, stopped, cancelled,
reopened; its budget and spend; the items no message carries. SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.lifecycle import Phase, Status
from common.stops import AUTH_FAILED
from models import jobctl, jobs
from models.core import DAILY, ITEMS, JOBS, utcnow
from tests.integration.conftest import add_attempt, add_item, new_job

PIPE = {"name": "triage", "labels": ["a", "b"]}


def job_with(s: Session, name: str, *items: tuple[str, dict[str, Any]], **job: Any) -> int:
    """A job (its columns ``job``) holding items (key, columns); returns its id."""
    conn = s.connection()
    job_id, sub = new_job(conn, name)
    if job:
        conn.execute(JOBS.update().where(JOBS.c.id == job_id).values(**job))
    for n, (key, values) in enumerate(items, start=1):
        add_item(conn, job_id, sub, key, line_no=n, meta={}, text=f"text {key}", **values)
    return job_id


def job_row(s: Session, job_id: int) -> Any:
    return s.execute(select(JOBS).where(JOBS.c.id == job_id)).one()


def item_rows(s: Session, job_id: int) -> dict[str, Any]:
    rows = s.execute(select(ITEMS).where(ITEMS.c.job_id == job_id)).all()
    return {r.item_key: r for r in rows}


def ids_of(s: Session, job_id: int) -> dict[str, int]:
    return {k: r.id for k, r in item_rows(s, job_id).items()}


# -- finding and opening --------------------------------------------------------
def test_a_job_is_found_by_id_first_then_by_name(db_session: Session) -> None:
    s = db_session
    first = job_with(s, "first")
    # a job whose name is the digits of another job's id: the id wins
    shadow = job_with(s, str(first))
    digits_only = job_with(s, "90000001")  # no job has that id: found by its name

    def found(ref: str | int) -> int | None:
        job = jobs.job_by_ref(s, ref)
        return None if job is None else job.id

    assert found(first) == found(str(first)) == found("first") == first
    assert found("90000001") == digits_only
    assert found(str(shadow)) == shadow
    assert found("nobody") is None
    assert found(90_000_002) is None


def test_open_job_creates_then_reopens_the_same_job_and_refuses_another_pipeline(
    db_session: Session,
) -> None:
    s = db_session
    job_id, created = jobs.open_job(s, "nightly", PIPE)
    assert created
    row = job_row(s, job_id)
    assert (row.name, row.pipeline_name, row.status) == ("nightly", "triage", "submitting")

    s.execute(JOBS.update().where(JOBS.c.id == job_id).values(status="done", finished_at=utcnow()))
    # the same pipeline, its keys in another order: the same job, submitting again
    again = jobs.open_job(s, "nightly", {"labels": ["a", "b"], "name": "triage"})
    assert again == (job_id, False)
    row = job_row(s, job_id)
    assert (row.status, row.finished_at) == ("submitting", None)

    with pytest.raises(jobs.JobConflictError) as err:
        jobs.open_job(s, "nightly", {"name": "other", "labels": ["a"]})
    assert str(err.value) == (
        "job 'nightly' exists with a different pipeline (triage); "
        "use another --job-name or the same pipeline file"
    )


def test_list_jobs_is_newest_first_and_limited(db_session: Session) -> None:
    s = db_session
    made = [job_with(s, f"j{n}") for n in range(4)]

    assert [j.id for j in jobs.list_jobs(s)] == made[::-1]
    assert [j.id for j in jobs.list_jobs(s, limit=2)] == made[:1:-1]


# -- submitted, finished ----------------------------------------------------------
@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("done", "pending"), "running"),
        (("done", "reuse_wait"), "running"),
        (("done", "paused_budget"), "running"),
        (("done", "failed", "budget_capped", "review"), "done"),
        ((), "done"),  # every line rejected: nothing to wait for
    ],
)
def test_a_submitted_job_runs_while_an_item_is_unfinished(
    db_session: Session, statuses: tuple[str, ...], expected: str
) -> None:
    s = db_session
    items = [(f"k{n}", {"status": st}) for n, st in enumerate(statuses)]
    job_id = job_with(s, "j", *items, status="submitting")

    jobs.job_submitted(s, job_id)

    row = job_row(s, job_id)
    assert row.status == expected
    assert (row.finished_at is not None) == (expected == "done")
    assert jobs.unfinished_count(s, job_id) == (1 if expected == "running" else 0)


def test_job_submitted_leaves_a_job_that_is_not_submitting_alone(db_session: Session) -> None:
    s = db_session
    job_id = job_with(s, "j", ("a", {"status": "done"}), status="paused")

    jobs.job_submitted(s, job_id)

    assert job_row(s, job_id).status == "paused"


def test_a_running_job_finishes_once_its_last_item_is_final(db_session: Session) -> None:
    s = db_session
    job_id = job_with(s, "j", ("a", {"status": "done"}), ("b", {"status": "running"}))
    pks = ids_of(s, job_id)
    add_attempt(
        s.connection(), job_id, pks["a"], 1, tier_index=1, tier="small", role="primary",
        provider="anthropic", model="m", outcome="ok", decision="accept",
    )  # fmt: skip

    assert not jobs.finish_job_if_done(s, job_id)
    assert job_row(s, job_id).status == "running"

    s.execute(ITEMS.update().where(ITEMS.c.id == pks["b"]).values(status="failed", error="x"))
    assert jobs.finish_job_if_done(s, job_id)
    row = job_row(s, job_id)
    # one call was answered, so a failed item does not fail the job
    assert (row.status, row.message, row.finished_at is not None) == ("done", None, True)
    assert not jobs.finish_job_if_done(s, job_id)  # done already: no change now


@pytest.mark.parametrize(
    ("role", "outcome"),
    [
        ("rules", "ok"),  # a rule is not a model call
        ("shadow", "ok"),  # a calibration sample is not the item's call
        ("primary", "permanent"),  # sent, never answered
        ("primary", "transient"),
    ],
)
def test_a_job_whose_every_call_failed_fails_with_the_commonest_reason(
    db_session: Session, role: str, outcome: str
) -> None:
    s = db_session
    job_id = job_with(
        s,
        "j",
        ("a", {"status": "failed", "error": "model retired"}),
        ("b", {"status": "failed", "error": "model retired"}),
        ("c", {"status": "failed", "error": "refused"}),
        ("d", {"status": "done"}),
    )
    pks = ids_of(s, job_id)
    add_attempt(
        s.connection(), job_id, pks["a"], 1, tier_index=0, tier="t", role=role,
        provider="p", model="m", outcome=outcome,
    )  # fmt: skip

    assert jobs.finish_job_if_done(s, job_id)

    row = job_row(s, job_id)
    assert row.status == "failed"
    assert row.message == "every model call failed; the commonest reason (2 items): model retired"


@pytest.mark.parametrize("outcome", ["ok", "refusal", "malformed"])
def test_one_answered_call_keeps_a_job_with_failures_done(
    db_session: Session, outcome: str
) -> None:
    s = db_session
    job_id = job_with(s, "j", ("a", {"status": "failed", "error": "boom"}), status="done")
    pk = ids_of(s, job_id)["a"]
    add_attempt(
        s.connection(), job_id, pk, 1, tier_index=1, tier="t", role="fallback",
        provider="p", model="m", outcome=outcome,
    )  # fmt: skip

    assert not jobctl.fail_if_no_call_passed(s, job_id)
    assert job_row(s, job_id).status == "done"


def test_a_job_the_rules_answered_whole_is_not_failed(db_session: Session) -> None:
    s = db_session
    job_id = job_with(s, "j", ("a", {"status": "done"}), status="done")

    assert not jobctl.fail_if_no_call_passed(s, job_id)
    assert job_row(s, job_id).status == "done"


def test_the_commonest_reason_counts_items_with_thousands_separators(db_session: Session) -> None:
    s = db_session
    conn = s.connection()
    job_id, sub = new_job(conn, "j")
    conn.execute(JOBS.update().where(JOBS.c.id == job_id).values(status="done"))
    conn.execute(
        ITEMS.insert(),
        [
            {"job_id": job_id, "submission_id": sub, "item_key": f"k{n}", "line_no": n,
             "meta": {}, "status": "failed", "error": "gone"}
            for n in range(1_001)
        ],
    )  # fmt: skip

    assert jobctl.fail_if_no_call_passed(s, job_id)
    assert job_row(s, job_id).message.endswith("(1,001 items): gone")


# -- pausing, resuming, stopping ----------------------------------------------------
@pytest.mark.parametrize("status", ["running", "submitting"])
def test_pause_keeps_the_reason_cut_to_2000_characters(db_session: Session, status: str) -> None:
    s = db_session
    job_id = job_with(s, "j", ("a", {"status": "pending"}), status=status)

    jobs.pause_job(s, job_id, "spend limit " + "x" * 3000)

    row = job_row(s, job_id)
    assert row.status == "paused"
    assert row.message.startswith("spend limit x") and len(row.message) == 2000
    assert item_rows(s, job_id)["a"].status == "pending"  # items are paused one by one


@pytest.mark.parametrize("status", ["done", "failed"])
def test_pause_leaves_a_finished_job_alone(db_session: Session, status: str) -> None:
    s = db_session
    job_id = job_with(s, "j", status=status)

    jobs.pause_job(s, job_id, "spend limit")

    row = job_row(s, job_id)
    assert (row.status, row.message) == (status, None)


def test_refused_credentials_stop_the_job_instead_of_pausing_it(db_session: Session) -> None:
    s = db_session
    job_id = job_with(
        s, "j", ("a", {"status": "pending"}), ("b", {"status": "fallback"}),
        ("c", {"status": "running"}), ("d", {"status": "done"}),
    )  # fmt: skip
    reason = f"{AUTH_FAILED} (401)"

    jobs.pause_job(s, job_id, reason)

    row = job_row(s, job_id)
    assert (row.status, row.message, row.finished_at is not None) == ("failed", reason, True)
    got = {k: (r.status, r.error) for k, r in item_rows(s, job_id).items()}
    assert got == {
        "a": ("paused", reason),
        "b": ("paused", reason),
        "c": ("running", None),  # a worker holds it: it settles as it will
        "d": ("done", None),
    }


def test_resume_sends_paused_items_back_to_their_tiers(db_session: Session) -> None:
    s = db_session
    job_id = job_with(
        s,
        "j",
        ("a", {"status": "paused", "tier_index": 2, "error": "limit"}),
        ("b", {"status": "paused_budget", "tier_index": 0, "error": "budget"}),
        ("c", {"status": "paused", "tier_index": 2}),
        ("d", {"status": "done", "tier_index": 1}),
        ("e", {"status": "pending", "tier_index": 1}),
        status="paused",
        message="spend limit",
        budget_nanos=10,
    )
    pks = ids_of(s, job_id)

    sends = jobs.resume_job(s, job_id)

    assert sends == [(0, [pks["b"]]), (2, sorted([pks["a"], pks["c"]]))]
    got = {k: (r.status, r.error) for k, r in item_rows(s, job_id).items()}
    assert got["a"] == got["b"] == got["c"] == ("pending", None)
    assert got["d"] == ("done", None)
    row = job_row(s, job_id)
    assert (row.status, row.message, row.budget_nanos) == ("running", None, 10)


def test_resume_with_a_budget_raises_it_and_a_failed_job_stays_failed(db_session: Session) -> None:
    s = db_session
    job_id = job_with(s, "j", status="failed", message="stopped", budget_nanos=10)

    assert jobs.resume_job(s, job_id, budget_nanos=5_000) == []

    row = job_row(s, job_id)
    assert (row.status, row.message, row.budget_nanos) == ("failed", "stopped", 5_000)


def test_stop_pauses_waiting_items_and_fails_the_job(db_session: Session) -> None:
    s = db_session
    job_id = job_with(
        s, "j", ("a", {"status": "pending"}), ("b", {"status": "fallback"}),
        ("c", {"status": "fallback_running"}), ("d", {"status": "review"}),
        status="paused",
    )  # fmt: skip

    jobctl.stop_job(s, job_id, "stopped by the user")

    got = {k: (r.status, r.error) for k, r in item_rows(s, job_id).items()}
    assert got == {
        "a": ("paused", "stopped by the user"),
        "b": ("paused", "stopped by the user"),
        "c": ("fallback_running", None),
        "d": ("review", None),
    }
    row = job_row(s, job_id)
    assert (row.status, row.message) == ("failed", "stopped by the user")


def test_stop_does_not_turn_a_done_job_into_a_failed_one(db_session: Session) -> None:
    s = db_session
    job_id = job_with(s, "j", ("a", {"status": "done"}), status="done")

    jobctl.stop_job(s, job_id, "too late")

    row = job_row(s, job_id)
    assert (row.status, row.message) == ("done", None)


def test_cancel_fails_every_unfinished_item_and_takes_back_its_lease(db_session: Session) -> None:
    s = db_session
    later = utcnow() + timedelta(minutes=5)
    job_id = job_with(
        s,
        "j",
        ("a", {"status": "running", "lease_token": "t", "lease_until": later}),
        ("b", {"status": "pending"}),
        ("c", {"status": "paused_budget"}),
        ("d", {"status": "done", "label": "spam"}),
        ("e", {"status": "failed", "error": "boom"}),
    )

    assert jobctl.cancel_job(s, job_id) == 3

    got = {
        k: (r.status, r.error, r.lease_token, r.lease_until)
        for k, r in item_rows(s, job_id).items()
    }
    cancelled = ("failed", jobctl.CANCELLED, None, None)
    assert got["a"] == got["b"] == got["c"] == cancelled
    assert got["d"] == ("done", None, None, None)
    assert got["e"] == ("failed", "boom", None, None)  # its own reason stays
    finished = {k for k, r in item_rows(s, job_id).items() if r.finished_at is not None}
    assert finished == {"a", "b", "c"}
    row = job_row(s, job_id)
    assert (row.status, row.message) == ("failed", "cancelled by the user")
    assert jobctl.cancel_job(s, job_id) == 0  # nothing left to cancel


@pytest.mark.parametrize(
    ("status", "reopened"),
    [("failed", True), ("paused", True), ("submitting", True), ("done", False), ("running", False)],
)
def test_reopen_runs_a_stopped_job_again(db_session: Session, status: str, reopened: bool) -> None:
    s = db_session
    job_id = job_with(
        s, "j", ("a", {"status": "paused", "error": "stopped"}), ("b", {"status": "done"}),
        status=status, message="stopped", finished_at=utcnow(),
    )  # fmt: skip

    jobctl.reopen_job(s, job_id)

    row = job_row(s, job_id)
    if reopened:
        assert (row.status, row.message, row.finished_at) == ("running", None, None)
    else:
        assert (row.status, row.message) == (status, "stopped")
    # the paused items wait at their tier again whatever the job was
    got = {k: (r.status, r.error) for k, r in item_rows(s, job_id).items()}
    assert got == {"a": ("pending", None), "b": ("done", None)}


# -- budgets --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("budget", "spent", "daily", "spent_today", "left"),
    [
        (None, 0, None, 0, None),  # no cap at all
        (100, 30, None, 0, 70),
        (None, 30, 1_000, 400, 600),
        (100, 30, 1_000, 990, 10),  # the smaller of the two
        (100, 130, None, 0, 0),  # overspent: nothing left, never negative
        (None, 0, 50, 0, 50),  # nothing spent today yet
    ],
)
def test_budget_left_is_the_tighter_of_job_and_daily_budget(
    db_session: Session,
    budget: int | None,
    spent: int,
    daily: int | None,
    spent_today: int,
    left: int | None,
) -> None:
    s = db_session
    job_id = job_with(s, "j", budget_nanos=budget, spent_nanos=spent)
    if spent_today:
        s.execute(
            DAILY.insert().values(
                pipeline_name="moderation", day=utcnow().date(), spent_nanos=spent_today
            )
        )
    # another pipeline's spend and yesterday's never count
    s.execute(DAILY.insert().values(pipeline_name="other", day=utcnow().date(), spent_nanos=999))
    s.execute(
        DAILY.insert().values(
            pipeline_name="moderation", day=utcnow().date() - timedelta(days=1), spent_nanos=999
        )
    )

    assert jobs.budget_left(s, job_id, daily) == left


def test_spend_adds_up_on_the_job_and_on_its_pipelines_day(db_session: Session) -> None:
    s = db_session
    job_id = job_with(s, "j")
    other = job_with(s, "k")

    jobs.add_spend(s, job_id, "moderation", 0)
    jobs.add_spend(s, job_id, "moderation", -5)
    assert s.execute(select(DAILY)).all() == []  # nothing spent: no row

    jobs.add_spend(s, job_id, "moderation", 700)
    jobs.add_spend(s, job_id, "moderation", 300)
    jobs.add_spend(s, other, "moderation", 11)

    assert (job_row(s, job_id).spent_nanos, job_row(s, other).spent_nanos) == (1_000, 11)
    day = s.execute(select(DAILY.c.pipeline_name, DAILY.c.day, DAILY.c.spent_nanos)).all()
    assert [tuple(r) for r in day] == [("moderation", utcnow().date(), 1_011)]
    jobs.set_budget(s, job_id, 1_500)
    assert jobs.budget_left(s, job_id, None) == 500
    jobs.set_budget(s, job_id, None)
    assert jobs.budget_left(s, job_id, None) is None


# -- what nobody carries ------------------------------------------------------------
def test_uncarried_finds_old_waiting_items_and_run_out_leases(db_session: Session) -> None:
    s = db_session
    now = utcnow()
    old, recent = now - timedelta(minutes=10), now - timedelta(seconds=5)
    job_id = job_with(
        s,
        "j",
        ("old_pending", {"status": "pending", "tier_index": 1, "updated_at": old}),
        ("new_pending", {"status": "pending", "tier_index": 1, "updated_at": recent}),
        ("old_fallback", {"status": "fallback", "tier_index": 1, "updated_at": old}),
        ("deferred", {"status": "fallback", "tier_index": 1, "updated_at": recent}),
        ("lost_lease", {"status": "running", "tier_index": 0, "lease_until": old,
                        "updated_at": old}),
        ("live_lease", {"status": "fallback_running", "tier_index": 2,
                        "lease_until": now + timedelta(minutes=5), "updated_at": old}),
        ("lost_fallback", {"status": "fallback_running", "tier_index": 2, "lease_until": old,
                           "updated_at": old}),
        ("finished", {"status": "done", "tier_index": 0, "updated_at": old}),
    )  # fmt: skip
    pks = ids_of(s, job_id)
    other = job_with(s, "other", ("x", {"status": "pending", "updated_at": old}))

    found = jobctl.uncarried(
        s, job_id, before=now - timedelta(minutes=1), release_leases=False,
        fallback_before=now - timedelta(minutes=5),
    )  # fmt: skip

    assert found == [
        jobctl.Waiting(0, Phase.TIER, [pks["lost_lease"]]),
        jobctl.Waiting(1, Phase.FALLBACK, [pks["old_fallback"]]),
        jobctl.Waiting(1, Phase.TIER, [pks["old_pending"]]),
        jobctl.Waiting(2, Phase.FALLBACK, [pks["lost_fallback"]]),
    ]
    # without a fallback cut-off, the fallback phase waits as long as the tier's
    found = jobctl.uncarried(s, job_id, before=now, release_leases=False, tiers=[1])
    assert found == [
        jobctl.Waiting(1, Phase.FALLBACK, sorted([pks["old_fallback"], pks["deferred"]])),
        jobctl.Waiting(1, Phase.TIER, sorted([pks["old_pending"], pks["new_pending"]])),
    ]
    # the boundary: an item last touched exactly at ``before`` counts as uncarried
    x = ids_of(s, other)["x"]
    assert jobctl.uncarried(s, other, before=old, release_leases=False) == [
        jobctl.Waiting(0, Phase.TIER, [x])
    ]
    assert jobctl.uncarried(s, other, before=old - timedelta(seconds=1), release_leases=False) == []


def test_uncarried_ends_leases_taken_before_this_process_started(db_session: Session) -> None:
    s = db_session
    now = utcnow()
    started = now - timedelta(minutes=1)
    later = now + timedelta(minutes=5)
    job_id = job_with(
        s,
        "j",
        ("dead", {"status": "running", "lease_token": "t1", "lease_until": later,
                  "updated_at": now - timedelta(minutes=3)}),
        ("dead_fb", {"status": "fallback_running", "lease_token": "t2", "lease_until": later,
                     "updated_at": now - timedelta(minutes=3)}),
        ("mine", {"status": "running", "lease_token": "t3", "lease_until": later,
                  "updated_at": now}),
    )  # fmt: skip
    pks = ids_of(s, job_id)

    found = jobctl.uncarried(s, job_id, before=started, release_leases=True)

    # the dead process's leases end (the items wait again, as of ``before``) and are found
    assert found == [
        jobctl.Waiting(0, Phase.FALLBACK, [pks["dead_fb"]]),
        jobctl.Waiting(0, Phase.TIER, [pks["dead"]]),
    ]
    got = {k: (r.status, r.lease_token) for k, r in item_rows(s, job_id).items()}
    assert got == {
        "dead": (Status.PENDING, None),
        "dead_fb": (Status.FALLBACK, None),
        "mine": (Status.RUNNING, "t3"),  # taken by this process: still held
    }

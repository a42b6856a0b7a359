"""The ledger's sweep and its orphan calls (models.ledger), on SQLite and Postgres: which
items count as strays and when, that a sweep does not find the same items twice, and
that the calls of a worker that lost its lease are kept, numbered apart and billed to
the item, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.lifecycle import Outcome, Phase, Verdict
from models import ledger, repo
from models.attempt_rows import attempt_row
from models.core import ATTEMPTS, ITEMS, utcnow
from models.ledger import ORPHAN_STEP_BASE, Settled, Stray

TIER = 1


def items(s: Session, n: int, name: str = "j") -> tuple[int, list[int]]:
    job_id, _ = repo.open_job(s, name, {"name": "p"})
    sub = repo.start_submission(s, job_id, "f.jsonl")
    batch = [repo.NewItem(k + 1, f"k{k}", f"text {k}", {}) for k in range(n)]
    ids = repo.add_items(s, job_id, sub, batch).added
    s.execute(ITEMS.update().where(ITEMS.c.id.in_(ids)).values(tier_index=TIER))
    return job_id, ids


def set_item(s: Session, pk: int, *, ago: float | None = None, **values: Any) -> None:
    if ago is not None:
        values["updated_at"] = utcnow() - timedelta(seconds=ago)
    s.execute(ITEMS.update().where(ITEMS.c.id == pk).values(**values))


def leased(s: Session, pk: int, status: str, *, expires_in: float) -> None:
    until = utcnow() + timedelta(seconds=expires_in)
    set_item(s, pk, ago=3600, status=status, lease_token="t", lease_until=until)


# -- strays -------------------------------------------------------------------------
def test_strays_are_idle_waiting_items_and_run_out_leases(db_session: Session) -> None:
    s = db_session
    job_id, ids = items(s, 8)
    idle, fresh, fb_idle, fb_waiting, lost, lost_fb, live, done = ids
    set_item(s, idle, ago=700)
    set_item(s, fresh, ago=60)
    set_item(s, fb_idle, ago=4000, status="fallback")
    set_item(s, fb_waiting, ago=700, status="fallback", deferrals=2)  # within its own idle
    leased(s, lost, "running", expires_in=-5)
    leased(s, lost_fb, "fallback_running", expires_in=-5)
    leased(s, live, "running", expires_in=300)
    set_item(s, done, ago=9000, status="done")

    found = ledger.strays(s, idle_s=600, fallback_idle_s=3600)

    assert sorted(found, key=lambda x: x.phase) == [
        Stray(job_id, TIER, Phase.FALLBACK, [fb_idle, lost_fb]),
        Stray(job_id, TIER, Phase.TIER, [idle, lost]),
    ]
    # the waiting ones were touched: a second pass does not send them again; a lease
    # still run out is found again (nobody has taken the item yet)
    again = ledger.strays(s, idle_s=600, fallback_idle_s=3600)
    assert sorted(found_ids(again)) == sorted([lost, lost_fb])
    # without its own idle time the fallback phase waits as long as the tiers
    assert fb_waiting in found_ids(ledger.strays(s, idle_s=600))


def found_ids(strays: list[Stray]) -> list[int]:
    return [pk for st in strays for pk in st.ids]


def test_strays_come_in_id_order_up_to_the_limit(db_session: Session) -> None:
    s = db_session
    job_id, ids = items(s, 3)
    for pk in ids:
        set_item(s, pk, ago=700)

    assert ledger.strays(s, idle_s=600, limit=2) == [Stray(job_id, TIER, Phase.TIER, ids[:2])]
    assert ledger.strays(s, idle_s=600, limit=2) == [Stray(job_id, TIER, Phase.TIER, ids[2:])]
    assert ledger.strays(s, idle_s=600) == []


def test_a_quiet_queue_gives_up_its_never_deferred_items_early(db_session: Session) -> None:
    s = db_session
    job_id, ids = items(s, 4)
    _, (elsewhere,) = items(s, 1, name="other")
    waiting, fb, deferred, young = ids
    set_item(s, waiting, ago=30)
    set_item(s, fb, ago=30, status="fallback")
    set_item(s, deferred, ago=30, status="fallback", deferrals=1)  # its countdown runs
    set_item(s, young, ago=2)
    set_item(s, elsewhere, ago=30)  # another job's queue still holds its message
    quiet = [(job_id, TIER, Phase.TIER), (job_id, TIER, Phase.FALLBACK)]

    found = ledger.strays(s, idle_s=600, quiet=quiet, quiet_idle_s=10)

    assert sorted(found, key=lambda x: x.phase) == [
        Stray(job_id, TIER, Phase.FALLBACK, [fb]),
        Stray(job_id, TIER, Phase.TIER, [waiting]),
    ]


def test_waiting_tiers_are_where_items_wait_for_a_message_too_long(db_session: Session) -> None:
    s = db_session
    job_id, ids = items(s, 4)
    other_job, (other,) = items(s, 1, name="other")
    set_item(s, ids[0], ago=120)
    set_item(s, ids[1], ago=120, tier_index=2)
    set_item(s, ids[2], ago=120, status="fallback")
    set_item(s, ids[3], ago=120, status="fallback", tier_index=2, deferrals=1)  # on purpose
    set_item(s, other, ago=5)

    found = ledger.waiting_tiers(s, idle_s=60)

    assert sorted(found) == sorted(
        [(job_id, TIER, Phase.TIER), (job_id, 2, Phase.TIER), (job_id, TIER, Phase.FALLBACK)]
    )
    assert (other_job, TIER, Phase.TIER) in ledger.waiting_tiers(s, idle_s=1)


def test_an_unsent_item_is_found_by_the_next_sweep(db_session: Session) -> None:
    s = db_session
    job_id, ids = items(s, 3)
    leased(s, ids[2], "running", expires_in=300)

    ledger.mark_unsent(s, [])  # nothing to mark
    assert ledger.strays(s, idle_s=3600) == []
    ledger.mark_unsent(s, ids)

    # the waiting ones are due at once; a leased one is its worker's, whatever it was told
    assert ledger.strays(s, idle_s=3600) == [Stray(job_id, TIER, Phase.TIER, ids[:2])]
    assert ledger.try_sweep_lock(s)  # one sweeper: always ours on SQLite, free here on Postgres


# -- orphan calls ---------------------------------------------------------------------
def call(job_id: int, pk: int, step: int, **values: Any) -> dict[str, Any]:
    """An answered call of the small tier; ``values`` override any column."""
    row: dict[str, Any] = {
        "job_id": job_id, "item_id": pk, "step": step, "tier_index": TIER, "tier": "small",
        "role": "primary", "provider": "anthropic", "model": "m", "outcome": Outcome.OK,
        "decision": Verdict.ACCEPT, "label": "spam", "confidence": 0.9, "input_tokens": 50,
        "output_tokens": 5, "cost_nanos": 1_000, "latency_ms": 20, "request_id": None,
    }  # fmt: skip
    return attempt_row(**(row | values))


def accept(pk: int) -> Settled:
    return Settled(pk, Verdict.ACCEPT, TIER, "small", 2, 1, 1_000, 20, False, 5_000, "spam", 0.9)


def test_a_settle_after_the_lease_was_lost_keeps_the_calls_apart_and_bills_them(
    db_session: Session,
) -> None:
    s = db_session
    job_id, (mine, lost) = items(s, 2)
    claimed = ledger.claim(s, job_id, TIER, [mine, lost], phase="tier", token="ours", lease_s=60)
    assert sorted(c.pk for c in claimed) == [mine, lost]
    set_item(s, lost, lease_token="theirs")  # the lease ran out and another worker took it
    attempts = [
        call(job_id, mine, 0),
        call(job_id, lost, 0, request_id="req_1"),
        call(job_id, lost, 1, role="shadow", cost_nanos=300, request_id="req_2"),
        call(job_id, lost, 2, role="rules", cost_nanos=0, outcome=Outcome.RULE_MATCH),
    ]

    kept = ledger.settle(s, "ours", attempts, [accept(mine), accept(lost)])

    assert [k.pk for k in kept] == [mine]
    rows = s.execute(
        select(ATTEMPTS.c.item_id, ATTEMPTS.c.step, ATTEMPTS.c.role, ATTEMPTS.c.decision)
        .where(ATTEMPTS.c.job_id == job_id)
        .order_by(ATTEMPTS.c.item_id, ATTEMPTS.c.step)
    ).all()
    assert [tuple(r) for r in rows] == [
        (mine, 0, "primary", "accept"),
        # made and billed, deciding nothing, numbered where the new holder never writes
        (lost, ORPHAN_STEP_BASE, "primary", None),
        (lost, ORPHAN_STEP_BASE + 1, "shadow", None),
        (lost, ORPHAN_STEP_BASE + 2, "rules", None),
    ]
    state = {
        r.id: (r.status, r.lease_token, r.cost_nanos, r.model_calls)
        for r in s.execute(select(ITEMS).where(ITEMS.c.id.in_([mine, lost])))
    }
    assert state[mine] == ("done", None, 1_000, 1)
    # the lost item's own outcome is its new holder's to write; the orphan's cost is its
    # (a shadow sample's never is, a rule is no model call)
    assert state[lost] == ("running", "theirs", 1_000, 1)

    # the same lost batch written again (a retried settle) records nothing twice; a new
    # call of the old worker is numbered after the orphans already there
    again = [call(job_id, lost, 0, request_id="req_1"), call(job_id, lost, 3, request_id="req_9")]
    assert ledger.settle(s, "ours", again, [accept(lost)]) == []
    steps = s.scalars(
        select(ATTEMPTS.c.step).where(ATTEMPTS.c.item_id == lost).order_by(ATTEMPTS.c.step)
    ).all()
    assert list(steps) == [ORPHAN_STEP_BASE + n for n in range(4)]
    cost = s.scalar(select(ITEMS.c.cost_nanos).where(ITEMS.c.id == lost))
    assert cost == 2_000


@pytest.mark.parametrize("tokens", [{}, {"x": "y"}])
def test_nothing_to_settle_writes_nothing(db_session: Session, tokens: dict[Any, str]) -> None:
    s = db_session
    assert ledger.settle(s, tokens, [], []) == []
    assert ledger.extend_leases(s, [], 600) == 0
    assert ledger.journal(s, [], {}) == set()
    assert s.scalar(select(ATTEMPTS.c.id).limit(1)) is None


# -- a dead worker's spool ------------------------------------------------------------
def test_recovered_calls_fill_or_drop_only_rows_still_in_flight(db_session: Session) -> None:
    s = db_session
    job_id, (a, b, c, d, e) = items(s, 5)
    s.execute(
        ATTEMPTS.insert(),
        [
            call(job_id, a, 0, outcome=Outcome.IN_FLIGHT, decision=None, cost_nanos=4_000),
            call(
                job_id, b, 0, outcome=Outcome.UNKNOWN, decision=None, cost_nanos=4_000
            ),  # claimed again since
            call(job_id, c, 0, request_id="q-c"),  # settled
            call(job_id, d, 0, outcome=Outcome.IN_FLIGHT, decision=None),
            call(job_id, e, 0, outcome=Outcome.UNKNOWN, decision=None),
        ],
    )
    back = [
        call(job_id, pk, 0, decision=None, input_tokens=300, cost_nanos=5_000, request_id=f"r{pk}")
        for pk in (a, b, c)
    ]  # fmt: skip
    assert ledger.recover_calls(s, back, [(d, 0), (e, 0)]) == (1, 1)
    got = {
        r.item_id: (r.outcome, r.decision, r.cost_nanos, r.request_id)
        for r in s.execute(select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id))
    }
    assert got == {
        a: ("ok", None, 5_000, f"r{a}"),  # the reply the ledger had not seen
        b: ("unknown", None, 4_000, None),  # its new owner decides it: left alone
        c: ("ok", "accept", 1_000, "q-c"),  # settled already
        e: ("unknown", None, 1_000, None),
    }  # d's call never left: gone

"""Free tiers take their items with a row lock instead of a lease (models.ledger.take):
a concurrent copy of the message skips them, a rolled-back transaction leaves them
waiting, and settle with ``taken`` records outcomes without a lease check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from common.lifecycle import Verdict
from migrations.runner import upgrade
from models import ledger, repo
from models.db import make_engine, make_sessionmaker
from models.ledger import Settled
from models.repo import ITEMS, NewItem


def setup_job(engine: Engine, n: int, name: str = "free") -> tuple[int, list[int]]:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        job_id, _ = repo.open_job(s, name, {"name": "p"})
        sub = repo.start_submission(s, job_id, "x.jsonl")
        added = repo.add_items(s, job_id, sub, [NewItem(i, f"k{i}", f"t{i}", {}) for i in range(n)])
        return job_id, added.added


def settled(pk: int) -> Settled:
    return Settled(pk, Verdict.ACCEPT, 0, "rules", 1, 0, 0, 0, False, 100, "billing", 1.0, "rule 0")


def statuses(engine: Engine, ids: list[int]) -> dict[int, tuple[str, str | None]]:
    with engine.connect() as c:
        rows = c.execute(
            select(ITEMS.c.id, ITEMS.c.status, ITEMS.c.lease_token).where(ITEMS.c.id.in_(ids))
        )
        return {r.id: (r.status, r.lease_token) for r in rows}


def test_take_then_settle_in_one_transaction(engine: Engine) -> None:
    job_id, ids = setup_job(engine, 3)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        taken = ledger.take(s, job_id, 0, ids, token="t1")
        assert sorted(c.pk for c in taken) == ids
        assert [c.text for c in sorted(taken, key=lambda c: c.pk)] == ["t0", "t1", "t2"]
        kept = ledger.settle(s, "t1", [], [settled(pk) for pk in ids], held={c.pk for c in taken})
        assert sorted(k.pk for k in kept) == ids
    assert statuses(engine, ids) == dict.fromkeys(ids, ("done", None))
    with sessions.begin() as s:  # a second copy of the message finds nothing to do
        assert ledger.take(s, job_id, 0, ids, token="t2") == []


def test_settle_keeps_only_what_this_transaction_took(engine: Engine) -> None:
    job_id, ids = setup_job(engine, 3)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        taken = ledger.take(s, job_id, 0, ids[:2], token="t1")
        kept = ledger.settle(s, "t1", [], [settled(pk) for pk in ids], held={c.pk for c in taken})
        assert sorted(k.pk for k in kept) == ids[:2]
    assert statuses(engine, ids)[ids[2]] == ("pending", None)


def test_a_rolled_back_take_leaves_the_items_waiting(engine: Engine) -> None:
    job_id, ids = setup_job(engine, 2)
    sessions = make_sessionmaker(engine)
    with pytest.raises(RuntimeError), sessions.begin() as s:
        assert len(ledger.take(s, job_id, 0, ids, token="t1")) == 2
        raise RuntimeError("worker died")
    assert statuses(engine, ids) == dict.fromkeys(ids, ("pending", None))


@pytest.mark.postgres
def test_a_concurrent_copy_skips_locked_items_on_postgres(pg_url: str) -> None:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        job_id, ids = setup_job(engine, 4)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as a:
            first = ledger.take(a, job_id, 0, ids[:3], token="a")
            assert [c.pk for c in first] == ids[:3]
            # no lease was written: the lock alone keeps the other copy out
            with sessions.begin() as b:
                second = ledger.take(b, job_id, 0, ids, token="b")
                assert [c.pk for c in second] == [ids[3]]
            ledger.settle(a, "a", [], [settled(pk) for pk in ids[:3]], held=set(ids[:3]))
        assert statuses(engine, ids) == {
            **dict.fromkeys(ids[:3], ("done", None)),
            ids[3]: ("pending", None),
        }
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_claim_and_take_check_job_tier_and_status_themselves_on_postgres(pg_url: str) -> None:
    """The Postgres claim locks by primary key alone and filters the rest in Python:
    ids of another job, another tier, or a finished or leased item are not taken."""
    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        job_id, ids = setup_job(engine, 5)
        other_job, other_ids = setup_job(engine, 1, "other")
        assert other_job != job_id
        sessions = make_sessionmaker(engine)
        with sessions.begin() as s:
            s.execute(ITEMS.update().where(ITEMS.c.id == ids[1]).values(tier_index=1))
            s.execute(ITEMS.update().where(ITEMS.c.id == ids[2]).values(status="done"))
        with sessions.begin() as s:  # ids[3] leased by someone else, lease still running
            assert [c.pk for c in ledger.claim(
                s, job_id, 0, [ids[3]], phase="tier", token="x", lease_s=600
            )] == [ids[3]]  # fmt: skip
        asked = [*ids, *other_ids]
        with sessions.begin() as s:
            got = ledger.claim(s, job_id, 0, asked, phase="tier", token="t", lease_s=600)
            assert [c.pk for c in got] == [ids[0], ids[4]]
        with sessions.begin() as s:
            assert [c.pk for c in ledger.take(s, other_job, 0, asked, token="u")] == other_ids
            # the rows of the first job are still there for it, untouched by that take
            assert ledger.take(s, job_id, 0, [ids[0], ids[4]], token="u") == []  # leased to "t"
        assert statuses(engine, [ids[0], ids[4]]) == dict.fromkeys(
            [ids[0], ids[4]], ("running", "t")
        )
        # once the other worker's lease has run out, its item can be claimed again
        with sessions.begin() as s:
            s.execute(
                ITEMS.update()
                .where(ITEMS.c.id == ids[3])
                .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
            )
        with sessions.begin() as s:
            got = ledger.claim(s, job_id, 0, asked, phase="tier", token="v", lease_s=600)
            assert [c.pk for c in got] == [ids[3]]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pgbulk_inserts_skip_conflicts_and_updates_add_counters(pg_url: str) -> None:
    from models import pgbulk
    from models.repo import ATTEMPTS

    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        job_id, ids = setup_job(engine, 2)
        sessions = make_sessionmaker(engine)

        def attempt(pk: int, step: int, label: str | None) -> dict[str, object]:
            return {"job_id": job_id, "item_id": pk, "step": step, "tier_index": 0,
                    "tier": "rules", "role": "rules", "provider": "rules", "model": "rules",
                    "outcome": "rule_match", "decision": "accept", "label": label,
                    "cost_nanos": 5, "hedged": False, "input_tokens": 0, "output_tokens": 0,
                    "cache_write_tokens": 0, "cache_read_tokens": 0, "is_batch": False,
                    "latency_ms": 0}  # fmt: skip

        with sessions.begin() as s:
            pgbulk.insert_rows(
                s, ATTEMPTS, [attempt(ids[0], 1, "a"), attempt(ids[1], 1, None)],
                conflict=("item_id", "step"),
            )  # fmt: skip
            # the same (item, step) again is skipped, a new step is written
            pgbulk.insert_rows(
                s, ATTEMPTS, [attempt(ids[0], 1, "changed"), attempt(ids[0], 2, "b")],
                conflict=("item_id", "step"),
            )  # fmt: skip
            rows = [
                {"id": ids[0], "label": "x", "steps": 2},
                {"id": ids[1], "label": None, "steps": 3},
            ]
            pgbulk.update_rows(s, ITEMS, "id", rows, added=("steps",))
            pgbulk.update_rows(s, ITEMS, "id", [{"id": ids[0], "steps": 10}], added=("steps",))
            with pytest.raises(ValueError, match="same columns"):
                pgbulk.update_rows(s, ITEMS, "id", [{"id": ids[0]}, {"id": ids[1], "steps": 1}])
        with engine.connect() as c:
            got = c.execute(
                select(ATTEMPTS.c.item_id, ATTEMPTS.c.step, ATTEMPTS.c.label).order_by(
                    ATTEMPTS.c.item_id, ATTEMPTS.c.step
                )
            ).all()
            assert [tuple(r) for r in got] == [
                (ids[0], 1, "a"),
                (ids[0], 2, "b"),
                (ids[1], 1, None),
            ]
            items = c.execute(
                select(ITEMS.c.id, ITEMS.c.label, ITEMS.c.steps).order_by(ITEMS.c.id)
            ).all()
            assert [tuple(r) for r in items] == [(ids[0], "x", 12), (ids[1], None, 3)]
    finally:
        engine.dispose()

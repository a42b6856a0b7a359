"""Repeats of a text on the ledger: held at intake, handed the source's decision at
its settle (or handed on when it fails), rescued by the sweeper; SQLite and Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models import ledger, repo, reuse
from models.ledger import Settled
from models.repo import ATTEMPTS, ITEMS, NewItem

VERSION = reuse.pipeline_version({"name": "p", "labels": ["a", "b"]})
HASH = reuse.Hasher(VERSION)


def job(session: Session, name: str, texts: list[str]) -> tuple[int, list[int]]:
    job_id, _ = repo.open_job(session, name, {"name": "p", "labels": ["a", "b"]})
    sub = repo.start_submission(session, job_id, "f.jsonl")
    batch = [NewItem(n + 1, f"k{n}", t, {}) for n, t in enumerate(texts)]
    HASH.stamp(batch)
    added = repo.add_items(session, job_id, sub, batch).added
    return job_id, added


def settle(session: Session, job_id: int, pk: int, decision: str, label: str | None) -> None:
    token = ledger.new_token()
    ledger.claim(session, job_id, 0, [pk], phase="tier", token=token, lease_s=60)
    row = {
        "job_id": job_id, "item_id": pk, "step": 0, "tier_index": 0, "tier": "small",
        "role": "primary", "provider": "anthropic", "model": "m", "outcome": "ok",
        "decision": decision, "label": label, "confidence": 0.9, "hedged": False,
        "input_tokens": 10, "output_tokens": 5, "cache_write_tokens": 0,
        "cache_read_tokens": 0, "is_batch": False, "cost_nanos": 700, "latency_ms": 3,
        "http_status": 200, "error": None, "request_id": None,
    }  # fmt: skip
    done = Settled(pk, decision, 0, "small", 1, 1, 700, 3, False, 900, label, 0.9, "r")
    ledger.settle(session, token, [row], [done])


def items(session: Session, ids: list[int]) -> list[Any]:
    return list(
        session.execute(
            select(ITEMS.c.id, ITEMS.c.status, ITEMS.c.label, ITEMS.c.reuse_of, ITEMS.c.cost_nanos)
            .where(ITEMS.c.id.in_(ids))
            .order_by(ITEMS.c.id)
        )
    )


def test_repeats_wait_then_take_the_source_decision(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        # Given a job whose texts repeat (whitespace aside)
        job_id, ids = job(s, "j", ["spam now", "other", "spam   now ", "spam now"])
        # When intake holds the repeats
        held = reuse.hold_repeats(s, job_id, ids)
        assert held.waiting == {ids[2], ids[3]} and not held.taken
        # And the source settles
        settle(s, job_id, ids[0], "accept", "a")
        rows = items(s, ids)
    # Then its repeats are done with its label, at no cost, pointing at it
    assert [(r.status, r.label, r.reuse_of, r.cost_nanos) for r in rows] == [
        ("done", "a", None, 700),
        ("pending", None, None, 0),
        ("done", "a", ids[0], 0),
        ("done", "a", ids[0], 0),
    ]
    with Session(engine) as s:
        ledger = s.execute(
            select(ATTEMPTS.c.item_id, ATTEMPTS.c.role, ATTEMPTS.c.decision, ATTEMPTS.c.reuse_of)
            .where(ATTEMPTS.c.role == "reuse")
            .order_by(ATTEMPTS.c.item_id)
        ).all()
    assert [tuple(r) for r in ledger] == [
        (ids[2], "reuse", "accept", ids[0]),
        (ids[3], "reuse", "accept", ids[0]),
    ]


def test_a_failed_source_hands_on_to_its_first_repeat(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        job_id, ids = job(s, "j", ["x", "x", "x"])
        reuse.hold_repeats(s, job_id, ids)
        settle(s, job_id, ids[0], "fail", None)
        released = s.info.pop("cascade.reuse.released")
        rows = items(s, ids)
    assert released == [reuse.Released(job_id, 0, [ids[1]])]
    assert [(r.status, r.reuse_of) for r in rows] == [
        ("failed", None),
        ("pending", None),
        ("reuse_wait", ids[1]),
    ]


def test_a_decided_text_of_an_earlier_job_is_taken_at_once(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        first, (src,) = job(s, "old", ["same text"])
        settle(s, first, src, "accept", "b")
        later, ids = job(s, "new", ["same text", "new text"])
        none = reuse.hold_repeats(s, later, ids)  # reuse_days = 0: this job only
        assert not none.skip
        s.execute(ITEMS.delete().where(ITEMS.c.id.in_(ids)))
        later2, ids2 = job(s, "newer", ["same text", "new text"])
        held = reuse.hold_repeats(s, later2, ids2, reuse_days=1)
        rows = items(s, ids2)
    assert held.taken == {ids2[0]}
    assert [(r.status, r.label, r.reuse_of) for r in rows] == [
        ("done", "b", src),
        ("pending", None, None),
    ]


def test_rescue_settles_repeats_left_waiting(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        job_id, ids = job(s, "j", ["y", "y"])
        reuse.hold_repeats(s, job_id, ids)
        # a source settled by a path that did not hand its decision on
        s.execute(ITEMS.update().where(ITEMS.c.id == ids[0]).values(status="done", label="a"))
        reuse.rescue(s)
        rows = items(s, ids)
    assert [(r.status, r.label) for r in rows] == [("done", "a"), ("done", "a")]

"""The review queue's repository on SQLite and Postgres: waiting items, importing
verdicts (idempotent, the machine's answer kept), gold for tuning and training, and each
tier's accuracy against reviewers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from migrations.runner import upgrade
from models.db import make_engine
from models.repo import finish_job_if_done
from models.reviews import Verdict, counts, import_verdicts, tier_accuracy, waiting
from models.tables import Item, Job
from models.tables_review import ReviewVerdict
from models.tuning import training_examples, tuning_items
from tests.integration.conftest import add_attempt, add_item, new_job

WHEN = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@pytest.fixture
def job(db_url: str) -> Iterator[tuple[str, int]]:
    """Item a: small accepted "spam"; b: large unsure of "ham" (in review); c: a refusal
    sent to review with no answer; the job is running."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            job_id, sub_id = new_job(conn, "reviews")
            a = add_item(
                conn,
                job_id,
                sub_id,
                "a",
                line_no=1,
                text="buy now",
                meta={},
                status="done",
                label="spam",
                final_tier="small",
                tier_index=0,
            )
            b = add_item(
                conn,
                job_id,
                sub_id,
                "b",
                line_no=2,
                text="hello there",
                meta={},
                status="review",
                label="ham",
                confidence=0.4,
                final_tier="large",
                tier_index=1,
                reason="last tier's confidence 0.40 < review_below 0.60",
            )
            add_item(conn, job_id, sub_id, "c", line_no=3, text="refused text", meta={},
                     status="review", final_tier="small", tier_index=0,
                     error="refused: declined")  # fmt: skip
            for pk, step, index, tier, label, decision in (
                (a, 1, 0, "small", "spam", "accept"),
                (b, 1, 0, "small", "spam", "escalate"),
                (b, 2, 1, "large", "ham", "review"),
            ):
                add_attempt(conn, job_id, pk, step, tier_index=index, tier=tier, role="primary",
                            provider="anthropic", model="m", outcome="ok", decision=decision,
                            label=label, confidence=0.4)  # fmt: skip
        yield db_url, job_id
    finally:
        engine.dispose()


def test_review_round_trip_in_the_database(job: tuple[str, int]) -> None:
    url, job_id = job
    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            # Given two items waiting and one done: the job is done for the machine
            queue = list(waiting(session, job_id))
            assert [(w.item_id, w.label) for w in queue] == [("b", "ham"), ("c", None)]
            assert queue[1].why == "refused: declined"
            assert finish_job_if_done(session, job_id)
            assert counts(session, job_id) == (2, 0)
            # When a reviewer overrules b, confirms a, and names an unknown item
            got = import_verdicts(session, job_id, [
                Verdict("b", "spam", "ana", WHEN, "it is spam"),
                Verdict("a", "spam", "ana", WHEN),
                Verdict("zz", "ham", "ana", WHEN),
            ])  # fmt: skip
            assert (got.added, got.replaced, got.unknown) == (2, 0, ["zz"])
        with Session(engine) as session, session.begin():
            # Then b is done with the reviewer's label; the machine's answer is kept aside
            b = session.query(Item).filter_by(job_id=job_id, item_key="b").one()
            assert (b.status, b.label, b.final_tier) == ("done", "spam", "review")
            b_pk = b.id
            row = session.query(ReviewVerdict).filter_by(item_id=b_pk).one()
            assert (row.machine_label, row.machine_tier, row.note) == ("ham", "large", "it is spam")
            assert counts(session, job_id) == (1, 2)
            assert session.get(Job, job_id).status == "done"  # type: ignore[union-attr]
            # And importing again replaces, keeping the machine's first answer
            again = import_verdicts(session, job_id, [Verdict("b", "ham", "bo", WHEN)])
            assert (again.added, again.replaced) == (0, 1)
        with Session(engine) as session:
            row = session.query(ReviewVerdict).filter_by(item_id=b_pk).one()
            assert (row.label, row.reviewer, row.machine_label) == ("ham", "bo", "ham")
            # And verdicts are gold for tuning and training
            items = {i.pk: i for i in tuning_items(session, job_id)}
            assert items[b_pk].gold == "ham"
            assert items[b_pk].verdicts[-1].decision == "review"
            assert training_examples(session, job_id, source="gold") == [
                ("buy now", "spam"),
                ("hello there", "ham"),
            ]
            # And each tier's answers are scored against the reviewers
            acc = {(t.tier, t.judged, t.agreed) for t in tier_accuracy(session, job_id)}
            assert acc == {("small", 2, 1), ("large", 1, 1)}
    finally:
        engine.dispose()

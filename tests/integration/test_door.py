"""Rules decided at the door (`cascade submit`) leave exactly the rows a worker would.

Three jobs take the same chunk: the COPY path that writes items already decided, the
path for a chunk whose ids the job may have, which inserts them pending and decides them
in the same transaction, and no door at all, with the rules tier run the way a worker
runs it (``tasks.flow.process``). Items, attempts and the follow-up messages must agree.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

from common.settings import Settings
from migrations.runner import upgrade
from models import copyin, repo
from models.repo import ATTEMPTS, ITEMS, JOBS, SUBMISSIONS, NewItem
from models.tables import RejectedLine
from tasks import chunks as chunks_mod
from tasks import submit as submit_mod
from tasks.flow import process
from tasks.messages import Message
from tasks.runtime import Runtime
from workers.pipeline import RulesTier, load_pipeline

pytestmark = pytest.mark.postgres

REJECTED = RejectedLine.__table__
PIPELINE = Path(__file__).parents[2] / "examples" / "support_triage.toml"
TEXTS = [
    "I forgot my password, help",  # rule 0
    "Where is my order? It is late",  # rule 1
    "My app crashes on launch every time",  # a later rule
    "The new dashboard colours are ugly",  # no rule: escalates
    "Tab\there, new\nline and back\\slash, where is my parcel",  # escaping, a rule
    # the door formats one item per kind (rule, baseline) and copies it: the same rule
    # with a longer text (another baseline), and one of the same kind as line 2
    "I forgot my password again and again, and the reset link never comes",
    "Where is my order? It is LATE",
]


@pytest.fixture
def rt(pg_url: str) -> Iterator[Runtime]:
    upgrade(pg_url)
    runtime = Runtime(Settings(database_url=pg_url))
    yield runtime
    runtime.close()


def new_job(rt: Runtime, name: str, store_text: bool = True) -> tuple[int, int]:
    pipe = load_pipeline(PIPELINE).model_copy(update={"store_text": store_text})
    with rt.sessions.begin() as s:
        job_id, _ = repo.open_job(s, name, pipe.model_dump(mode="json"))
        return job_id, repo.start_submission(s, job_id, "file.jsonl")


def chunk() -> list[NewItem]:
    return [NewItem(n + 1, f"k{n}", t, {"n": n}) for n, t in enumerate(TEXTS)]


def door_chunk(rt: Runtime, name: str, *, store_text: bool = True) -> tuple[int, list[Message]]:
    job_id, sub = new_job(rt, name, store_text)
    engine = rt.engine_for(job_id)
    door = chunks_mod.door_tier(rt, engine)
    assert isinstance(door, RulesTier)
    batch = chunks_mod.Chunk(chunk(), [])
    chunks_mod.prepare_chunk(rt, engine, door, job_id, sub, batch)
    if batch.prepared is not None:  # written the way its size says
        assert (batch.prepared.rows is not None) == (len(TEXTS) <= copyin.SMALL_ROWS)
    with rt.sessions.begin() as s:
        added, decided = chunks_mod.write_chunk(rt, s, door, job_id, sub, batch)
    assert decided is not None and len(added.added) == len(TEXTS)
    assert decided.ids == added.added
    return job_id, chunks_mod.door_messages(rt, job_id, door.name, decided)


Rows = list[dict[str, Any]]


def rows(rt: Runtime, job_id: int) -> tuple[Rows, Rows]:
    # reuse_of is an item id (the repeat's source): it differs from job to job like ids
    skip = {"id", "job_id", "submission_id", "created_at", "updated_at", "finished_at", "reuse_of"}
    item_cols = [c for c in ITEMS.c if c.name not in skip]
    own = {"id", "job_id", "item_id", "created_at", "reuse_of"}
    attempt_cols = [c for c in ATTEMPTS.c if c.name not in own]
    with rt.sessions() as s:
        items = s.execute(
            select(*item_cols, ITEMS.c.finished_at.is_not(None).label("finished"))
            .where(ITEMS.c.job_id == job_id)
            .order_by(ITEMS.c.line_no)
        ).all()
        attempts = s.execute(
            select(ITEMS.c.line_no.label("line"), *attempt_cols)
            .join(ITEMS, ITEMS.c.id == ATTEMPTS.c.item_id)
            .where(ATTEMPTS.c.job_id == job_id)
            .order_by(ITEMS.c.line_no, ATTEMPTS.c.step)
        ).all()
    return [dict(r._mapping) for r in items], [dict(r._mapping) for r in attempts]


def shape(messages: list[Message]) -> list[tuple[str, int, int]]:
    return [(m.phase, m.tier_index, len(m.ids)) for m in messages]


@pytest.mark.parametrize("store_text", [True, False])
@pytest.mark.parametrize("small_rows", [0, len(TEXTS)], ids=["copy", "insert"])
def test_the_door_leaves_the_rows_a_worker_leaves(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, store_text: bool, small_rows: int
) -> None:
    # Given the same chunk through the COPY door (or, small, its one INSERT), the
    # ON CONFLICT door, and a worker
    monkeypatch.setattr(copyin, "SMALL_ROWS", small_rows)
    fast_job, fast_out = door_chunk(rt, "fast", store_text=store_text)
    with monkeypatch.context() as m:
        m.setattr(copyin, "supported", lambda session: False)
        slow_job, slow_out = door_chunk(rt, "slow", store_text=store_text)
    worker_job, sub = new_job(rt, "worker", store_text)
    with rt.sessions.begin() as s:
        pending = repo.add_items(s, worker_job, sub, chunk()).added
    worker_out = process(rt, Message("tier", worker_job, 0, pending))

    # Then the items, their attempts and the messages sent on are the same
    fast, slow, worker = rows(rt, fast_job), rows(rt, slow_job), rows(rt, worker_job)
    assert fast == worker
    assert slow == worker
    assert shape(fast_out) == shape(slow_out) == shape(worker_out) == [("tier", 1, 1)]
    items, attempts = fast
    assert [(r["status"], r["finished"], r["tier_index"]) for r in items] == [
        ("done", True, 0),
        ("done", True, 0),
        ("done", True, 0),
        ("pending", False, 1),
        ("done", True, 0),
        ("done", True, 0),
        ("done", True, 0),
    ]
    assert [(a["line"], a["role"], a["decision"]) for a in attempts] == [
        (n, "rules", "escalate" if n == 4 else "accept") for n in range(1, 8)
    ]
    assert items[5]["baseline_nanos"] > items[0]["baseline_nanos"]
    assert items[6]["baseline_nanos"] == items[1]["baseline_nanos"]
    assert items[4]["text"] == (TEXTS[4] if store_text else None)
    assert items[3]["text"] == TEXTS[3]  # still to be classified: kept either way
    assert items[0]["meta"] == {"n": 0} and items[0]["baseline_nanos"] > 0


def test_off_switch_leaves_items_pending_for_the_rules_queue(rt: Runtime) -> None:
    rt.settings = Settings(database_url=rt.settings.database_url, rules_at_submit=False)
    job_id, _ = new_job(rt, "off")
    assert chunks_mod.door_tier(rt, rt.engine_for(job_id)) is None


def test_one_chunk_and_many_chunks_leave_the_same_job(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a file with a repeated id (in a later chunk) and a bad line
    lines = [json.dumps({"id": f"k{n}", "text": TEXTS[n % len(TEXTS)]}) for n in range(30)]
    lines[20] = json.dumps({"id": "k3", "text": "again"})
    lines[25] = "{not json"
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    pipe = load_pipeline(PIPELINE)
    # When it goes in as one chunk (one transaction), and as chunks of 7 (writer thread)
    one = submit_mod.submit(rt, path, pipe, "one")
    monkeypatch.setattr(submit_mod, "CHUNK_LINES", 7)
    progress: list[dict[str, int]] = []
    many = submit_mod.submit(rt, path, pipe, "many", on_progress=progress.append)
    # Then the counts, the rows and the job's state are the same
    assert (
        one.counts
        == many.counts
        == {
            "lines_read": 30,
            "items_added": 28,
            "items_existing": 0,
            "lines_rejected": 2,
        }
    )
    assert rows(rt, one.job_id) == rows(rt, many.job_id)
    # progress came chunk by chunk, lines read included, as the chunks committed
    read = [p["lines_read"] for p in progress]
    assert len(progress) == 5 and read == sorted(read) and read[0] >= 7
    assert progress[-1]["items_added"] == 28
    # And the same file again, in chunks (each refused by the unique index, then
    # written through ON CONFLICT) adds nothing: every line with an id the job has is
    # existing, the repeat of k3 too (its row is from the first submission)
    before = rows(rt, many.job_id)
    again = submit_mod.submit(rt, path, pipe, "many")
    assert (again.counts["items_added"], again.counts["items_existing"]) == (0, 29)
    assert rows(rt, many.job_id) == before
    # And one chunk with a new line into the job that has the rest: its COPY collides,
    # and the whole transaction (job, submission, chunk) is redone through ON CONFLICT
    monkeypatch.setattr(submit_mod, "CHUNK_LINES", 3_334)
    path.write_text("\n".join([*lines, json.dumps({"id": "k-new", "text": TEXTS[0]})]) + "\n")
    more = submit_mod.submit(rt, path, pipe, "one")
    assert (more.job_id, more.created, more.counts["items_added"]) == (one.job_id, False, 1)
    assert more.counts["items_added"] + more.counts["items_existing"] == 29
    with rt.sessions() as s:
        new = s.execute(
            select(ITEMS.c.status, ITEMS.c.final_tier).where(ITEMS.c.item_key == "k-new")
        ).one()
        subs = s.execute(
            select(SUBMISSIONS.c.items_added).where(SUBMISSIONS.c.job_id == one.job_id)
        )
        assert [r[0] for r in subs] == [28, 1]  # nothing left of the rolled-back attempt
    assert tuple(new) == ("done", "rules")  # decided at the door all the same
    with rt.sessions() as s:
        for job_id in (one.job_id, many.job_id):
            status = s.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar_one()
            assert status == "running"  # the escalated items wait for the model tiers
            reasons = s.scalars(
                select(REJECTED.c.reason)
                .where(REJECTED.c.job_id == job_id)
                .order_by(REJECTED.c.line_no)
            ).all()
            assert [r.split(":")[0] for r in reasons] == ["duplicate_id", "not_json"]


def test_one_item_into_a_job_that_exists_takes_the_short_path(rt: Runtime, tmp_path: Path) -> None:
    # Given a job that exists
    pipe = load_pipeline(PIPELINE)
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"id": "a", "text": TEXTS[0]}) + "\n")
    first = submit_mod.submit(rt, path, pipe, "short")
    trace = tempfile.TemporaryFile()  # noqa: SIM115 (closed at the end)

    def traced(dbapi_conn: Any, *args: Any) -> None:  # libpq's protocol trace
        dbapi_conn.pgconn.trace(trace.fileno())
        dbapi_conn.pgconn.set_trace_flags(1)  # no timestamps

    def untraced(dbapi_conn: Any, *args: Any) -> None:
        dbapi_conn.pgconn.untrace()  # flushes it

    # When one more item is submitted to it, its connection's messages traced
    path.write_text(json.dumps({"id": "b", "text": TEXTS[1]}) + "\n")
    event.listen(rt.db, "checkout", traced)
    event.listen(rt.db, "checkin", untraced)
    try:
        again = submit_mod.submit(rt, path, pipe, "short")
    finally:
        event.remove(rt.db, "checkout", traced)
        event.remove(rt.db, "checkin", untraced)
    trace.seek(0)
    sent = trace.read().decode()
    trace.close()

    # Then it takes three round trips (the pool's connection came back moments ago: no
    # ping): BEGIN with the statement that opens the submission and draws the item's id,
    # one statement for the item, its attempt and the close, and COMMIT
    assert sent.count("\tReadyForQuery\t") == 3
    opening, rows_and_close, commit = sent.split("\tReadyForQuery\t")[:3]
    assert '"BEGIN"' in opening and "nextval('items_id_seq')" in opening
    assert "new_attempts AS (INSERT" in rows_and_close and "UPDATE jobs" in rows_and_close
    assert '"COMMIT"' in commit
    with rt.db.connect() as conn:  # back in the pool as it left it: not in autocommit
        assert conn.connection.driver_connection.autocommit is False
    assert again.job_id == first.job_id and again.counts["items_added"] == 1
    items, attempts = rows(rt, again.job_id)
    assert [(r["item_key"], r["status"]) for r in items] == [("a", "done"), ("b", "done")]
    assert [(a["line"], a["decision"]) for a in attempts] == [(1, "accept"), (1, "accept")]
    with rt.sessions() as s:
        status = s.execute(select(JOBS.c.status).where(JOBS.c.id == again.job_id)).scalar_one()
        counts = s.execute(
            select(SUBMISSIONS.c.items_added, SUBMISSIONS.c.finished_at.is_not(None))
            .where(SUBMISSIONS.c.job_id == again.job_id)
            .order_by(SUBMISSIONS.c.id)
        ).all()
    assert status == "done"
    assert [tuple(c) for c in counts] == [(1, True), (1, True)]


def test_counts_over_many_chunks_are_exact(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a file of many chunks: the reading thread counts lines as the writer
    # thread counts what each chunk added
    path = tmp_path / "many.jsonl"
    lines = [json.dumps({"id": f"m{n}", "text": TEXTS[n % len(TEXTS)]}) for n in range(3_000)]
    for n in range(0, 3_000, 5):  # a bad line in every chunk: each records one, on I/O
        lines[n] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(submit_mod, "CHUNK_LINES", 7)
    result = submit_mod.submit(rt, path, load_pipeline(PIPELINE), "counted")
    # Then no count is lost
    assert result.counts == {
        "lines_read": 3_000,
        "items_added": 2_400,
        "items_existing": 0,
        "lines_rejected": 600,
    }


def test_a_small_file_with_a_repeat_and_a_bad_line_closes_with_its_counts(
    rt: Runtime, tmp_path: Path
) -> None:
    # Given a job that exists, and three lines: an item, its id again, a bad line
    pipe = load_pipeline(PIPELINE)
    path = tmp_path / "small.jsonl"
    path.write_text(json.dumps({"id": "first", "text": TEXTS[0]}) + "\n")
    job_id = submit_mod.submit(rt, path, pipe, "small").job_id
    lines = [{"id": "x", "text": TEXTS[1]}, {"id": "x", "text": TEXTS[2]}]
    path.write_text("\n".join([*map(json.dumps, lines), "{bad"]) + "\n")
    # When they go in by the short path (one statement for rows and close)
    again = submit_mod.submit(rt, path, pipe, "small")
    # Then the counts, the submission's row and the rejected lines agree
    expected = {"lines_read": 3, "items_added": 1, "items_existing": 0, "lines_rejected": 2}
    assert again.counts == expected
    with rt.sessions() as s:
        sub = s.execute(
            select(
                SUBMISSIONS.c.lines_read,
                SUBMISSIONS.c.items_added,
                SUBMISSIONS.c.items_existing,
                SUBMISSIONS.c.lines_rejected,
            )
            .where(SUBMISSIONS.c.job_id == job_id)
            .order_by(SUBMISSIONS.c.id.desc())
            .limit(1)
        ).one()
        reasons = s.scalars(
            select(REJECTED.c.reason)
            .where(REJECTED.c.job_id == job_id)
            .order_by(REJECTED.c.line_no)
        ).all()
        status = s.execute(select(JOBS.c.status).where(JOBS.c.id == job_id)).scalar_one()
    assert tuple(sub) == (3, 1, 0, 2)
    assert [r.split(":")[0] for r in reasons] == ["duplicate_id", "not_json"]
    assert status == "done"  # both items settled at the door


def _planned(rt: Runtime) -> set[str]:
    with rt.sessions.begin() as s:
        found = s.execute(
            text("SELECT tablename FROM pg_stats WHERE attname = 'item_id' OR attname = 'job_id'")
        )
        return {t for (t,) in found if t in ("attempts", "items")}


def test_a_first_big_submit_gives_the_ledger_tables_statistics(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a fresh database (no statistics) and a file of several chunks
    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"id": f"b{n}", "text": TEXTS[n % 5]}) for n in range(40)]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(submit_mod, "CHUNK_LINES", 7)
    assert _planned(rt) == set()
    submit_mod.submit(rt, path, load_pipeline(PIPELINE), "analyzed")
    # Then the claims' lookups are planned on statistics from the start
    assert _planned(rt) == {"attempts", "items"}

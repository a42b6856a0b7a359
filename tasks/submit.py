"""Submitting a file: stream it into the database, record every bad line, ring the doorbell.

Memory stays flat: lines are read, inserted and enqueued a chunk at a time.
"""

from __future__ import annotations

import itertools
import json
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from common.lifecycle import Phase, Verdict
from common.logs import get_logger
from models import copyin, pgbulk, repo, reuse
from models.repo import NewItem
from tasks.chunks import (
    Chunk,
    Decided,
    Outgoing,
    Pipelined,
    Rejected,
    door_messages,
    door_tier,
    prepare_chunk,
    write_chunk,
)
from tasks.messages import Message, chunks
from tasks.publish import publish
from tasks.runtime import Runtime, tier_batch_size
from workers.engine import Engine
from workers.intake import InputItem, RejectedLine, read_items
from workers.pipeline import ClaudeTier, ModelRef, Pipeline
from workers.pricing import PriceTable

if TYPE_CHECKING:
    from models.db import DbSession

log = get_logger("cascade.submit")
T = TypeVar("T")
CHUNK_LINES = 3_334


class SubmitError(ValueError):
    """The submission cannot start; nothing was written."""


@dataclass(slots=True)
class SubmitResult:
    job_id: int
    job_name: str
    created: bool
    counts: dict[str, int] = field(default_factory=dict)


def check_models_priced(pipeline: Pipeline, prices: PriceTable) -> list[str]:
    """Every model a tier may call, by where it is named in the file, must have a price."""
    named: list[tuple[str, ModelRef]] = []
    for i, tier in enumerate(pipeline.tiers):
        if isinstance(tier, ClaudeTier):
            named.append((f"tiers[{i}].model", tier.primary))
            named += [(f"tiers[{i}].fallbacks[{j}]", f) for j, f in enumerate(tier.fallbacks)]
            checks = tier.accept
            if checks.consistency:
                named += [
                    (f"tiers[{i}].accept.consistency.models[{j}]", m)
                    for j, m in enumerate(checks.consistency.models)
                ]
            if checks.verifier:
                named.append((f"tiers[{i}].accept.verifier.model", checks.verifier.ref))
    return [
        f"{where}: no price for {link.model!r}; add it to a prices file (CASCADE_PRICES_FILE)"
        for where, link in named
        if not prices.knows(link.model)
    ]


@dataclass(frozen=True, slots=True)
class _Vetted:
    pipeline: Pipeline
    prices: PriceTable
    problems: list[str]
    stored: dict[str, Any]  # the pipeline as the job keeps it
    text: str  # the same as JSON


_VETTED: dict[tuple[int, int], _Vetted] = {}  # holds its pipelines, so ids stay theirs


def _vet(pipeline: Pipeline, prices: PriceTable) -> _Vetted:
    """The price check and the stored form of a pipeline, once per (frozen) pipeline
    object: a process submitting one item at a time pays for them once."""
    key = (id(pipeline), id(prices))
    found = _VETTED.get(key)
    if found is None or found.pipeline is not pipeline or found.prices is not prices:
        if len(_VETTED) >= 16:
            _VETTED.clear()
        stored = pipeline.model_dump(mode="json")
        found = _VETTED[key] = _Vetted(
            pipeline, prices, check_models_priced(pipeline, prices), stored, json.dumps(stored)
        )
    return found


class _Submission:
    """One file going into one job: what each chunk does, inside and after its transaction."""

    def __init__(
        self,
        rt: Runtime,
        engine: Engine,
        job_id: int,
        sub_id: int,
        source: str,
        on_progress: Callable[[dict[str, int]], None] | None,
        counts: dict[str, int],
    ) -> None:
        self.rt, self.engine, self.job_id, self.sub_id = rt, engine, job_id, sub_id
        self.source, self.on_progress = source, on_progress
        self.door = door_tier(rt, engine)
        self.first_batch = tier_batch_size(rt.settings, engine.pipeline, 0, Phase.TIER)
        # repeats of a text take its decision (models.reuse): every item gets its hash
        pipeline = engine.pipeline
        self.hasher = (
            reuse.Hasher(reuse.pipeline_version(pipeline.model_dump(mode="json")))
            if pipeline.reuse
            else None
        )
        self.counts = counts  # lines_read is counted by the reader (_chunks) as it goes
        self.outbox: queue.SimpleQueue[list[Message]] = queue.SimpleQueue()
        self.analyzed = False  # the ledger tables' planner statistics (models.pgbulk)

    def prepare(
        self,
        chunk: Chunk,
        session: DbSession | None = None,
        drawn: tuple[list[int], datetime] | None = None,
    ) -> None:
        if self.hasher is not None:
            self.hasher.stamp(chunk.batch)
        prepare_chunk(
            self.rt, self.engine, self.door, self.job_id, self.sub_id, chunk, session, drawn
        )

    def record(self, session: DbSession, chunk: Chunk, *, closing: bool = False) -> Outgoing:
        """Write the chunk in ``session``; returns what to send once it commits.

        ``closing``: the submission's only chunk, which closes it too. Small and
        prepared, its rows all go in or raise (no savepoint), so the counts are known
        before the write and the closing statement goes in the same round trip.
        """
        prepared = chunk.prepared
        if closing and not chunk.savepoint and prepared is not None and prepared.rows is not None:
            rejected = self._rejected(session, chunk.rejected, prepared.duplicates)
            after = dict(self.counts)  # the file is read: no other thread counts now
            after["items_added"] += len(prepared.ids)
            after["lines_rejected"] += rejected
            then = repo.close_statement(
                self.job_id, self.sub_id, after, adding_unfinished=prepared.unfinished
            )
            added, decided = write_chunk(
                self.rt, session, self.door, self.job_id, self.sub_id, chunk, then
            )
            self._count(len(added.added), 0, rejected)  # not before: a Collision redoes it
            return self._hold(session, added.added, decided)
        added, decided = write_chunk(self.rt, session, self.door, self.job_id, self.sub_id, chunk)
        rejected = self._rejected(session, chunk.rejected, added.duplicates)
        self._count(len(added.added), added.existing, rejected)
        out = self._hold(session, added.added, decided)
        if closing:
            self.finish(session)
        return out

    def _hold(self, session: DbSession, ids: list[int], decided: Decided | None) -> Outgoing:
        """Repeats of a text already decided or in flight: decided now, or waiting on it;
        either way they are not enqueued (what goes out is the rest)."""
        if self.hasher is None or not ids:
            return ids, decided
        candidates = ids  # the items still to classify: at the door, the escalated ones
        if decided is not None:
            names = decided.names
            candidates = [
                pk
                for pk, kind in zip(decided.ids, decided.kinds, strict=True)
                if names[kind] != Verdict.ACCEPT
            ]
            if not candidates:  # all decided at the door: no round trip
                return ids, decided
        pipeline = self.engine.pipeline
        held = reuse.hold_repeats(
            session,
            self.job_id,
            candidates,
            reuse_days=pipeline.reuse_days,
            drop_text=not pipeline.store_text,
        )
        skip = held.skip
        if not skip:
            return ids, decided
        if held.taken:
            repo.finish_job_if_done(session, self.job_id)  # every item may be decided now
        if decided is not None:
            keep = [n for n, pk in enumerate(decided.ids) if pk not in skip]
            decided = Decided(
                [decided.ids[n] for n in keep], [decided.kinds[n] for n in keep], decided.names
            )
        return [pk for pk in ids if pk not in skip], decided

    def _rejected(
        self, session: DbSession, rejected: Rejected, duplicates: list[tuple[int, str, int]]
    ) -> int:
        """Record the chunk's bad lines and repeated ids; how many (the chunk is left as
        it is: a redone transaction records them again)."""
        rows = rejected + [
            (line_no, f"duplicate_id: {key!r} first seen on line {first_line}", key)
            for line_no, key, first_line in duplicates
        ]
        repo.add_rejected(session, self.job_id, self.sub_id, self.source, rows)
        return len(rows)

    def _count(self, added: int, existing: int, rejected: int) -> None:
        # only these keys: lines_read is the reading thread's, counted as it reads
        self.counts["items_added"] += added
        self.counts["items_existing"] += existing
        self.counts["lines_rejected"] += rejected

    def flush(self, chunk: Chunk) -> None:
        """A chunk in its own transaction (the writer thread's work).

        The COPY goes without a savepoint: if the job has one of the chunk's ids (a
        re-submission; the first row tells), the transaction is rolled back and the
        chunk written again through ``INSERT … ON CONFLICT``.
        """
        chunk.savepoint = False
        try:
            with self.rt.sessions.begin() as session:
                out = self.record(session, chunk)
        except copyin.Collision:
            chunk.prepared = chunk.decided = None
            with self.rt.sessions.begin() as session:
                out = self.record(session, chunk)
        if not self.analyzed:  # before the first claims plan their lookups
            self.analyzed = True
            with self.rt.sessions.begin() as session:
                pgbulk.analyze_if_unseen(session)
        # published by the reading thread: its parsing is lighter work, with no I/O to wait on
        self.outbox.put(self.messages(out))

    def send_ready(self) -> None:
        """Send what the writer has committed so far (on the reading thread)."""
        while True:
            try:
                messages = self.outbox.get_nowait()
            except queue.Empty:
                return
            self.sent(messages)

    def messages(self, out: Outgoing) -> list[Message]:
        """The doorbell for a committed chunk: escalations (door) or the first tier's ids."""
        ids, decided = out
        if self.door is not None and decided is not None:
            return door_messages(self.rt, self.job_id, self.door.name, decided)
        return [Message(Phase.TIER, self.job_id, 0, c) for c in chunks(ids, self.first_batch)]

    def sent(self, messages: list[Message]) -> None:
        publish(self.rt, messages)
        if self.on_progress:
            self.on_progress(dict(self.counts))

    def finish(self, session: DbSession) -> None:
        repo.close_submission(session, self.job_id, self.sub_id, self.counts)


def _chunks(lines: Iterator[InputItem | RejectedLine], counts: dict[str, int]) -> Iterator[Chunk]:
    """The lines, CHUNK_LINES at a time; always at least one chunk (maybe empty)."""
    batch: list[NewItem] = []
    rejected: Rejected = []
    for entry in lines:
        counts["lines_read"] += 1
        if isinstance(entry, InputItem):
            batch.append(NewItem(entry.line_no, entry.item_id, entry.text, entry.metadata))
        else:
            rejected.append((entry.line_no, entry.reason, entry.raw))
        if len(batch) + len(rejected) >= CHUNK_LINES:
            yield Chunk(batch, rejected)
            batch, rejected = [], []
    if batch or rejected:
        yield Chunk(batch, rejected)


def _drain(chunks: list[Chunk]) -> Iterator[Chunk]:
    while chunks:
        yield chunks.pop(0)


def _open(
    rt: Runtime,
    pipeline: Pipeline,
    job_name: str,
    source: str,
    budget_nanos: int | None,
    on_progress: Callable[[dict[str, int]], None] | None,
    counts: dict[str, int],
    head: list[Chunk],
    one: bool,
    copy: bool = True,
) -> tuple[_Submission, Outgoing | None, bool]:
    """Open the job and the submission; a file of ``one`` chunk is written and closed in
    the same transaction (its COPY without a savepoint: a collision raises
    :class:`copyin.Collision` and the whole transaction is redone by the caller)."""
    out: Outgoing | None = None
    # the one chunk's ids are drawn by the statement that opens the submission
    draw = len(head[0].batch) if one and copy and head else 0
    with rt.sessions.begin() as session:
        vetted = _vet(pipeline, rt.prices)
        opened = repo.open_submission(
            session,
            job_name,
            vetted.stored,
            source,
            draw=draw,
            begin=True,
            pipeline_text=vetted.text,
        )
        job_id, created = opened.job_id, opened.created
        if budget_nanos is not None:
            repo.set_budget(session, job_id, budget_nanos)
        engine = rt.engine_for(job_id, pipeline if created else None)
        run = _Submission(rt, engine, job_id, opened.submission_id, source, on_progress, counts)
        drawn = (opened.ids, opened.now) if opened.now is not None else None
        if one:
            for chunk in head:  # at most one
                chunk.savepoint = False
                if copy:
                    run.prepare(chunk, session, drawn)
                out = run.record(session, chunk, closing=True)
            if not head:  # an empty file
                run.finish(session)
    return run, out, created


def submit(
    rt: Runtime,
    path: Path,
    pipeline: Pipeline,
    job_name: str,
    *,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    budget_nanos: int | None = None,
) -> SubmitResult:
    """Stream ``path`` into the job ``job_name`` (created if new) and start the cascade.

    A file that fits in one chunk is written in one transaction with the job's
    bookkeeping (one commit: the short path an item submitted on its own takes);
    a longer one is read and prepared on this thread while a writer thread commits
    a chunk at a time.
    """
    vetted = _vet(pipeline, rt.prices)
    if vetted.problems:
        raise SubmitError("; ".join(vetted.problems))
    # Opening the reader validates the file before anything is written.
    lines = read_items(path, max_text_chars=pipeline.limits.max_text_chars)
    counts = {"lines_read": 0, "items_added": 0, "items_existing": 0, "lines_rejected": 0}
    pending = _chunks(lines, counts)
    head = list(itertools.islice(pending, 2))
    source = str(path)
    one = len(head) <= 1
    try:
        run, out, created = _open(
            rt, pipeline, job_name, source, budget_nanos, on_progress, counts, head, one
        )
    except copyin.Collision:
        # The job holds one of the file's ids already, and that transaction is gone:
        # again, with the chunk through INSERT ... ON CONFLICT.
        for chunk in head:
            chunk.prepared = chunk.decided = None
        run, out, created = _open(
            rt, pipeline, job_name, source, budget_nanos, on_progress, counts, head, one, False
        )
    job_id = run.job_id
    if one:
        if out is not None:
            run.sent(run.messages(out))
    else:
        with Pipelined(run.flush) as writer:
            # chunks are handed over, not kept: memory holds what the queue holds
            for chunk in itertools.chain(_drain(head), pending):
                run.prepare(chunk)
                writer.put(chunk)
                run.send_ready()
            del chunk
        run.send_ready()
        with rt.sessions.begin() as session:
            run.finish(session)
    log.info("cascade.job.submitted", job_id=job_id, source=source, **counts)
    return SubmitResult(job_id, job_name, created, counts)

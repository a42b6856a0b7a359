"""Submitting a file: stream it into the database, record every bad line, ring the doorbell.

Memory stays flat: lines are read, inserted and enqueued a chunk at a time.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from common.logs import get_logger
from models import copyin, repo
from models.bulk import add_items_fast
from models.repo import AddResult, NewItem, Settled
from tasks.flow import Message, attempt_rows, chunks, decide_free, route, settled_of
from tasks.jobs import publish
from tasks.runtime import Runtime, tier_batch_size
from workers.engine import Engine
from workers.intake import InputItem, read_items
from workers.pipeline import ClaudeTier, ModelRef, Pipeline, RulesTier
from workers.pricing import PriceTable
from workers.records import ItemResult, WorkItem

if TYPE_CHECKING:
    from models.db import DbSession

log = get_logger("cascade.submit")
T = TypeVar("T")
CHUNK_LINES = 5_000


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


class Pipelined(Generic[T]):
    """Runs ``write`` on a background thread, one chunk at a time, in order.

    Preparing a chunk is Python work; writing it is mostly waiting on the database and
    the broker (the driver releases the GIL), so the two overlap. At most ``depth``
    chunks wait, which keeps memory flat. The first failure of ``write`` stops the
    writing and is raised to the caller, from ``put`` or on leaving the block.
    """

    def __init__(self, write: Callable[[T], None], depth: int = 2) -> None:
        self._write = write
        self._queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cascade-submit-writer")

    def __enter__(self) -> Pipelined[T]:
        self._thread.start()
        return self

    def put(self, chunk: T) -> None:
        self._raise()
        self._queue.put((chunk,))

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(chunk[0])
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc


def door_tier(rt: Runtime, engine: Engine) -> RulesTier | None:
    """The first tier, when the submitter decides it as it writes: rules, no shadow samples."""
    first = engine.pipeline.tiers[0]
    if rt.settings.rules_at_submit and isinstance(first, RulesTier) and not first.shadow_rate:
        return first
    return None


Decided = tuple[list[ItemResult], list[Settled]]
Rejected = list[tuple[int, str, str]]


@dataclass(slots=True)
class Chunk:
    """Lines read: the items, the rejected lines, and (Postgres) the items' COPY text."""

    batch: list[NewItem]
    rejected: Rejected
    prepared: copyin.Prepared | None = None
    decided: Decided | None = None


def prepare_chunk(
    rt: Runtime, engine: Engine, door: RulesTier | None, job_id: int, sub_id: int, chunk: Chunk
) -> None:
    """On the reading thread: draw ids, decide the ``door`` tier, format the COPY text.

    Doing this here rather than on the writer keeps the writer's thread free to wait
    on the database while the next chunk is read and prepared.
    """
    door_name = door.name if door is not None else ""

    def decide(
        ids: Sequence[int], items: Sequence[NewItem], now: datetime
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        work = [WorkItem(pk, it.text, 0) for pk, it in zip(ids, items, strict=True)]
        results = engine.run_rules(0, work)
        kept = [settled_of(0, door_name, r) for r in results]
        drop = not engine.pipeline.store_text
        chunk.decided = results, kept
        return [repo.settled_values(s, now, drop) for s in kept], attempt_rows(job_id, results)

    with rt.sessions() as session:
        if copyin.supported(session):
            chunk.prepared = copyin.prepare(
                session, job_id, sub_id, chunk.batch, decide if door is not None else None
            )


def write_chunk(
    rt: Runtime, session: DbSession, door: RulesTier | None, job_id: int, sub_id: int, chunk: Chunk
) -> tuple[AddResult, Decided | None]:
    """Insert a chunk; with a ``door`` tier its items are decided in the same transaction.

    A prepared chunk goes in with COPY, already decided; one holding an id the job
    has already (or not prepared: SQLite) takes the ON CONFLICT insert and is then
    decided like a worker would (:func:`tasks.flow.decide_free`). Both leave the same rows.
    """
    if chunk.prepared is not None:
        added = copyin.write(session, chunk.prepared)
        if added is not None:
            return added, chunk.decided
    added = add_items_fast(session, job_id, sub_id, chunk.batch)
    if door is None or not added.added:
        return added, None
    return added, decide_free(rt, session, job_id, 0, added.added)


def submit(
    rt: Runtime,
    path: Path,
    pipeline: Pipeline,
    job_name: str,
    *,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    budget_nanos: int | None = None,
) -> SubmitResult:
    problems = check_models_priced(pipeline, rt.prices)
    if problems:
        raise SubmitError("; ".join(problems))
    # Opening the reader validates the file before anything is written.
    lines = read_items(path, max_text_chars=pipeline.limits.max_text_chars)
    first = next(lines, None)
    source = str(path)
    snapshot = pipeline.model_dump(mode="json")
    with rt.sessions.begin() as session:
        job, created = repo.open_job(session, job_name, snapshot)
        job_id = job.id
        if budget_nanos is not None:
            repo.set_budget(session, job_id, budget_nanos)
        sub_id = repo.start_submission(session, job_id, source)
    counts = {"lines_read": 0, "items_added": 0, "items_existing": 0, "lines_rejected": 0}
    first_queue_batch = tier_batch_size(rt.settings, pipeline, 0, "tier")

    engine = rt.engine_for(job_id)
    door = door_tier(rt, engine)

    def flush(chunk: Chunk) -> None:
        rejected = chunk.rejected
        with rt.sessions.begin() as session:
            added, decided = write_chunk(rt, session, door, job_id, sub_id, chunk)
            for line_no, key, first_line in added.duplicates:
                rejected.append(
                    (line_no, f"duplicate_id: {key!r} first seen on line {first_line}", key)
                )
            repo.add_rejected(session, job_id, sub_id, source, rejected)
        counts["items_added"] += len(added.added)
        counts["items_existing"] += added.existing
        counts["lines_rejected"] += len(rejected)
        if door is not None and decided is not None:
            results, kept = decided
            msg = Message("tier", job_id, 0, added.added)
            publish(rt, route(rt, msg, door.name, results, kept))
        else:
            publish(
                rt, [Message("tier", job_id, 0, c) for c in chunks(added.added, first_queue_batch)]
            )
        if on_progress:
            on_progress(dict(counts))

    def handover(writer: Pipelined[Chunk], chunk: Chunk) -> None:
        prepare_chunk(rt, engine, door, job_id, sub_id, chunk)
        writer.put(chunk)

    batch: list[NewItem] = []
    rejected: Rejected = []
    with Pipelined(flush) as writer:
        if first is not None:
            for entry in itertools.chain([first], lines):
                counts["lines_read"] += 1
                if isinstance(entry, InputItem):
                    batch.append(NewItem(entry.line_no, entry.item_id, entry.text, entry.metadata))
                else:
                    rejected.append((entry.line_no, entry.reason, entry.raw))
                if len(batch) + len(rejected) >= CHUNK_LINES:
                    handover(writer, Chunk(batch, rejected))
                    batch, rejected = [], []
        handover(writer, Chunk(batch, rejected))
    with rt.sessions.begin() as session:
        repo.finish_submission(session, sub_id, counts)
        repo.set_job_running(session, job_id)
        repo.finish_job_if_done(session, job_id)
    log.info("cascade.job.submitted", job_id=job_id, source=source, **counts)
    return SubmitResult(job_id, job_name, created, counts)

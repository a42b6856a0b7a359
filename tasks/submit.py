"""Submitting a file: stream it into the database, record every bad line, ring the doorbell.

Memory stays flat: lines are read, inserted and enqueued a chunk at a time.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.logs import get_logger
from models import repo
from models.bulk import add_items_fast
from models.repo import NewItem
from tasks.flow import Message, chunks
from tasks.jobs import publish
from tasks.runtime import Runtime, tier_batch_size
from workers.intake import InputItem, read_items
from workers.pipeline import ClaudeTier, ModelRef, Pipeline
from workers.pricing import PriceTable

log = get_logger("cascade.submit")
CHUNK_LINES = 2_000


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


class Pipelined:
    """Runs ``write`` on a background thread, one chunk at a time, in order.

    Parsing a chunk is Python work; writing it is mostly waiting on the database and
    the broker (the driver releases the GIL), so the two overlap. At most ``depth``
    chunks wait, which keeps memory flat. The first failure of ``write`` stops the
    writing and is raised to the caller, from ``put`` or on leaving the block.
    """

    def __init__(
        self, write: Callable[[list[NewItem], list[tuple[int, str, str]]], None], depth: int = 2
    ) -> None:
        self._write = write
        self._queue: queue.Queue[tuple[list[NewItem], list[tuple[int, str, str]]] | None] = (
            queue.Queue(maxsize=depth)
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cascade-submit-writer")

    def __enter__(self) -> Pipelined:
        self._thread.start()
        return self

    def put(self, batch: list[NewItem], rejected: list[tuple[int, str, str]]) -> None:
        self._raise()
        self._queue.put((batch, rejected))

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
                    self._write(*chunk)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc


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

    def flush(batch: list[NewItem], rejected: list[tuple[int, str, str]]) -> None:
        with rt.sessions.begin() as session:
            added = add_items_fast(session, job_id, sub_id, batch)
            for line_no, key, first_line in added.duplicates:
                rejected.append(
                    (line_no, f"duplicate_id: {key!r} first seen on line {first_line}", key)
                )
            repo.add_rejected(session, job_id, sub_id, source, rejected)
        counts["items_added"] += len(added.added)
        counts["items_existing"] += added.existing
        counts["lines_rejected"] += len(rejected)
        publish(rt, [Message("tier", job_id, 0, c) for c in chunks(added.added, first_queue_batch)])
        if on_progress:
            on_progress(dict(counts))

    batch: list[NewItem] = []
    rejected: list[tuple[int, str, str]] = []
    with Pipelined(flush) as writer:
        if first is not None:
            for entry in itertools.chain([first], lines):
                counts["lines_read"] += 1
                if isinstance(entry, InputItem):
                    batch.append(NewItem(entry.line_no, entry.item_id, entry.text, entry.metadata))
                else:
                    rejected.append((entry.line_no, entry.reason, entry.raw))
                if len(batch) + len(rejected) >= CHUNK_LINES:
                    writer.put(batch, rejected)
                    batch, rejected = [], []
        writer.put(batch, rejected)
    with rt.sessions.begin() as session:
        repo.finish_submission(session, sub_id, counts)
        repo.set_job_running(session, job_id)
        repo.finish_job_if_done(session, job_id)
    log.info("cascade.job.submitted", job_id=job_id, source=source, **counts)
    return SubmitResult(job_id, job_name, created, counts)

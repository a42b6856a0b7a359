"""A file's chunks on their way in: prepared on the reading thread, written on a writer
thread (:class:`Pipelined`), and — when the first tier is rules — decided at the door
in the transaction that inserts them, the way a worker would decide them.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from common.lifecycle import Phase, Verdict
from common.logs import get_logger
from models import copyin, ledger
from models.bulk import add_items_fast
from models.ledger import Settled
from models.repo import AddResult, NewItem
from tasks import metrics
from tasks.flow import decide_free, decide_items
from tasks.messages import Message, chunks
from tasks.rows import attempt_rows
from tasks.runtime import Runtime
from workers.engine import Engine
from workers.pipeline import RulesTier
from workers.records import WorkItem

if TYPE_CHECKING:
    from models.db import DbSession

log = get_logger("cascade.submit")
T = TypeVar("T")


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
            del chunk  # not kept while waiting for the next one


def door_tier(rt: Runtime, engine: Engine) -> RulesTier | None:
    """The first tier, when the submitter decides it as it writes: rules, no shadow samples."""
    first = engine.pipeline.tiers[0]
    if rt.settings.rules_at_submit and isinstance(first, RulesTier) and not first.shadow_rate:
        return first
    return None


@dataclass(slots=True)
class Decided:
    """What the door decided for a committed chunk: per item, its id and its kind, and
    each kind's decision (``accept`` or ``escalate``)."""

    ids: list[int]
    kinds: list[Hashable]
    names: dict[Hashable, str]

    @classmethod
    def of(cls, kept: Sequence[Settled]) -> Decided:
        """From a batch settled the way a worker settles it (a decision is its own kind)."""
        kinds: list[Hashable] = [s.decision for s in kept]
        return cls([s.pk for s in kept], kinds, {s.decision: s.decision for s in kept})


Outgoing = tuple[list[int], Decided | None]  # a committed chunk's ids, and its door decisions
Rejected = list[tuple[int, str, str]]


@dataclass(slots=True)
class Chunk:
    """Lines read: the items, the rejected lines, and (Postgres) the items' COPY text."""

    batch: list[NewItem]
    rejected: Rejected
    prepared: copyin.Prepared | None = None
    decided: Decided | None = None
    # False: the COPY goes without a savepoint (see copyin.write), because no id can
    # collide or because the caller redoes the transaction the slower way if one does
    savepoint: bool = True


def prepare_chunk(
    rt: Runtime,
    engine: Engine,
    door: RulesTier | None,
    job_id: int,
    sub_id: int,
    chunk: Chunk,
    session: DbSession | None = None,
    drawn: tuple[list[int], datetime] | None = None,
) -> None:
    """On the reading thread: draw ids (unless ``drawn``), decide the ``door`` tier,
    format the rows.

    Doing this here rather than on the writer keeps the writer's thread free to wait
    on the database while the next chunk is read and prepared. The door sorts items
    into kinds (:meth:`Engine.rules_kinds`) and runs the tier itself, as a worker
    would, on one item of each kind: the rest of that kind are written the same way.
    """

    def decide(ids: Sequence[int], items: Sequence[NewItem], now: datetime) -> copyin.Decisions:
        kinds: list[Hashable] = list(engine.rules_kinds(0, [it.text for it in items]))
        decided = chunk.decided = Decided(list(ids), kinds, {})
        drop = not engine.pipeline.store_text

        def describe(n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            results, kept = decide_items(engine, 0, [WorkItem(ids[n], items[n].text, 0)])
            decided.names[kinds[n]] = kept[0].decision
            return ledger.settled_values(kept[0], now, drop), attempt_rows(job_id, results)

        return copyin.Decisions(kinds, describe)

    with nullcontext(session) if session is not None else rt.sessions() as own:
        if copyin.supported(own):
            chunk.prepared = copyin.prepare(
                own, job_id, sub_id, chunk.batch, decide if door is not None else None, drawn
            )


def write_chunk(
    rt: Runtime,
    session: DbSession,
    door: RulesTier | None,
    job_id: int,
    sub_id: int,
    chunk: Chunk,
    then: tuple[str, dict[str, Any]] | None = None,
) -> tuple[AddResult, Decided | None]:
    """Insert a chunk; with a ``door`` tier its items are decided in the same transaction.

    A prepared chunk goes in with COPY, already decided; one holding an id the job
    has already (or not prepared: SQLite) takes the ON CONFLICT insert and is then
    decided like a worker would (:func:`tasks.flow.decide_free`). Both leave the same rows.
    ``then`` goes with a prepared chunk's rows (:func:`models.copyin.write`).
    """
    if chunk.prepared is not None:
        added = copyin.write(session, chunk.prepared, savepoint=chunk.savepoint, then=then)
        if added is not None:  # every item went in, as decided
            return added, chunk.decided
    added = add_items_fast(session, job_id, sub_id, chunk.batch)
    if door is None or not added.added:
        return added, None
    _, kept = decide_free(rt, session, job_id, 0, added.added)
    return added, Decided.of(kept)


def door_messages(rt: Runtime, job_id: int, tier: str, decided: Decided) -> list[Message]:
    """After a chunk decided at the door commits: metrics, a log line, and its escalations
    (what :func:`tasks.settle.route` does after a worker's rules batch)."""
    names = [decided.names[k] for k in decided.kinds]
    counts = Counter(names)
    if set(counts) - {Verdict.ACCEPT, Verdict.ESCALATE}:
        raise RuntimeError(f"a rules tier decided {sorted(counts)}: only accept or escalate")
    metrics.record(tier, (), names)
    log.info("cascade.batch.settled", items=len(names), lost_lease=0, **counts)
    up = [pk for pk, name in zip(decided.ids, names, strict=True) if name == Verdict.ESCALATE]
    return [Message(Phase.TIER, job_id, 1, c) for c in chunks(up, rt.batch_size(job_id, 1))]

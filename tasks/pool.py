"""The worker pool: one event loop per worker process keeps up to CASCADE_CONCURRENCY
model calls in flight across as many broker messages as it takes, and each item is
settled as soon as its own calls (and checks) are done.

Why this shape. Model latency is heavy-tailed (median under a second, p99 several
seconds): a pool that settles a batch when its slowest call returns idles most of its
slots behind one slow call. Celery's prefork pool runs one task at a time per process,
so a tier task here does not run its batch: it *admits* it — claims the items under a
lease and hands each one to the process's event loop — and returns as soon as there
is room (about ``CASCADE_CONCURRENCY × CASCADE_ADMIT_FACTOR`` items out per process:
a message is admitted whole once the process is below that). The process then takes
its next message while the tail of the last one is still in flight. Keeping prefork
(rather than Celery's thread pool, or a consumer of our own) keeps ``celery worker -c
N`` meaning N processes on N cores, and every deployment recipe as it was.

Three threads per worker process:
- Celery's task thread: claims and admits. While the pool is full it waits, unless
  its call slots are idle: then what it holds is waiting on something else (a rate
  limit, a cache being written), and holding this message too would only keep the
  process from other queues' work, so the message goes back to its queue (after a
  pause, so a process does not spin on one busy queue);
- the loop thread: every call, check and decision (:mod:`workers.visit`);
- the ledger thread (:class:`tasks.writer.Writer`): writes each call as it is sent and
  as it returns, settles items in small groups, renews the leases of what it holds,
  sweeps, and hands follow-up messages to the publisher.

A message is acknowledged once its items are claimed and admitted: from then on the
ledger, not the broker, carries them. A worker killed with -9 leaves its items leased;
nobody renews the lease, so they are claimable within ``CASCADE_LEASE_SECONDS``, and
the next sweep (every worker runs one every ``CASCADE_SWEEP_EVERY_S``) sends them again.
What its calls had got back and the ledger had not committed yet is in its spool
(:mod:`tasks.spool`), which the next pool of the host replays first.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.lifecycle import Outcome, Phase
from common.logs import get_logger
from models.attempt_rows import attempt_row
from tasks.budget import budget_gate
from tasks.messages import Message
from tasks.rows import step_row
from tasks.runtime import Runtime
from tasks.settle import claim
from tasks.shadow import add_shadow
from tasks.spool import Spool, replay, spool_dir
from tasks.writer import Writer
from workers.decision import Fallback, GiveUp
from workers.moderation import mark_disagreements
from workers.pipeline import ClaudeTier, ModelRef
from workers.providers.base import ClassifyRequest
from workers.quality import steps_from_tries
from workers.records import ItemResult
from workers.retry import LeaseLost, Try
from workers.visit import Visit, serve, serve_fallback, shadowed, step_of_row

log = get_logger("cascade.pool")
# How long a full pool waits for room before it sends a message back to its queue, when
# its call slots are idle (at most this often per process, a message goes back).
BACK_AFTER_S = 0.2
# Idle slots: fewer calls on the wire than this share of CASCADE_CONCURRENCY.
IDLE_BELOW = 0.75


@dataclass(frozen=True, slots=True)
class Admitted:
    taken: int  # items handed to the loop (or settled at once: budget holds)
    back: list[int]  # ids not taken: the caller puts them back on their queue


class Pool:
    """The process's continuous pool (see the module's docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.loop = rt.start_loop()
        self._room = max(1, int(rt.settings.concurrency * rt.settings.admit_factor))
        self._admitted = 0  # items handed to the loop and not yet decided
        self._on_wire = 0  # calls sent and not yet returned (the journal counts them)
        self._lock = threading.Condition()
        self._owner: dict[int, str] = {}  # item -> the lease token it is held under
        self._out: Counter[str] = Counter()  # lease token -> items not settled yet
        # what admitted items may still cost, per job (budgets count it until they settle)
        self._reserved: Counter[int] = Counter()
        self._reserve: dict[int, tuple[int, int]] = {}  # item -> (job, its worst case)
        self._tasks: set[asyncio.Task[None]] = set()  # the items' tasks on the loop
        self.writer = Writer(rt, self)
        self.spool = _open_spool(rt)
        if self.spool is not None:  # a dead process's replies before any claim of ours
            replay(rt, self.spool.directory)
            self.writer.spool = self.spool
        rt.executor().journal = Journal(self)
        self.writer.start()

    # -- what the ledger thread asks ------------------------------------------------
    def tokens(self) -> list[str]:
        with self._lock:
            return [t for t, n in self._out.items() if n > 0]

    def owners(self, pks: set[int]) -> dict[int, str]:
        with self._lock:
            return {pk: self._owner[pk] for pk in pks if pk in self._owner}

    def settled(self, pks: list[int]) -> None:
        """Items whose outcome is committed (or that are no longer ours)."""
        with self._lock:
            for pk in pks:
                job_id, worst = self._reserve.pop(pk, (0, 0))
                self._reserved[job_id] -= worst
                token = self._owner.pop(pk, None)
                if token is not None:
                    self._out[token] -= 1
                    if self._out[token] <= 0:
                        del self._out[token]
            self._lock.notify_all()

    def busy(self) -> int:
        with self._lock:
            return len(self._owner)

    # -- admission (Celery's task thread) --------------------------------------------
    def admit(self, msg: Message) -> Admitted:
        """Claim the message's items and hand each to the loop, once there is room; or,
        while the pool is full and its call slots idle, give the message back."""
        if not self._room_for(len(msg.ids)):
            return Admitted(0, list(msg.ids))
        rt = self.rt
        engine = rt.engine_for(msg.job_id)
        tier = engine.pipeline.tiers[msg.tier_index]
        got = claim(rt, msg, lease_s=rt.settings.lease_seconds)
        if not got.items:
            self._unreserve(len(msg.ids))
            return Admitted(0, [])
        token, claimed, disabled = got.token, got.items, got.disabled
        held: list[ItemResult] = []
        worst: dict[int, int] = {}
        if isinstance(tier, ClaudeTier):
            with self._lock:  # one admission at a time may spend this process's reserve
                claimed, held = budget_gate(
                    rt, engine, msg, tier, claimed, reserved=self._reserved[msg.job_id], worst=worst
                )
                self._reserved[msg.job_id] += sum(worst.values())
        with self._lock:
            for pk in [c.pk for c in claimed] + [r.pk for r in held]:
                self._owner[pk] = token
                self._reserve[pk] = (msg.job_id, worst.get(pk, 0))
            self._out[token] += len(claimed) + len(held)
        self._unreserve(len(msg.ids) - len(claimed))  # not claimable, or held by the budget
        for result in held:
            self.writer.settle(msg, tier.name, token, result)
        visits = [
            Visit(
                c.pk,
                c.text,
                c.steps,
                tuple(step_of_row(r) for r in c.recorded),
                c.error,
                c.error_kind,
                c.deferrals,
                c.label,
            )
            for c in claimed
        ]
        if visits:  # one wake-up of the loop per message, not one per item
            self.loop.call_soon_threadsafe(self._start, msg, tier.name, token, visits, disabled)
        return Admitted(len(claimed) + len(held), [])

    def _room_for(self, n: int) -> bool:
        """Wait for room, then reserve it for ``n`` items; False: give the message back."""
        idle_below = self.rt.settings.concurrency * IDLE_BELOW
        with self._lock:
            while self._admitted >= self._room:
                if self._on_wire < idle_below:
                    # the items out wait on something else than call slots
                    if not self._lock.wait_for(lambda: self._admitted < self._room, BACK_AFTER_S):
                        return False
                else:
                    self._lock.wait(0.05)
            self._admitted += n
            return True

    def _unreserve(self, n: int) -> None:
        if n:
            with self._lock:
                self._admitted -= n
                self._lock.notify_all()

    def calls_on_wire(self) -> int:
        with self._lock:
            return self._on_wire

    def on_wire(self, delta: int) -> None:
        with self._lock:
            self._on_wire += delta

    # -- one item (the loop thread) ------------------------------------------------
    def _start(
        self,
        msg: Message,
        tier_name: str,
        token: str,
        visits: list[Visit],
        disabled: Mapping[str, str],
    ) -> None:
        for visit in visits:
            task = self.loop.create_task(self._serve(msg, tier_name, token, visit, disabled))
            self._tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._unreserve(1)
        if not task.cancelled() and task.exception() is not None:
            log.error("cascade.item.crashed", error=repr(task.exception()))

    # -- one item (the loop thread) ------------------------------------------------
    async def _serve(
        self, msg: Message, tier_name: str, token: str, visit: Visit, disabled: Mapping[str, str]
    ) -> None:
        engine = self.rt.engine_for(msg.job_id)
        try:
            if msg.phase == Phase.FALLBACK:
                result = await serve_fallback(
                    engine, msg.tier_index, visit, disabled, self.rt.settings.max_deferrals
                )
            else:
                result = await serve(engine, msg.tier_index, visit, disabled)
                if not shadowed(visit):
                    await add_shadow(
                        self.rt, msg.job_id, msg.tier_index, visit.work, result, disabled
                    )
            # a contradicted answer goes to a person, where the pipeline asks for it
            mark_disagreements(engine.pipeline, msg.tier_index, {visit.pk: visit.label}, [result])
        except LeaseLost:
            log.warning("cascade.item.lease_lost", item=visit.pk, job_id=msg.job_id)
            self.settled([visit.pk])
            return
        except Exception as exc:  # a bug: the item leaves this tier with the reason, once
            log.exception("cascade.item.internal_error", item=visit.pk, job_id=msg.job_id)
            why = f"internal error: {type(exc).__name__}: {exc}"[:500]
            decision = GiveUp(why) if msg.phase == Phase.FALLBACK else Fallback(why)
            result = ItemResult(visit.pk, decision, list(visit.recorded))
        self.writer.settle(msg, tier_name, token, result)

    # -- shutdown -----------------------------------------------------------------
    def close(self, timeout: float) -> None:
        """Let the items out finish and their outcomes commit (at most ``timeout`` s)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._owner, timeout)
            left = len(self._owner)
        if left:
            log.warning("cascade.pool.closed_busy", items=left)
        self.writer.stop(timeout)
        if self.spool is not None:
            self.spool.close(clean=not left and not self.writer.failed)


class Journal:
    """The executor's call journal: each try is a ledger row before it is sent."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def _spool(self) -> Spool | None:
        spool = self._pool.spool
        if spool is not None:
            old = spool.rotate()
            if old is not None:
                self._pool.writer.released(old)
        return spool

    async def sending(self, request: ClassifyRequest, n: int) -> None:
        tag = request.tag
        assert tag is not None
        spool = self._spool()
        if spool is not None:
            spool.intent(tag.item_pk, tag.first_step + n)
        row = attempt_row(
            job_id=tag.job_id,
            item_id=tag.item_pk,
            step=tag.first_step + n,
            tier_index=tag.tier_index,
            tier=tag.tier,
            role=tag.role,
            provider=request.provider,
            model=request.model,
            outcome=Outcome.IN_FLIGHT,
            cost_nanos=tag.estimate_nanos,
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pool.writer.journal(row, done)
        await done
        if spool is not None:
            spool.sent(tag.item_pk, tag.first_step + n)
        self._pool.on_wire(1)

    def returned(self, request: ClassifyRequest, n: int, attempt: Try) -> None:
        self._pool.on_wire(-1)
        tag = request.tag
        assert tag is not None
        link = ModelRef(provider=request.provider, model=request.model)
        [step], _ = steps_from_tries(
            self._pool.rt.prices,
            tag.item_pk,
            tag.first_step + n,
            tag.tier_index,
            tag.tier,
            tag.role,
            link,
            [attempt],
            request.labels,
        )
        row = step_row(tag.job_id, step)
        spool = self._spool()
        if spool is not None:
            spool.returned(row)
        self._pool.writer.journal(row, None)


def _open_spool(rt: Runtime) -> Spool | None:
    directory = spool_dir(rt.settings.spool_dir, rt.settings.database_url)
    try:
        return Spool(directory)
    except OSError as exc:  # the ledger still records every call, a commit later
        log.error("cascade.spool.unavailable", directory=str(directory), error=repr(exc))
        return None


def pool_of(rt: Runtime) -> Pool:
    """The process's pool, started on first use."""
    found: Any = rt.extras.get("pool")
    if found is None:
        found = rt.extras["pool"] = Pool(rt)
        rt.on_close(lambda: found.close(rt.settings.lease_seconds))
    assert isinstance(found, Pool)
    return found

"""The ledger thread of a worker process: every write the pool makes, in small groups.

- **The call journal**: a try is written as in flight before its request leaves (the
  loop waits for that commit), and its reply or error goes in the next commit after
  it returns — within ``CASCADE_FLUSH_MS`` plus one commit. The ledger is the bill:
  whatever dies, a call the API served is a row (inside that window, through the
  process's spool, :mod:`tasks.spool`, whose segments this thread deletes once
  committed and whose dead ones it replays before each sweep).
- **Settling**: an item's visit (its attempt rows and outcome) is committed with the
  others that finished within the same window, under each item's lease token.
- **Routing**: follow-ups (escalations, fallbacks, deferrals) are grouped per tier for
  at most ``ROUTE_WAIT_S`` or a batch, then handed to the publisher thread, so a broker
  that is down never stalls the ledger.
- **Heartbeat**: every third of a lease, the leases of every item still out are renewed.
- **Sweep**: every ``CASCADE_SWEEP_EVERY_S``, one process of the fleet (a database lock)
  re-sends what no live worker holds: a dead worker's items come back without beat.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from common.lifecycle import FINAL_VERDICTS, STOPS_JOB, TRANSITIONS, Phase
from common.logs import get_logger
from models import ledger, repo
from models.errors import with_db_retry
from models.resilience import BreakerChange, add_breaker_events
from models.reuse import Released
from tasks import metrics
from tasks.messages import Message, chunks, countdown, destination, released_messages
from tasks.publish import publish, sweep_once
from tasks.rows import attempt_rows, settled_of
from tasks.runtime import Runtime, worker_name
from tasks.spool import Segment, Spool, replay
from workers.records import ItemResult
from workers.retry import LeaseLost

log = get_logger("cascade.ledger")


class Holder(Protocol):
    """What the writer asks of the pool whose items it records (:class:`tasks.pool.Pool`)."""

    def tokens(self) -> list[str]:
        """The claim tokens of the items it holds: their leases are renewed."""
        ...

    def owners(self, pks: set[int]) -> dict[int, str]:
        """The claim token of each of ``pks`` it still holds."""
        ...

    def settled(self, pks: list[int]) -> None:
        """Items whose outcome is committed (or that are no longer its)."""
        ...


ROUTE_WAIT_S = 0.2  # most a follow-up waits for others of its tier (the 250 ms promise)
MAX_GROUP = 2_000  # entries per commit
FINISH_EVERY_S = 0.2  # most a job waits to be marked done after its last item settles


@dataclass(slots=True)
class _Journal:
    row: dict[str, Any]
    done: asyncio.Future[None] | None  # the loop waits on an in-flight row's commit


@dataclass(slots=True)
class _Settle:
    msg: Message
    tier: str
    token: str
    result: ItemResult


@dataclass(slots=True)
class _Released:
    segment: Segment  # a spool segment: deleted once everything before it commits


@dataclass(slots=True)
class _Route:
    ids: list[int] = field(default_factory=list)
    since: float = 0.0
    countdown: float = 0.0


_STOP = object()


class Writer:
    def __init__(self, rt: Runtime, pool: Holder, *, clock: Any = time.monotonic) -> None:
        self.rt = rt
        self.pool = pool
        self._clock = clock
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._routes: dict[tuple[int, int, Phase], _Route] = {}
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.spool: Spool | None = None  # set by the pool, when it has one
        self.failed = False  # a group failed to commit since the last segment released
        s = rt.settings
        self._beat_s = max(1.0, s.lease_seconds / 3)
        self._next_beat = clock() + self._beat_s
        self._finishing: set[int] = set()  # jobs with a final verdict since the last check
        self._next_finish = 0.0
        self._next_sweep = clock() + s.sweep_every_s if s.sweep_every_s else float("inf")
        self._thread = threading.Thread(target=self._run, name="cascade-ledger", daemon=True)
        self._sender = threading.Thread(target=self._send, name="cascade-publish", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._sender.start()

    def stop(self, timeout: float) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout)
        self._outbox.put(_STOP)
        self._sender.join(timeout)

    # -- what the loop hands over ----------------------------------------------------
    def journal(self, row: dict[str, Any], done: asyncio.Future[None] | None) -> None:
        self._q.put(_Journal(row, done))

    def settle(self, msg: Message, tier: str, token: str, result: ItemResult) -> None:
        self._q.put(_Settle(msg, tier, token, result))

    def released(self, segment: Segment) -> None:
        """The spool moved on from ``segment``: delete it after what is queued commits."""
        self._q.put(_Released(segment))

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            entries, stopping = self._gather()
            if entries:
                self._flush(entries)
            self._due(force=stopping)

    def _gather(self) -> tuple[list[Any], bool]:
        """Entries that arrive within one flush window of the first (or none in 50 ms)."""
        try:
            first = self._q.get(timeout=0.05)
        except queue.Empty:
            return [], False
        if first is _STOP:
            return [], True
        entries = [first]
        deadline = self._clock() + self.rt.settings.flush_ms / 1000
        while len(entries) < MAX_GROUP:
            wait = deadline - self._clock()
            try:
                entry = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return entries, True
            entries.append(entry)
        return entries, False

    def _flush(self, entries: Sequence[Any]) -> None:
        journal = [e for e in entries if isinstance(e, _Journal)]
        settles = [e for e in entries if isinstance(e, _Settle)]
        segments = [e.segment for e in entries if isinstance(e, _Released)]
        owners = self.pool.owners({e.row["item_id"] for e in journal})
        try:
            lost, kept, freed = with_db_retry(lambda: self._write(journal, settles, owners))
        except Exception as exc:
            log.error("cascade.ledger.write_failed", entries=len(entries), error=repr(exc))
            for e in journal:
                _resolve(e.done, exc)
            self.pool.settled([e.result.pk for e in settles])
            self.failed = True  # the spool keeps these segments for a successor to replay
            self._release(segments)
            return
        if segments:  # what this group committed after them belongs to the next segment
            self._release(segments)
            self.failed = False
        for e in journal:
            _resolve(e.done, LeaseLost() if e.row["item_id"] in lost else None)
        self.pool.settled([e.result.pk for e in settles])
        for job_id, group, done in kept:
            self._route(job_id, group, done)
        if freed:
            self._outbox.put(released_messages(freed))

    def _release(self, segments: list[Segment]) -> None:
        if self.spool is not None:
            for seg in segments:
                self.spool.committed(seg, not self.failed)

    def _write(
        self,
        journal: Sequence[_Journal],
        settles: Sequence[_Settle],
        owners: dict[int, str],
    ) -> tuple[set[int], list[tuple[int, list[_Settle], list[ledger.Settled]]], list[Released]]:
        by_job: dict[int, list[_Settle]] = {}
        for e in settles:
            by_job.setdefault(e.msg.job_id, []).append(e)
        rows = {job_id: attempt_rows(job_id, [e.result for e in g]) for job_id, g in by_job.items()}
        # a reply whose item settles in this same commit is written once, by the settle
        settling = {(r["item_id"], r["step"]) for rs in rows.values() for r in rs}
        calls = [
            e.row
            for e in journal
            if e.done is not None or (e.row["item_id"], e.row["step"]) not in settling
        ]
        with self.rt.sessions.begin() as session:
            # one lookup (and lock) of every item this commit writes for
            current = ledger.leases(
                session, {r["item_id"] for r in calls} | {e.result.pk for e in settles}
            )
            lost = ledger.journal(session, calls, owners, held=_ours(current, owners))
            kept = []
            spent: dict[int, tuple[str, int]] = {}
            for job_id, group in by_job.items():
                pipeline = self.rt.engine_for(job_id).pipeline
                done = ledger.settle(
                    session,
                    {e.result.pk: e.token for e in group},
                    rows[job_id],
                    [settled_of(e.msg.tier_index, e.tier, e.result) for e in group],
                    drop_text=not pipeline.store_text,
                    held=_ours(current, {e.result.pk: e.token for e in group}),
                )
                nanos = sum(s.cost_nanos + s.calibration_nanos for s in done)
                spent[job_id] = (pipeline.name, nanos)
                stop = [s for s in done if s.decision in STOPS_JOB]
                if stop:
                    repo.pause_job(session, job_id, stop[0].error or "spend limit reached")
                kept.append((job_id, group, done))
            freed = ledger.released(session)
            # last: every worker adds to these two rows, locked from here to the commit
            for job_id, (name, nanos) in spent.items():
                repo.add_spend(session, job_id, name, nanos)
        return lost, kept, freed

    # -- follow-ups ----------------------------------------------------------------
    def _route(self, job_id: int, group: list[_Settle], done: list[ledger.Settled]) -> None:
        by_pk = {e.result.pk: e for e in group}
        for (tier, phase), entries in _by_visit(group).items():
            results = [e.result for e in entries]
            mine = [s for s in done if (by_pk[s.pk].tier, by_pk[s.pk].msg.phase) == (tier, phase)]
            metrics.record(tier, results, [s.decision for s in mine])
            log.info(
                "cascade.batch.settled",
                job_id=job_id,
                tier=tier,
                phase=str(phase),
                items=len(mine),
                lost_lease=len(entries) - len(mine),
                **Counter(str(s.decision) for s in mine),
            )
        stopped = [s for s in done if s.decision in STOPS_JOB]
        if stopped:
            log.error("cascade.job.paused", job_id=job_id, why=stopped[0].error)
        now = self._clock()
        for s in done:
            found = destination(by_pk[s.pk].msg.tier_index, s.decision)
            if found is None:
                continue
            tier_index, phase = found
            if TRANSITIONS[s.decision].later:  # a deferral waits on its own countdown
                wait = countdown([by_pk[s.pk].result.decision], self.rt.settings)
                self._outbox.put([Message(phase, job_id, tier_index, [s.pk], countdown=wait)])
                continue
            self._routes.setdefault((job_id, tier_index, phase), _Route(since=now)).ids.append(s.pk)
        if any(s.decision in FINAL_VERDICTS for s in done):
            self._finishing.add(job_id)

    def _finish(self) -> None:
        """Jobs whose items may all be final now are marked done (one check per job)."""
        jobs, self._finishing = self._finishing, set()
        for job_id in sorted(jobs):
            try:
                if with_db_retry(partial(self._done_now, job_id)):
                    log.info("cascade.job.done", job_id=job_id)
            except Exception as exc:  # the next check tries again
                self._finishing.add(job_id)
                log.warning("cascade.job.finish_failed", job_id=job_id, error=repr(exc))

    def _done_now(self, job_id: int) -> bool:
        with self.rt.sessions.begin() as session:
            return repo.finish_job_if_done(session, job_id)

    def _due(self, *, force: bool = False) -> None:
        now = self._clock()
        for key, route in list(self._routes.items()):
            job_id, tier_index, phase = key
            size = self.rt.batch_size(job_id, tier_index, phase)
            if force or len(route.ids) >= size or now - route.since >= ROUTE_WAIT_S:
                del self._routes[key]
                self._outbox.put(
                    [Message(phase, job_id, tier_index, ids) for ids in chunks(route.ids, size)]
                )
        if self._finishing and (force or now >= self._next_finish):
            self._next_finish = now + FINISH_EVERY_S
            self._finish()
        if now >= self._next_beat:
            self._next_beat = now + self._beat_s
            self._heartbeat()
        self._breaker_changes()
        if now >= self._next_sweep and not force:
            self._next_sweep = now + self.rt.settings.sweep_every_s
            self._outbox.put(_SWEEP)

    def _heartbeat(self) -> None:
        tokens = self.pool.tokens()
        if not tokens:
            return
        try:
            with self.rt.sessions.begin() as session:
                ledger.extend_leases(session, tokens, self.rt.settings.lease_seconds)
        except Exception as exc:  # the next beat tries again; a lease is three beats long
            log.warning("cascade.ledger.heartbeat_failed", error=type(exc).__name__)

    def _breaker_changes(self) -> None:
        """Log and store the breaker transitions this process saw."""
        pending = self.rt.executor().transitions
        changes = []
        while pending:
            changes.append(pending.pop(0))  # the loop thread appends as we take
        if not changes:
            return
        by_job: dict[int | None, list[BreakerChange]] = {}
        for c, job_id in changes:
            metrics.breaker_state(c.key, c.to_state)
            log.warning(
                f"cascade.breaker.{c.to_state}",
                breaker=c.key,
                from_state=c.from_state,
                reason=c.reason,
            )
            change = BreakerChange(c.key, c.from_state, c.to_state, c.reason, c.at)
            by_job.setdefault(job_id, []).append(change)

        def write() -> None:
            with self.rt.sessions.begin() as session:
                for job_id, events in by_job.items():
                    add_breaker_events(session, events, job_id=job_id, worker=worker_name())

        try:
            with_db_retry(write)
        except Exception as exc:
            log.error("cascade.breaker.events_lost", events=len(changes), error=repr(exc))

    # -- the publisher thread ------------------------------------------------------------
    def _send(self) -> None:
        while True:
            item = self._outbox.get()
            if item is _STOP:
                return
            try:
                if item is _SWEEP:
                    if self.spool is not None:  # dead processes' replies first
                        replay(self.rt, self.spool.directory)
                    sweep_once(self.rt, self.rt.settings.sweep_idle_s, shared=True)
                else:
                    publish(self.rt, item)
            except Exception as exc:
                log.error("cascade.publish.error", error=repr(exc))


_SWEEP = object()


def _by_visit(group: list[_Settle]) -> dict[tuple[str, Phase], list[_Settle]]:
    out: dict[tuple[str, Phase], list[_Settle]] = {}
    for e in group:
        out.setdefault((e.tier, e.msg.phase), []).append(e)
    return out


def _ours(current: dict[int, str | None], tokens: dict[int, str]) -> set[int]:
    """The items whose lease is still the token we hold them under."""
    return {pk for pk, token in tokens.items() if current.get(pk) == token}


def _resolve(done: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if done is None:
        return

    def resolve() -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    done.get_loop().call_soon_threadsafe(resolve)

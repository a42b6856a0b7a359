"""A tier in ``mode = "batch"``: submit its items as Message Batches, poll, collect, settle.

- :func:`start_batch` (called by the flow right after the claim) writes one
  ``message_batches`` row per batch *before* calling the API, stores the API's id
  right after, and schedules the first poll. The items stay leased (~25 h) under the
  claim's token, so a redelivered tier message claims nothing and submits nothing.
- ``cascade.poll_batch`` retrieves the batch; while it runs, it polls again with a
  growing countdown (capped far below the broker's 1 h visibility timeout); when it
  has ended, it collects the results, decides each item exactly like a realtime answer
  (:meth:`Engine.results_from_tries`, batch-priced) and settles them through
  :func:`tasks.settle.settle_and_route`: escalations go to the next tier (its own batch),
  errored and expired requests to the fallback path, like realtime failures.
- ``cascade.poll_open_batches`` (beat) is the sweeper for batches: it re-polls every
  open batch whose poll is overdue (its message was lost, its worker killed) and
  releases the items of a submit that never stored its batch id.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from celery import Task

from common.lifecycle import BatchStatus, Phase
from common.logs import get_logger
from models import batches_repo
from models.ledger import Claimed
from models.repo import utcnow
from tasks.app import INFRA_RETRY, app, beat_job
from tasks.messages import Message
from tasks.publish import publish
from tasks.queues import tier_queue
from tasks.runtime import Runtime, get_runtime
from tasks.settle import settle_and_route
from workers.batch import PollPlan, custom_id, match_results, request_bytes, split
from workers.engine import Engine
from workers.moderation import mark_disagreements
from workers.pipeline import ClaudeTier, ModelRef
from workers.providers.base import BatchProvider, ClassifyRequest, ProviderError, TransientError
from workers.records import WorkItem
from workers.retry import Try, backoff_delay

log = get_logger("cascade.batches")
T = TypeVar("T")
# A poll this late (beyond its countdown) is taken to be lost; a submit this old, stalled.
OVERDUE_S = 120
STALLED_SUBMIT_S = 600


def batch_provider(rt: Runtime, name: str) -> BatchProvider:
    provider = rt.provider(name)
    batches = getattr(provider, "batches", None)
    if batches is None:
        raise TypeError(f"provider {name!r} has no Message Batches API")
    return cast(BatchProvider, batches)


def _with_retry(rt: Runtime, call: Callable[[], Awaitable[T]]) -> T:
    """A batch API call under the same retry policy as a model call (transient errors only)."""

    async def run() -> T:
        failures = 0
        rng = random.Random()
        while True:
            try:
                return await call()
            except TransientError as exc:
                failures += 1
                delay = backoff_delay(rt.policy, failures, exc.retry_after_s, rng)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    return rt.run(run())


def start_batch(
    rt: Runtime, engine: Engine, msg: Message, claimed: Sequence[Claimed], token: str
) -> None:
    """Submit the claimed items of a batch tier as one or more Message Batches."""
    tier = engine.pipeline.tiers[msg.tier_index]
    assert isinstance(tier, ClaudeTier)
    link = tier.primary
    requests = {c.pk: engine.request(tier, link, c.text) for c in claimed}
    texts = {c.pk: c.text for c in claimed}
    groups = split([(c.pk, c.steps) for c in claimed], lambda e: request_bytes(requests[e[0]]))
    with rt.sessions.begin() as session:
        row_ids = batches_repo.add_batches(
            session,
            job_id=msg.job_id,
            tier_index=msg.tier_index,
            tier=tier.name,
            provider=link.provider,
            model=link.model,
            mechanism=engine.mechanism(tier, link.model),
            token=token,
            groups=groups,
        )
    for row_id, group in zip(row_ids, groups, strict=True):
        _submit(rt, engine, msg, tier, link, row_id, group, requests, texts, token)


def _submit(
    rt: Runtime,
    engine: Engine,
    msg: Message,
    tier: ClaudeTier,
    link: ModelRef,
    row_id: int,
    group: Sequence[tuple[int, int]],
    requests: dict[int, ClassifyRequest],
    texts: dict[int, str],
    token: str,
) -> None:
    provider = batch_provider(rt, link.provider)
    body = [(custom_id(pk, step), requests[pk]) for pk, step in group]
    try:
        batch_id = _with_retry(rt, lambda: provider.create_batch(body))
    except ProviderError as exc:
        # The API refused the whole batch: each item takes the realtime failure path.
        log.warning("cascade.batch.submit_failed", row=row_id, error=str(exc))
        with rt.sessions.begin() as session:
            batches_repo.mark_failed(session, row_id, BatchStatus.FAILED, str(exc))
        items = [WorkItem(pk, texts[pk], step) for pk, step in group]
        tries = [[Try(None, exc, 0)] for _ in items]
        results = engine.results_from_tries(
            msg.tier_index, items, link, tries, role="primary", is_batch=True
        )
        sub = Message(Phase.TIER, msg.job_id, msg.tier_index, [pk for pk, _ in group])
        publish(rt, settle_and_route(rt, sub, tier.name, token, results))
        return
    plan = PollPlan(tier.poll_seconds)
    poll_token = batches_repo.new_poll_token()
    delay = plan.delay(0)
    with rt.sessions.begin() as session:
        batches_repo.mark_submitted(
            session, row_id, batch_id, poll_token, utcnow() + timedelta(seconds=delay)
        )
    log.info("cascade.batch.submitted", row=row_id, batch_id=batch_id, requests=len(group))
    poll_batch.apply_async(args=(row_id, poll_token), countdown=delay, queue=tier_queue(tier.name))


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def poll_once(rt: Runtime, row_id: int, poll_token: str) -> str:
    """One look at a submitted batch: poll again later, or collect. Returns what happened."""
    with rt.sessions() as session:
        row = batches_repo.get_batch(session, row_id)
    if row is None or row.status != BatchStatus.IN_PROGRESS or row.poll_token != poll_token:
        return "stale"
    assert row.batch_id is not None
    engine = rt.engine_for(row.job_id)
    tier = engine.pipeline.tiers[row.tier_index]
    plan = PollPlan(tier.poll_seconds if isinstance(tier, ClaudeTier) else 30.0)
    provider = batch_provider(rt, row.provider)
    batch_id = row.batch_id
    try:
        status = _with_retry(rt, lambda: provider.retrieve_batch(batch_id))
        counts, ended = status.counts, status.ended
    except ProviderError as exc:
        log.warning("cascade.batch.poll_failed", row=row_id, error=str(exc))
        counts, ended = row.counts or {}, False
    # An ended batch is collected now; should that fail or the worker die, the
    # recovery re-polls after the longest poll interval.
    delay = plan.cap_s if ended else plan.delay(row.poll_count + 1)
    with rt.sessions.begin() as session:
        mine = batches_repo.record_poll(
            session,
            row_id,
            poll_token,
            counts,
            ended=ended,
            next_poll_at=utcnow() + timedelta(seconds=delay),
        )
    if not mine:
        return "stale"
    if not ended:
        poll_batch.apply_async(
            args=(row_id, poll_token), countdown=delay, queue=tier_queue(row.tier)
        )
        return BatchStatus.IN_PROGRESS
    _collect(rt, engine, row_id, provider)
    return BatchStatus.COLLECTED


def _collect(rt: Runtime, engine: Engine, row_id: int, provider: BatchProvider) -> None:
    with rt.sessions() as session:
        row = batches_repo.get_batch(session, row_id)
        assert row is not None and row.batch_id is not None
        pairs = [(int(pk), int(step)) for pk, step in row.items]
        held = {
            h.pk: h
            for h in batches_repo.held_items(session, [pk for pk, _ in pairs], row.lease_token)
        }
    batch_id = row.batch_id
    results = _with_retry(rt, lambda: provider.batch_results(batch_id, row.mechanism))
    keep = [(pk, step) for pk, step in pairs if pk in held]
    submitted = _aware(row.submitted_at) or utcnow()
    latency_ms = max(int((utcnow() - submitted).total_seconds() * 1000), 0)
    tries = match_results([custom_id(pk, step) for pk, step in keep], results, latency_ms)
    items = [WorkItem(pk, held[pk].text, held[pk].steps) for pk, _ in keep]
    link = ModelRef(provider=cast(Any, row.provider), model=row.model)
    decided = engine.results_from_tries(
        row.tier_index, items, link, tries, role="primary", is_batch=True
    )
    # as the realtime path does: a contradicted answer goes to a person, where asked for
    below = {pk: held[pk].label for pk, _ in keep}
    mark_disagreements(engine.pipeline, row.tier_index, below, decided)
    msg = Message(Phase.TIER, row.job_id, row.tier_index, [pk for pk, _ in keep])
    out = settle_and_route(rt, msg, row.tier, row.lease_token, decided)
    publish(rt, out)
    with rt.sessions.begin() as session:
        batches_repo.mark_collected(session, row_id)
    log.info("cascade.batch.collected", row=row_id, batch_id=batch_id, results=len(results),
             settled=len(keep), already_settled=len(pairs) - len(keep))  # fmt: skip


def recover_once(
    rt: Runtime, overdue_s: float = OVERDUE_S, stalled_s: float = STALLED_SUBMIT_S
) -> int:
    """Re-poll open batches whose poll is overdue; release stalled submits. Returns rows seen."""
    now = utcnow()
    with rt.sessions.begin() as session:
        rows = batches_repo.overdue_batches(
            session,
            polls_before=now - timedelta(seconds=overdue_s),
            submits_before=now - timedelta(seconds=stalled_s),
        )
    for r in rows:
        if r.status == BatchStatus.IN_PROGRESS:
            with rt.sessions.begin() as session:
                token = batches_repo.take_over_poll(session, r.id)
            if token is not None:
                log.warning("cascade.batch.repoll", row=r.id)
                poll_batch.apply_async(args=(r.id, token), queue=tier_queue(r.tier))
            continue
        # A submit that never stored its batch id: the items go back to their tier.
        # (Should the API have accepted it in that instant, its results are never read.)
        with rt.sessions.begin() as session:
            row = batches_repo.get_batch(session, r.id)
            assert row is not None
            batches_repo.mark_failed(
                session, r.id, BatchStatus.ABANDONED, "the submit never completed"
            )
            ids = batches_repo.release_items(
                session, [int(pk) for pk, _ in row.items], row.lease_token
            )
        log.warning("cascade.batch.abandoned", row=r.id, items=len(ids))
        publish(rt, [Message(Phase.TIER, r.job_id, r.tier_index, ids)] if ids else [])
    return len(rows)


@app.task(name="cascade.poll_batch", bind=True, **INFRA_RETRY)
def poll_batch(self: Task[Any, Any], row_id: int, poll_token: str) -> str:
    return poll_once(get_runtime(), row_id, poll_token)


@app.task(name="cascade.poll_open_batches")
@beat_job
def poll_open_batches(overdue_s: float = OVERDUE_S, stalled_s: float = STALLED_SUBMIT_S) -> int:
    return recover_once(get_runtime(), overdue_s, stalled_s)

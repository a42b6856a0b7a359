"""What a tier task and the fallback task do, apart from Celery: claim, run, settle, route.

Returns the messages to publish instead of publishing them, so the flow is
testable and messages go out only after the database has committed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from common.logs import get_logger
from models import repo
from models.errors import DB_TRANSIENT
from models.repo import Claimed, Settled
from models.resilience import BreakerChange, active_drills, add_breaker_events
from tasks import metrics
from tasks.runtime import Runtime
from tasks.shadow import add_shadows
from workers.decision import (
    TEMPORARY_KINDS,
    Capped,
    Defer,
    Escalate,
    Fallback,
    GiveUp,
    after_chain,
    defer_delay,
    over_budget,
)
from workers.engine import Engine, decision_name
from workers.moderation import mark_disagreements
from workers.pipeline import ClaudeTier, LocalTier, ModelRef, RulesTier
from workers.records import ItemResult, WorkItem

if TYPE_CHECKING:
    from models.db import DbSession

log = get_logger("cascade.flow")
T = TypeVar("T")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Message:
    phase: str  # tier | fallback
    job_id: int
    tier_index: int
    ids: list[int]
    countdown: float = 0.0  # seconds before a worker should take it


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def attempt_rows(job_id: int, results: Sequence[ItemResult]) -> list[dict[str, Any]]:
    return [
        {
            "job_id": job_id,
            "item_id": s.item_pk,
            "step": s.step,
            "tier_index": s.tier_index,
            "tier": s.tier,
            "role": s.role,
            "provider": s.provider,
            "model": s.model,
            "outcome": s.outcome,
            "decision": s.decision,
            "label": s.label,
            "confidence": s.confidence,
            "hedged": s.hedged,
            "input_tokens": s.usage.input_tokens,
            "output_tokens": s.usage.output_tokens,
            "cache_write_tokens": s.usage.cache_write_tokens,
            "cache_read_tokens": s.usage.cache_read_tokens,
            "is_batch": s.is_batch,
            "cost_nanos": s.cost_nanos,
            "latency_ms": s.latency_ms,
            "http_status": s.http_status,
            "error": s.error,
            "request_id": s.request_id,
        }
        for r in results
        for s in r.steps
    ]


def settled_of(tier_index: int, tier: str, result: ItemResult) -> Settled:
    d = result.decision
    label = getattr(d, "label", None)
    confidence = getattr(d, "confidence", None)
    answered = result.decided_step  # checks and shadow samples come after it
    if isinstance(d, Escalate) and answered is not None and answered.label is not None:
        # keep the lower tier's answer: a budget may cap the item with it later
        label, confidence = answered.label, answered.confidence
    return Settled(
        pk=result.pk,
        decision=decision_name(d),
        tier_index=tier_index,
        tier=d.tier if isinstance(d, Capped) and d.tier else tier,
        steps=len(result.steps),
        model_calls=result.model_calls,
        cost_nanos=result.cost_nanos,
        latency_ms=result.latency_ms,
        fallback_used=result.served_by_fallback,
        baseline_nanos=result.baseline_nanos,
        calibration_nanos=result.calibration_nanos,
        label=label,
        confidence=confidence,
        reason=getattr(d, "reason", None),
        error=getattr(d, "why", None) if isinstance(d, Capped) or not label else None,
    )


def _error_kind(reason: str | None) -> str:
    """The failure kind at the head of a recorded reason (``"transient: HTTP 529 ..."``)."""
    head = (reason or "").split(":", 1)[0]
    return head if head in TEMPORARY_KINDS or head in ("permanent", "context") else "answer"


def _run_fallback_chain(
    rt: Runtime,
    engine: Engine,
    tier_index: int,
    claimed: Sequence[Claimed],
    disabled: Mapping[str, str],
) -> list[ItemResult]:
    """Serve what the tier's primary could not: its fallback models in order.

    An item deferred before tries the whole chain again, primary first (it may be
    back). When every link fails, the item is deferred while any failure may pass
    with time (transient, breaker open, drill), else — or once its deferral budget
    is spent — it is dead-lettered with every reason recorded.
    """
    tier = engine.pipeline.tiers[tier_index]
    assert isinstance(tier, ClaudeTier)
    results: list[ItemResult] = []
    fresh = [c for c in claimed if c.deferrals == 0]
    again = [c for c in claimed if c.deferrals > 0]
    for group, links in ((fresh, tier.fallbacks), (again, tier.chain)):
        if group:
            results += _chain(rt, engine, tier_index, tier, group, links, disabled)
    return results


def _chain(
    rt: Runtime,
    engine: Engine,
    tier_index: int,
    tier: ClaudeTier,
    claimed: Sequence[Claimed],
    links: Sequence[ModelRef],
    disabled: Mapping[str, str],
) -> list[ItemResult]:
    waiting = {c.pk: WorkItem(c.pk, c.text, c.steps) for c in claimed}
    deferrals = {c.pk: c.deferrals for c in claimed}
    merged: dict[int, ItemResult] = {}
    primary = tier.primary.key
    reasons = {c.pk: [f"{primary}: {c.error}" if c.error else primary] for c in claimed}
    kinds = {c.pk: [_error_kind(c.error)] for c in claimed}
    for link in links:
        if not waiting:
            break
        role = "primary" if link == tier.primary else "fallback"
        batch = rt.run(
            engine.run_model(tier_index, list(waiting.values()), link, role=role, disabled=disabled)
        )
        for res in batch:
            new_steps = len(res.steps)
            prior = merged.get(res.pk)
            if prior is not None:
                res.steps = prior.steps + res.steps
                res.served_by_fallback = res.served_by_fallback or prior.served_by_fallback
            merged[res.pk] = res
            if isinstance(res.decision, Fallback):
                reasons[res.pk].append(f"{link.key}: {res.decision.why}")
                kinds[res.pk].append(res.steps[-1].outcome if res.steps else "answer")
                item = waiting[res.pk]
                waiting[res.pk] = WorkItem(item.pk, item.text, item.next_step + new_steps)
            else:
                del waiting[res.pk]
    for pk, item in waiting.items():
        tried = "; ".join(reasons[pk])
        why = (
            f"no model of tier {tier.name!r} could answer: {tried}"
            if tier.fallbacks
            else f"no fallback model is configured for tier {tier.name!r}: {tried}"
        )
        decision = after_chain(kinds[pk], deferrals[pk], rt.settings.max_deferrals, why)
        res = merged.get(pk) or ItemResult(pk, decision)
        res.decision = decision
        if isinstance(decision, GiveUp):
            res.baseline_nanos = engine.baseline(len(item.text), None)
        if res.steps:
            res.steps[-1] = replace(res.steps[-1], decision=decision_name(decision))
        merged[pk] = res
    return list(merged.values())


# A batch tier's items stay claimed while the API works (up to 24 h) and the poll collects.
BATCH_LEASE_S = 25 * 3600


def _is_batch_tier(rt: Runtime, msg: Message) -> bool:
    tier = rt.engine_for(msg.job_id).pipeline.tiers[msg.tier_index]
    return msg.phase == "tier" and isinstance(tier, ClaudeTier) and tier.mode == "batch"


def process(rt: Runtime, msg: Message) -> list[Message]:
    """Claim, run and settle one batch. Returns the follow-up messages to publish."""
    visited = rt.engine_for(msg.job_id).pipeline.tiers[msg.tier_index]
    # A free tier that sends shadow samples makes model calls: those need a lease.
    if (
        msg.phase == "tier"
        and isinstance(visited, RulesTier | LocalTier)
        and not visited.shadow_rate
    ):
        return _process_free(rt, msg, visited)
    token = repo.new_token()
    batched = _is_batch_tier(rt, msg)
    with rt.sessions.begin() as session:
        claimed = repo.claim(
            session,
            msg.job_id,
            msg.tier_index,
            msg.ids,
            phase=msg.phase,
            token=token,
            lease_s=BATCH_LEASE_S if batched else rt.settings.lease_seconds,
        )
        disabled = active_drills(session) if claimed else {}
    if not claimed:
        log.info("cascade.batch.nothing_to_do", job_id=msg.job_id, tier_index=msg.tier_index)
        return []
    engine = rt.engine_for(msg.job_id)
    tier = engine.pipeline.tiers[msg.tier_index]
    structlog.contextvars.bind_contextvars(job_id=msg.job_id, tier=tier.name, phase=msg.phase)
    held: list[ItemResult] = []
    if isinstance(tier, ClaudeTier):
        claimed, held = _budget_gate(rt, engine, msg, tier, claimed)
    items = [WorkItem(c.pk, c.text, c.steps) for c in claimed]
    if batched and claimed:  # submitted as Message Batches; a poll task settles them when they end
        from tasks.batches import start_batch

        start_batch(rt, engine, msg, claimed, token)
        out = settle_and_route(rt, msg, tier.name, token, held) if held else []
        structlog.contextvars.unbind_contextvars("job_id", "tier", "phase")
        return out
    if not claimed:
        results = []
    elif msg.phase == "fallback":
        results = _run_fallback_chain(rt, engine, msg.tier_index, claimed, disabled)
    elif isinstance(tier, RulesTier):
        results = engine.run_rules(msg.tier_index, items)
    elif isinstance(tier, LocalTier):
        results = engine.run_local(msg.tier_index, items)
    else:
        results = rt.run(
            engine.run_model(msg.tier_index, items, tier.primary, role="primary", disabled=disabled)
        )
    add_shadows(rt, msg, items, results, disabled)  # tasks/shadow.py: phase "tier" only
    mark_disagreements(engine.pipeline, msg.tier_index, {c.pk: c.label for c in claimed}, results)
    _record_breaker_changes(rt, msg.job_id)
    out = settle_and_route(rt, msg, tier.name, token, [*results, *held])
    structlog.contextvars.unbind_contextvars("job_id", "tier", "phase")
    return out


def _process_free(rt: Runtime, msg: Message, tier: RulesTier | LocalTier) -> list[Message]:
    """A rules or local tier: take, decide and settle in one transaction.

    Deciding takes microseconds per item, so no lease is needed to cover it: the
    items are taken and settled by the same transaction, and a worker that dies
    midway rolls it back, leaving them waiting for the next copy of the message.
    """

    def write() -> tuple[list[ItemResult], list[Settled]]:
        with rt.sessions.begin() as session:
            return decide_free(rt, session, msg.job_id, msg.tier_index, msg.ids)

    results, kept = with_db_retry(write)
    if not results:
        log.info("cascade.batch.nothing_to_do", job_id=msg.job_id, tier_index=msg.tier_index)
        return []
    structlog.contextvars.bind_contextvars(job_id=msg.job_id, tier=tier.name, phase=msg.phase)
    try:
        return route(rt, msg, tier.name, results, kept)
    finally:
        structlog.contextvars.unbind_contextvars("job_id", "tier", "phase")


def decide_free(
    rt: Runtime, session: DbSession, job_id: int, tier_index: int, ids: Sequence[int]
) -> tuple[list[ItemResult], list[Settled]]:
    """Take, decide and settle items of a free tier (rules, local) in ``session``'s transaction."""
    engine = rt.engine_for(job_id)
    token = repo.new_token()
    taken = repo.take(session, job_id, tier_index, ids, token=token)
    if not taken:
        return [], []
    items = [WorkItem(c.pk, c.text, c.steps) for c in taken]
    results, settled = decide_items(engine, tier_index, items)
    kept = repo.settle(
        session,
        token,
        attempt_rows(job_id, results),
        settled,
        drop_text=not engine.pipeline.store_text,
        taken={c.pk for c in taken},
    )
    return results, kept


def decide_items(
    engine: Engine, tier_index: int, items: Sequence[WorkItem]
) -> tuple[list[ItemResult], list[Settled]]:
    """A free tier (rules, local) on ``items``: each result and how its item leaves the tier."""
    tier = engine.pipeline.tiers[tier_index]
    if isinstance(tier, RulesTier):
        results = engine.run_rules(tier_index, items)
    else:
        results = engine.run_local(tier_index, items)
    return results, [settled_of(tier_index, tier.name, r) for r in results]


def _budget_gate(
    rt: Runtime, engine: Engine, msg: Message, tier: ClaudeTier, claimed: list[Claimed]
) -> tuple[list[Claimed], list[ItemResult]]:
    """Admit only the items whose worst-case call the budget can still pay for.

    The rest keep a lower tier's answer (``budget_capped``) or wait (``paused_budget``).
    Spend is counted as calls finish, so concurrent batches can overspend by at most
    their own in-flight worst cases: workers × CASCADE_BATCH_SIZE × one call.
    """
    daily = engine.pipeline.daily_budget_usd
    with rt.sessions() as session:
        left = repo.budget_left(
            session, msg.job_id, None if daily is None else int(daily * 1_000_000_000)
        )
    if left is None:
        return claimed, []
    links = tier.chain if msg.phase == "fallback" else [tier.primary]
    admitted: list[Claimed] = []
    held: list[ItemResult] = []
    for c in claimed:
        worst = engine.worst_case_nanos(tier, links, c.text)
        if worst <= left:
            admitted.append(c)
            left -= worst
        else:
            why = f"budget reached before tier {tier.name!r}"
            below = engine.pipeline.tiers[msg.tier_index - 1].name if msg.tier_index else ""
            held.append(ItemResult(c.pk, over_budget(c.label, c.confidence, why, below)))
    if held:
        log.warning("cascade.budget.reached", held=len(held), admitted=len(admitted))
    return admitted, held


def _record_breaker_changes(rt: Runtime, job_id: int) -> None:
    """Log and store the breaker transitions this process saw during the batch."""
    executor = rt.executor()
    changes, executor.transitions = executor.transitions, []
    if not changes:
        return
    for c in changes:
        metrics.breaker_state(c.key, c.to_state)
        log.warning(
            f"cascade.breaker.{c.to_state}",
            breaker=c.key,
            from_state=c.from_state,
            reason=c.reason,
        )
    events = [BreakerChange(c.key, c.from_state, c.to_state, c.reason, c.at) for c in changes]

    def write() -> None:
        with rt.sessions.begin() as session:
            add_breaker_events(session, events, job_id=job_id, worker=worker_name())

    with_db_retry(write)


def with_db_retry(
    write: Callable[[], T], *, tries: int = 12, base_s: float = 0.5, cap_s: float = 10.0
) -> T:
    """Run a write, retrying on connection-level database errors (about a minute in all)."""
    for n in range(tries):
        try:
            return write()
        except DB_TRANSIENT as exc:
            if n == tries - 1:
                raise
            delay = min(cap_s, base_s * 2**n)
            log.warning("cascade.db.retry", attempt=n + 1, delay_s=delay, error=type(exc).__name__)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def settle_and_route(
    rt: Runtime, msg: Message, tier_name: str, token: str, results: Sequence[ItemResult]
) -> list[Message]:
    """Write the results of a tier visit under the claim's token; return the follow-ups.

    Shared by every way a tier can run (realtime calls, rules, a collected Message Batch).
    """
    settled = [settled_of(msg.tier_index, tier_name, r) for r in results]
    pipeline = rt.engine_for(msg.job_id).pipeline
    rows = attempt_rows(msg.job_id, results)

    def write() -> list[Settled]:
        with rt.sessions.begin() as session:
            kept = repo.settle(session, token, rows, settled, drop_text=not pipeline.store_text)
            spent = sum(s.cost_nanos + s.calibration_nanos for s in kept)
            repo.add_spend(session, msg.job_id, pipeline.name, spent)
            paused = [s for s in kept if s.decision in ("pause", "hold")]
            if paused:
                repo.pause_job(session, msg.job_id, paused[0].error or "spend limit reached")
            return kept

    # The calls are made and paid for: keep trying to record them while the database
    # is away (a restart, a dropped connection) rather than lose them with the task.
    kept = with_db_retry(write)
    return route(rt, msg, tier_name, results, kept)


def route(
    rt: Runtime,
    msg: Message,
    tier_name: str,
    results: Sequence[ItemResult],
    kept: Sequence[Settled],
    *,
    finish: bool = True,
) -> list[Message]:
    """After a tier visit is recorded: metrics, logs, and the follow-up messages.

    ``finish``: see whether that was the job's last item (not while it is still being
    submitted: `cascade submit` does it when the file is in).
    """
    paused = [s for s in kept if s.decision in ("pause", "hold")]
    metrics.record(tier_name, results, [s.decision for s in kept])
    escalated = [s.pk for s in kept if s.decision == "escalate"]
    to_fallback = [s.pk for s in kept if s.decision == "fallback"]
    deferred = [s.pk for s in kept if s.decision == "defer"]
    counts = {
        d: sum(1 for s in kept if s.decision == d)
        for d in ("accept", "escalate", "fallback", "fail", "defer", "pause", "capped", "hold")
    }
    log.info(
        "cascade.batch.settled", items=len(kept), lost_lease=len(results) - len(kept), **counts
    )
    if paused:
        log.error("cascade.job.paused", job_id=msg.job_id, why=paused[0].error)
    for r in results:
        if isinstance(r.decision, Escalate):
            log.debug("cascade.item.escalated", item=r.pk, why=r.decision.why)
        elif isinstance(r.decision, GiveUp):
            log.warning("cascade.item.failed", item=r.pk, why=r.decision.why)
    size = rt.settings.batch_size
    up = rt.batch_size(msg.job_id, msg.tier_index + 1) if escalated else size
    out = [Message("tier", msg.job_id, msg.tier_index + 1, c) for c in chunks(escalated, up)]
    out += [Message("fallback", msg.job_id, msg.tier_index, c) for c in chunks(to_fallback, size)]
    if deferred:
        # The deferral count is per item; the batch waits as long as its most deferred item.
        n = max(r.decision.n for r in results if isinstance(r.decision, Defer))
        wait = defer_delay(n, rt.settings.defer_base_s, rt.settings.defer_cap_s)
        log.warning("cascade.fallback.deferred", items=len(deferred), countdown_s=wait)
        out += [
            Message("fallback", msg.job_id, msg.tier_index, c, countdown=wait)
            for c in chunks(deferred, size)
        ]
    if not out and finish:

        def finish_job() -> bool:
            with rt.sessions.begin() as session:
                return repo.finish_job_if_done(session, msg.job_id)

        if with_db_retry(finish_job):
            log.info("cascade.job.done", job_id=msg.job_id)
    return out

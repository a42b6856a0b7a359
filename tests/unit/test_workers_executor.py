"""The realtime executor (workers/executor.py) with the fleet's circuit breaker: drills,
an open breaker, a breaker store that is down (fail open or closed), which failures
count as an outage, and the transitions it hands back with the job that caused them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence

import pytest

from workers.breaker import Admission, BreakerPolicy, Transition
from workers.executor import RealtimeExecutor, breaker_key
from workers.providers.base import (
    BreakerOpenError,
    CallTag,
    ClassifyRequest,
    DrillError,
    PermanentError,
    Provider,
    Reply,
    TransientError,
    Usage,
)
from workers.retry import LeaseLost, RetryPolicy, Try
from workers.stores import MemoryBreakerStore

MODEL = "claude-haiku-5-5"
KEY = f"anthropic:{MODEL}"
ONE_TRY = RetryPolicy(max_attempts=1)


class Scripted:
    """Answers each call with the next outcome of ``script`` ("ok", "transient", "permanent")."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.calls: list[str] = []

    async def classify(self, request: ClassifyRequest) -> Reply:
        self.calls.append(request.model)
        what = self.script.pop(0) if self.script else "ok"
        if what == "transient":
            raise TransientError("overloaded", status=529)
        if what == "permanent":
            raise PermanentError("bad request", status=400)
        answer = {"label": "billing", "confidence": 0.9, "reason": "r"}
        return Reply("tool_use", answer, "", Usage(10, 5))

    async def aclose(self) -> None:
        pass


def req(model: str = MODEL, job_id: int | None = 42) -> ClassifyRequest:
    tag = (
        None
        if job_id is None
        else CallTag(job_id, item_pk=1, first_step=1, tier_index=1, tier="small", role="primary")
    )
    return ClassifyRequest(
        "anthropic", model, "system", "<item>x</item>", ("billing",), 100, "tool", tag=tag
    )


def executor(
    provider: Provider,
    *,
    breakers: MemoryBreakerStore | None = None,
    clock: Callable[[], float] = lambda: 1000.0,
    allow_when_store_down: bool = True,
    lookup: Callable[[str], Provider] | None = None,
) -> RealtimeExecutor:
    async def no_sleep(_: float) -> None:
        pass

    return RealtimeExecutor(
        lookup or (lambda _: provider),
        ONE_TRY,
        4,
        breakers=breakers,
        sleep=no_sleep,
        clock=clock,
        rng=random.Random(0),
        allow_when_store_down=allow_when_store_down,
    )


def run(
    ex: RealtimeExecutor,
    requests: Sequence[ClassifyRequest],
    disabled: Mapping[str, str] | None = None,
) -> list[list[Try]]:
    return asyncio.run(ex.execute(requests, disabled=disabled))


def run_one_by_one(ex: RealtimeExecutor, requests: Sequence[ClassifyRequest]) -> list[list[Try]]:
    async def main() -> list[list[Try]]:
        return [(await ex.execute([r]))[0] for r in requests]

    return asyncio.run(main())


def test_breaker_key_names_provider_and_model() -> None:
    assert breaker_key("bedrock", MODEL) == f"bedrock:{MODEL}"


def test_a_drilled_model_is_not_called_and_the_others_are() -> None:
    provider = Scripted()

    out = run(executor(provider), [req(), req("claude-sonnet-5-5")], disabled={KEY: "game day"})

    assert provider.calls == ["claude-sonnet-5-5"]
    [drilled] = out[0]
    assert drilled.reply is None and isinstance(drilled.error, DrillError)
    assert drilled.error.message == f"chaos drill on {KEY}: game day"
    assert out[1][0].reply is not None


def test_outages_open_the_breaker_then_calls_are_refused_without_a_request() -> None:
    store = MemoryBreakerStore(BreakerPolicy(failure_threshold=2))
    provider = Scripted("transient", "transient")
    ex = executor(provider, breakers=store)

    out = run_one_by_one(ex, [req(job_id=7), req(job_id=8), req(job_id=9)])

    assert provider.calls == [MODEL, MODEL]  # the third call never left
    [refused] = out[2]
    assert isinstance(refused.error, BreakerOpenError)
    assert refused.error.message == f"circuit breaker open for {KEY}"
    # the transition is handed back with the job whose call caused it
    [(opened, job)] = ex.transitions
    assert (opened.key, opened.from_state, opened.to_state, job) == (KEY, "closed", "open", 8)
    assert asyncio.run(store.snapshot(KEY)).state == "open"


@pytest.mark.parametrize(
    ("script", "state"),
    [
        # a permanent error (a retired model, a bad request) is no outage
        (("permanent", "permanent", "permanent"), "closed"),
        # an answer arrived: no outage either
        (("ok", "ok", "ok"), "closed"),
        # transient failures are outages
        (("transient", "transient", "ok"), "open"),
    ],
)
def test_only_transient_failures_count_against_the_breaker(
    script: tuple[str, ...], state: str
) -> None:
    store = MemoryBreakerStore(BreakerPolicy(failure_threshold=2))
    ex = executor(Scripted(*script), breakers=store)

    run_one_by_one(ex, [req(), req(), req()])

    assert asyncio.run(store.snapshot(KEY)).state == state


def test_a_probe_that_succeeds_closes_the_breaker_and_each_move_is_reported() -> None:
    now = [0.0]
    store = MemoryBreakerStore(
        BreakerPolicy(failure_threshold=1, recovery_s=30, probe_successes_to_close=1)
    )
    ex = executor(Scripted("transient", "ok"), breakers=store, clock=lambda: now[0])

    run_one_by_one(ex, [req(job_id=1)])  # opens at t=0
    now[0] = 10.0
    [[refused]] = run_one_by_one(ex, [req(job_id=2)])  # still recovering
    now[0] = 31.0
    [[probe]] = run_one_by_one(ex, [req(job_id=3)])  # the first call after recovery probes

    assert isinstance(refused.error, BreakerOpenError)
    assert probe.reply is not None
    moves = [(t.from_state, t.to_state, t.reason, job) for t, job in ex.transitions]
    assert moves == [
        ("closed", "open", "failure_threshold", 1),
        ("open", "half_open", "recovery_elapsed", 3),
        ("half_open", "closed", "probes_succeeded", 3),
    ]


def test_a_transition_of_an_untagged_call_has_no_job() -> None:
    ex = executor(
        Scripted("transient"), breakers=MemoryBreakerStore(BreakerPolicy(failure_threshold=1))
    )

    run(ex, [req(job_id=None)])

    [(_, job)] = ex.transitions
    assert job is None


class DownStore(MemoryBreakerStore):
    """A breaker store whose admit or record fails, as a Redis outage would."""

    def __init__(self, *, admit_fails: bool, record_fails: bool) -> None:
        super().__init__(BreakerPolicy(failure_threshold=1))
        self.admit_fails, self.record_fails = admit_fails, record_fails

    async def admit(self, key: str, now: float) -> Admission:
        if self.admit_fails:
            raise ConnectionError("redis down")
        return await super().admit(key, now)

    async def record(self, key: str, now: float, ok: bool, was_probe: bool) -> Transition | None:
        if self.record_fails:
            raise ConnectionError("redis down")
        return await super().record(key, now, ok, was_probe)


def test_a_store_down_fails_open_by_default() -> None:
    provider = Scripted("ok")
    ex = executor(provider, breakers=DownStore(admit_fails=True, record_fails=True))

    [[attempt]] = run(ex, [req()])

    assert provider.calls == [MODEL]
    assert attempt.reply is not None
    assert ex.transitions == []


def test_a_store_down_fails_closed_when_told_to() -> None:
    provider = Scripted("ok")
    ex = executor(
        provider,
        breakers=DownStore(admit_fails=True, record_fails=False),
        allow_when_store_down=False,
    )

    [[attempt]] = run(ex, [req()])

    assert provider.calls == []
    assert isinstance(attempt.error, BreakerOpenError)
    assert attempt.error.message == f"breaker store unreachable for {KEY}"


def test_a_failed_record_keeps_the_calls_result_and_loses_only_the_transition() -> None:
    ex = executor(Scripted("transient"), breakers=DownStore(admit_fails=False, record_fails=True))

    [[attempt]] = run(ex, [req()])

    assert isinstance(attempt.error, TransientError) and attempt.error.status == 529
    assert ex.transitions == []


def test_a_provider_that_cannot_be_looked_up_is_one_internal_error() -> None:
    def lookup(name: str) -> Provider:
        raise KeyError(name)

    [[attempt]] = run(executor(Scripted(), lookup=lookup), [req()])

    assert attempt.reply is None and isinstance(attempt.error, TransientError)
    assert attempt.error.message == "internal error: KeyError"


def test_a_lost_lease_stops_the_visit_and_frees_the_cache_lead() -> None:
    class Journal:
        def __init__(self) -> None:
            self.lost = True

        async def sending(self, request: ClassifyRequest, n: int) -> None:
            if self.lost:
                raise LeaseLost(f"item {request.tag.item_pk if request.tag else 0}")

        def returned(self, request: ClassifyRequest, n: int, attempt: Try) -> None:
            pass

    provider = Scripted()
    journal = Journal()
    ex = executor(provider)
    ex.journal = journal
    cached = ClassifyRequest(
        "anthropic", MODEL, "s" * 10, "u", ("billing",), 100, "tool", cache_ttl="5m", tag=req().tag
    )

    async def main() -> list[list[Try]]:
        with pytest.raises(LeaseLost, match="item 1"):
            await ex.execute([cached])
        journal.lost = False
        # the lead this call took on the cold prefix was released: the next call goes
        return await asyncio.wait_for(ex.execute([cached]), 5)

    [[attempt]] = asyncio.run(main())

    assert provider.calls == [MODEL]
    assert attempt.reply is not None

"""Prompt caching: the plan (mark or not), the warmer, prices, the fake's emulation,
and the real SDK against the fake (usage fields, 5m/1h breakdown)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from cascade.fakeapi.cache import FakeCache, marked_prefix
from workers.caching import CachePlan, CacheWarmer, MemoryWarmStore, PrefixCheck
from workers.pipeline import ClaudeTier, PipelineError, load_pipeline
from workers.pricing import PriceTable
from workers.prompt import system_prompt
from workers.providers.anthropic import AnthropicProvider, build_params
from workers.providers.base import ClassifyRequest, Usage

LABELS = ("spam", "ok")
LONG = "Policy. " + "Define each label carefully with examples. " * 300  # ~3,200 tokens


def req(
    system: str = LONG, *, ttl: str | None = "5m", model: str = "claude-haiku-5-5"
) -> ClassifyRequest:
    return ClassifyRequest(
        provider="anthropic",
        model=model,
        system=system,
        user="Classify this item.\n<item>\nbuy now\n</item>",
        labels=LABELS,
        max_tokens=100,
        mechanism="forced_tool",
        cache_ttl=ttl,
    )


def tier(**kw: object) -> ClaudeTier:
    return ClaudeTier.model_validate({"name": "t", "kind": "claude", "model": "m", **kw})


# -- the plan ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("system", "min_tokens", "cache", "mode", "expected"),
    [
        (LONG, 512, "auto", "realtime", "5m"),  # long enough: marked, realtime TTL
        (LONG, 512, "auto", "batch", "1h"),  # batch tiers write for an hour
        (LONG, 512, "off", "realtime", None),  # the tier turned it off
        ("short", 512, "auto", "realtime", None),  # too short: the API would not cache it
        (LONG, 100_000, "auto", "realtime", None),  # the model needs a longer prefix
    ],
)
def test_plan_marks_only_a_cacheable_prefix(
    system: str, min_tokens: int, cache: str, mode: str, expected: str | None
) -> None:
    plan = CachePlan(lambda _m: system, LABELS, lambda _model: min_tokens)
    assert plan.ttl(tier(cache=cache, mode=mode), "m", "tool") == expected


def test_tier_ttl_overrides_the_mode_default() -> None:
    assert tier(mode="batch", cache_ttl="5m").ttl == "5m"
    assert tier(cache_ttl="1h").ttl == "1h"


def test_prefix_check_says_by_how_much() -> None:
    check = PrefixCheck("claude-haiku-4-5", tokens=1000, min_tokens=4096)
    assert not check.cacheable and check.short_by == 3096


# -- the provider marks the system block, never the user turn -----------------------
def test_build_params_marks_the_system_block_only() -> None:
    params = build_params(req(ttl="1h"))
    assert params["system"] == [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert params["messages"][0]["content"].startswith("Classify")  # a plain string
    assert "cache_control" not in str(params["messages"])
    assert build_params(req(ttl=None))["system"] == LONG


# -- prices -------------------------------------------------------------------------
def test_one_hour_writes_cost_more_than_five_minute_writes() -> None:
    prices = PriceTable.load()
    five = prices.cost_nanos("claude-haiku-5-5", Usage(cache_write_tokens=100_000))
    hour = prices.cost_nanos(
        "claude-haiku-5-5", Usage(cache_write_tokens=100_000, cache_write_1h_tokens=100_000)
    )
    read = prices.cost_nanos("claude-haiku-5-5", Usage(cache_read_tokens=100_000))
    assert (five, hour, read) == (12_500_000, 20_000_000, 1_000_000)


def test_minimum_cacheable_lengths_come_from_the_price_table() -> None:
    prices = PriceTable.load()
    assert prices.cache_min_tokens("claude-haiku-4-5") == 4096
    assert prices.cache_min_tokens("claude-sonnet-5") == 1024
    assert prices.cache_min_tokens("claude-opus-5-5") == 512
    assert prices.cache_min_tokens("unknown-model") == 1024


# -- the warmer -------------------------------------------------------------------
def test_one_call_goes_first_and_the_others_wait_for_it() -> None:
    async def main() -> list[str]:
        warmer = CacheWarmer(MemoryWarmStore())
        order: list[str] = []

        async def call(n: int) -> None:
            ticket = await warmer.before_call(req())
            order.append(f"start {n}")
            await asyncio.sleep(0.01)
            order.append(f"end {n}")
            await warmer.after_call(ticket, True)

        await asyncio.gather(*(call(n) for n in range(5)))
        return order

    order = asyncio.run(main())
    # the first call ends before any other starts; then the rest run together
    assert order[:2] == ["start 0", "end 0"]
    assert sorted(order[2:6]) == [f"start {n}" for n in range(1, 5)]


def test_a_failed_first_call_lets_the_waiting_calls_go_at_once() -> None:
    async def main() -> tuple[object, object]:
        warmer = CacheWarmer(MemoryWarmStore())
        first = await warmer.before_call(req())
        assert first is not None and first.first
        waiting = asyncio.create_task(warmer.before_call(req()))
        await asyncio.sleep(0)
        await warmer.after_call(first, False)
        # a failing model is not served one call at a time behind a new leader
        return await waiting, await warmer.before_call(req())

    assert asyncio.run(main()) == (None, None)


def test_unmarked_requests_never_wait() -> None:
    async def main() -> object:
        warmer = CacheWarmer(MemoryWarmStore())
        await warmer.before_call(req())  # a first call in flight, never reported
        return await warmer.before_call(req(ttl=None))

    assert asyncio.run(main()) is None


def test_the_warm_state_expires_with_the_ttl() -> None:
    now = [1000.0]

    async def main() -> tuple[object, object]:
        store = MemoryWarmStore()
        warmer = CacheWarmer(store, clock=lambda: now[0])
        await warmer.after_call(await warmer.before_call(req()), True)
        now[0] += 100  # within 5 minutes: warm (from the store)
        during = await CacheWarmer(store, clock=lambda: now[0]).before_call(req())
        now[0] += 300  # past it: one call goes first again
        after = await CacheWarmer(store, clock=lambda: now[0]).before_call(req())
        return during, after

    during, after = asyncio.run(main())
    assert during is None
    assert after is not None and getattr(after, "first", False)


# -- the fake's cache ------------------------------------------------------------
def body(system: object, model: str = "claude-haiku-5-5") -> dict[str, object]:
    return {
        "model": model,
        "max_tokens": 50,
        "system": system,
        "messages": [{"role": "user", "content": "<item>hi</item>"}],
    }


def marked(ttl: str = "5m") -> list[dict[str, object]]:
    return [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


def test_fake_cache_writes_then_reads_and_expires() -> None:
    now = [0.0]
    cache = FakeCache(clock=lambda: now[0])
    total = 1000 + 5
    first = cache.usage("claude-haiku-5-5", body(marked()), total)
    now[0] += 1
    second = cache.usage("claude-haiku-5-5", body(marked()), total)
    now[0] += 400  # 5 minutes after the last read
    third = cache.usage("claude-haiku-5-5", body(marked()), total)
    prefix = first["cache_creation_input_tokens"]
    assert prefix > 512 and first["input_tokens"] == total - prefix
    assert first["cache_creation"] == {
        "ephemeral_5m_input_tokens": prefix,
        "ephemeral_1h_input_tokens": 0,
    }
    assert second["cache_read_input_tokens"] == prefix and second["input_tokens"] == total - prefix
    assert third["cache_creation_input_tokens"] == prefix
    assert cache.stats()["claude-haiku-5-5"]["writes"] == 2


def test_fake_cache_requests_in_flight_during_the_write_write_too() -> None:
    cache = FakeCache(clock=lambda: 10.0)
    cache.usage("claude-haiku-5-5", body(marked()), 2000, arrived=9.0)  # completes at 10
    racing = cache.usage("claude-haiku-5-5", body(marked()), 2000, arrived=9.5)
    later = cache.usage("claude-haiku-5-5", body(marked()), 2000, arrived=10.0)
    assert racing["cache_creation_input_tokens"] > 0
    assert later["cache_read_input_tokens"] > 0


@pytest.mark.parametrize(
    ("system", "model", "cached"),
    [
        (LONG, "claude-haiku-5-5", False),  # not marked
        (marked(), "claude-haiku-4-5", False),  # ~850 tokens < 4,096 on Haiku 4.5
        (marked(), "claude-sonnet-5-5", True),
    ],
)
def test_fake_cache_needs_a_mark_and_the_minimum_length(
    system: object, model: str, cached: bool
) -> None:
    short = [{"type": "text", "text": LONG[:3400], "cache_control": {"type": "ephemeral"}}]
    usage = FakeCache().usage(model, body(short if system is not LONG else system, model), 900)
    assert (usage["cache_creation_input_tokens"] > 0) is cached


def test_marked_prefix_ignores_the_mark_in_the_key() -> None:
    a = marked_prefix(body(marked("5m")))
    b = marked_prefix(body([{"type": "text", "text": LONG}]))
    assert a is not None and b is None


# -- the SDK against the fake: realtime ----------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def test_sdk_reads_cache_usage_from_the_fake(server: FakeServer) -> None:
    server.reset()

    async def main() -> list[Usage]:
        provider = AnthropicProvider("anthropic", "sk-test", server.base_url, 5.0)
        try:
            return [(await provider.classify(req(ttl="1h"))).usage for _ in range(2)]
        finally:
            await provider.aclose()

    first, second = asyncio.run(main())
    assert first.cache_write_tokens > 0 and first.cache_write_1h_tokens == first.cache_write_tokens
    assert second.cache_read_tokens == first.cache_write_tokens and second.cache_write_tokens == 0
    assert server.stats()["cache"]["claude-haiku-5-5"]["writes"] == 1


# -- pipelines with real prefixes ----------------------------------------------------
def test_instructions_file_and_examples_go_into_the_prefix(tmp_path: Path) -> None:
    (tmp_path / "policy.md").write_text("# Policy\nSpam is unsolicited advertising.\n")
    (tmp_path / "p.toml").write_text(
        'name = "p"\nlabels = ["spam", "ok"]\ninstructions = "Moderate posts."\n'
        'instructions_file = "policy.md"\n'
        '[[examples]]\ntext = "BUY <cheap> pills"\nlabel = "spam"\n'
        '[[tiers]]\nname = "t"\nkind = "claude"\nmodel = "claude-haiku-5-5"\n'
    )
    pipeline = load_pipeline(tmp_path / "p.toml")
    system = system_prompt(pipeline, "tool")
    assert system.startswith("Moderate posts.\n\n# Policy\nSpam is unsolicited advertising.")
    assert "<text>\nBUY &lt;cheap&gt; pills\n</text>\n<label>spam</label>" in system
    assert "Labels: spam, ok.\n" in system  # the fake still finds the label line


def test_instructions_file_problems_are_reported(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(
        'name = "p"\nlabels = ["spam", "ok"]\ninstructions_file = "missing.md"\n'
        '[[tiers]]\nname = "t"\nkind = "claude"\nmodel = "claude-haiku-5-5"\n'
    )
    with pytest.raises(PipelineError, match="instructions_file: cannot read"):
        load_pipeline(tmp_path / "p.toml")


def test_example_labels_must_be_labels(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(
        'name = "p"\nlabels = ["spam", "ok"]\ninstructions = "x"\n'
        '[[examples]]\ntext = "a"\nlabel = "nope"\n'
        '[[tiers]]\nname = "t"\nkind = "claude"\nmodel = "claude-haiku-5-5"\n'
    )
    with pytest.raises(PipelineError, match=r"examples\[0\].label"):
        load_pipeline(tmp_path / "p.toml")


def test_doctor_says_which_models_cache_the_prefix_and_by_how_much_one_falls_short() -> None:
    from cascade.doctor import _prompt_cache
    from common.settings import Settings

    root = Path(__file__).resolve().parents[2]
    check = _prompt_cache(root / "examples" / "moderation.toml", Settings())
    assert check.ok
    assert "small/claude-haiku-5-5: cached, 5m" in check.detail
    assert "small/claude-haiku-4-5: NOT cached" in check.detail
    assert "short of the 4096 this model caches" in check.detail


# -- the SDK against the fake: a Message Batch with a 1-hour prefix ------------------
def test_a_batch_writes_the_prefix_once_for_an_hour_and_reads_it_after() -> None:
    from cascade.fakeapi.batches import BATCHES_KEY, BatchConfig

    now = [0.0]
    with FakeServer() as fake:
        store = fake.app[BATCHES_KEY]
        store.clock = lambda: now[0]
        store.config = BatchConfig(delay_s=1)
        provider = AnthropicProvider(api_key="k", base_url=fake.start())

        async def run() -> list[Usage]:
            batches = provider.batches
            bid = await batches.create_batch([(f"r{n}", req(ttl="1h")) for n in range(3)])
            now[0] = 2.0
            assert (await batches.retrieve_batch(bid)).ended
            results = await batches.batch_results(bid, "forced_tool")
            await provider.aclose()
            return [r.usage for r in (results[f"r{n}"] for n in range(3))]  # type: ignore[union-attr]

        first, *rest = asyncio.run(run())
    assert first.cache_write_tokens == first.cache_write_1h_tokens > 0
    assert all(u.cache_read_tokens == first.cache_write_tokens for u in rest)
    prices = PriceTable.load()
    # the batch price of the read calls: the discount stacks on the cache read price
    read_cost = prices.cost_nanos("claude-haiku-5-5", rest[0], batch=True)
    plain = prices.cost_nanos(
        "claude-haiku-5-5",
        Usage(rest[0].input_tokens + rest[0].cache_read_tokens, rest[0].output_tokens),
    )
    assert read_cost < plain / 2


def test_report_sections_price_cache_savings_and_render() -> None:
    from cascade.render_cache import add_cache_sections, cache_sections_html
    from models.cache_report import Reuse, TierCache

    # 1 write of 1,000 tokens and 99 reads of 1,000 on Sonnet 5.5 (input 2, 5m write 2.5,
    # read 0.2 USD/MTok): plain input 100,000 x 2 = 200,000 micro-USD; cached 2,500 +
    # 19,800 = 22,300; saved 177,700 micro-USD
    tier = TierCache(2, "large", "claude-sonnet-5-5", False, 100, 100, 99, 1, 5000, 1000, 99000, 0)
    report: dict[str, object] = {}
    add_cache_sections(report, [tier], Reuse(30, 0, 123_000_000), PriceTable.load())
    row = report["cache"]["tiers"][0]  # type: ignore[index]
    assert row["saved_usd"] == "0.177700000" and row["hit_rate"] == 0.99
    assert report["reuse"] == {"items": 30, "waiting": 0, "saved_usd": "0.123000000"}
    html = "".join(cache_sections_html(report))
    assert "Prompt cache" in html and "99.0%" in html and "Reused decisions" in html


def test_a_hung_store_costs_one_error_then_calls_go_unwarmed() -> None:
    class Broken:
        calls = 0

        async def claim(self, key: str, now: float, lease_s: float) -> str:
            Broken.calls += 1
            raise TimeoutError("no answer")

        async def done(self, key: str, now: float, ok: bool, ttl_s: float) -> None:
            raise TimeoutError("no answer")

    async def main() -> list[object]:
        warmer = CacheWarmer(Broken())  # type: ignore[arg-type]
        return list(await asyncio.gather(*(warmer.before_call(req()) for _ in range(10))))

    assert asyncio.run(main()) == [None] * 10
    assert Broken.calls == 1


# -- the warmer across processes, and its failure paths --------------------------------
class Clock:
    """A clock that only moves when a sleep is recorded (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.three_polls = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if len(self.slept) >= 3:
            self.three_polls.set()
        await asyncio.sleep(0)  # let the other tasks run, as a real sleep would


def test_a_call_waits_for_another_processs_first_call_then_goes_warm() -> None:
    store = MemoryWarmStore()
    clock = Clock()
    other = CacheWarmer(store, clock=clock)  # another worker process, same store
    here = CacheWarmer(store, clock=clock, sleep=clock.sleep, poll_s=0.5)

    async def main() -> tuple[object, object]:
        lead = await other.before_call(req())
        waiting = asyncio.create_task(here.before_call(req()))
        await clock.three_polls.wait()  # the waiter polls the store...
        await other.after_call(lead, True)  # ...until the other process has written it
        return lead, await waiting

    lead, ticket = asyncio.run(main())

    assert lead is not None and getattr(lead, "first", False)
    assert ticket is None  # warm now: no ticket, nothing to report
    assert clock.slept[:3] == [0.5, 0.5, 0.5]


def test_a_call_stops_waiting_for_another_process_after_the_lease() -> None:
    store = MemoryWarmStore()
    clock = Clock()
    here = CacheWarmer(store, clock=clock, sleep=clock.sleep, lease_s=2.0, poll_s=0.5)

    async def main() -> object:
        # another process leads and never reports (it died mid-call)
        await CacheWarmer(store, clock=clock).before_call(req())
        return await here.before_call(req())

    assert asyncio.run(main()) is None  # goes unwarmed rather than wait for ever
    assert sum(clock.slept) == pytest.approx(2.0)


def test_a_call_stops_waiting_for_a_leader_of_this_process_after_the_lease() -> None:
    async def main() -> tuple[object, object]:
        warmer = CacheWarmer(MemoryWarmStore(), lease_s=0.05)
        lead = await warmer.before_call(req())  # never reports
        return lead, await warmer.before_call(req())

    lead, follower = asyncio.run(main())

    assert lead is not None and follower is None


def test_a_cancelled_leader_frees_the_key_for_the_next_call() -> None:
    class Hanging(MemoryWarmStore):
        hang = True

        async def claim(self, key: str, now: float, lease_s: float) -> str:  # type: ignore[override]
            if self.hang:
                await asyncio.Event().wait()
            return await super().claim(key, now, lease_s)

    async def main() -> object:
        store = Hanging()
        warmer = CacheWarmer(store)
        first = asyncio.create_task(warmer.before_call(req()))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        store.hang = False
        return await asyncio.wait_for(warmer.before_call(req()), 5)

    ticket = asyncio.run(main())

    assert ticket is not None and getattr(ticket, "first", False)


def test_a_store_error_on_report_bypasses_warming_for_a_while() -> None:
    class DoneFails(MemoryWarmStore):
        claims = 0

        async def claim(self, key: str, now: float, lease_s: float) -> str:  # type: ignore[override]
            DoneFails.claims += 1
            return await super().claim(key, now, lease_s)

        async def done(self, key: str, now: float, ok: bool, ttl_s: float) -> None:
            raise ConnectionError("redis down")

    clock = Clock()

    async def main() -> tuple[object, object, object]:
        warmer = CacheWarmer(DoneFails(), clock=clock, bypass_s=30.0)
        await warmer.after_call(await warmer.before_call(req()), True)
        clock.now += 29.0
        during = await warmer.before_call(req())  # no store round trip
        claims_during = DoneFails.claims
        clock.now += 2.0
        after = await warmer.before_call(req())  # the store is asked again
        return during, claims_during, after

    during, claims_during, after = asyncio.run(main())

    assert during is None and claims_during == 1
    assert after is not None and DoneFails.claims == 2

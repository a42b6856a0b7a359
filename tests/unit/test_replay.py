"""Replay mode: the real engine and SDK against recorded answers, cost exactly as recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cascade.fakeapi.replay import (
    Recorded,
    ReplayBook,
    ReplayServer,
    replay_answer,
    replay_prices_toml,
)
from cascade.fakeapi.wire import FakeConfig, FakeState
from workers.decision import Accept, Escalate, Fallback
from workers.engine import Engine, RealtimeExecutor
from workers.pipeline import parse_pipeline
from workers.pricing import PriceTable
from workers.providers.anthropic import AnthropicProvider
from workers.records import WorkItem
from workers.retry import RetryPolicy

BOOK = ReplayBook(
    {
        "cheap": {
            "a sentence": Recorded("Yes", 0.91, 66_600),
            "a <tricky> & sentence": Recorded(" no ", 0.4, 66_600),
            "rambling": Recorded("Cannot determine without more context.", 0.99, 70_000),
        },
        "big": {"rambling": Recorded("No", 1.0, 8_640_000)},
    }
)
PIPE = parse_pipeline(
    {
        "name": "replay",
        "labels": ["no", "yes"],
        "instructions": "Is it overruling?",
        "tiers": [
            {
                "name": "small",
                "kind": "claude",
                "model": "cheap",
                "accept": {"min_confidence": 0.8},
            },
            {"name": "large", "kind": "claude", "model": "big"},
        ],
    }
)


@pytest.fixture
def prices(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.toml"
    path.write_text(replay_prices_toml(["cheap", "big"]))
    return PriceTable.load(path)


def test_engine_replays_recorded_answers_at_recorded_cost(prices: PriceTable) -> None:
    texts = ["a sentence", "a <tricky> & sentence", "rambling"]

    async def run() -> list[Any]:
        provider = AnthropicProvider(api_key="k", base_url=server.base_url)
        engine = Engine(PIPE, prices, RealtimeExecutor(lambda _: provider, RetryPolicy(), 4))
        try:
            items = [WorkItem(i, t, 1) for i, t in enumerate(texts)]
            first = await engine.run_model(0, items, PIPE.tiers[0].primary, role="primary")  # type: ignore[union-attr]
            up = [WorkItem(2, "rambling", 2)]
            last = await engine.run_model(1, up, PIPE.tiers[1].primary, role="primary")  # type: ignore[union-attr]
            return [*first, *last]
        finally:
            await provider.aclose()

    with ReplayServer(BOOK) as server:
        yes, unsure, rambled, large = asyncio.run(run())
    assert yes.decision == Accept("yes", 0.91, "recorded answer of cheap")
    assert yes.cost_nanos == 66_600  # exactly the recorded cost
    assert isinstance(unsure.decision, Escalate)  # 0.4 < 0.8; escaped text found its record
    assert isinstance(rambled.decision, Escalate) and rambled.steps[0].outcome == "malformed"
    assert large.decision == Accept("no", 1.0, "recorded answer of big")
    assert large.cost_nanos == 8_640_000


def test_rambling_at_the_last_tier_goes_to_the_fallback_chain(prices: PriceTable) -> None:
    book = ReplayBook({"big": {"x": Recorded("Insufficient information", 1.0, 5)}})

    async def run() -> Any:
        provider = AnthropicProvider(api_key="k", base_url=server.base_url)
        engine = Engine(PIPE, prices, RealtimeExecutor(lambda _: provider, RetryPolicy(), 1))
        try:
            (res,) = await engine.run_model(
                1, [WorkItem(0, "x", 1)], PIPE.tiers[1].primary, role="primary"
            )  # type: ignore[union-attr]
            return res
        finally:
            await provider.aclose()

    with ReplayServer(book) as server:
        res = asyncio.run(run())
    assert isinstance(res.decision, Fallback)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "nobody", "messages": []}, 404),  # a model the book does not hold
        (
            {"model": "cheap", "messages": [{"role": "user", "content": "<item>\nnew\n</item>"}]},
            400,
        ),
    ],
)
def test_unknown_model_or_item(body: dict[str, Any], status: int) -> None:
    assert replay_answer(FakeState(FakeConfig()), BOOK, body).status == status


def test_prices_bill_one_nano_per_token(prices: PriceTable) -> None:
    from workers.providers.base import Usage

    assert prices.cost_nanos("cheap", Usage(input_tokens=8_640_000)) == 8_640_000

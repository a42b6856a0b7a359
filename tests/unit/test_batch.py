"""Message Batches helpers, the provider's batch calls and error mapping, the fake's endpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from cascade.fakeapi.batches import BATCHES_KEY, BatchConfig, validate
from workers.batch import (
    MISSING,
    PollPlan,
    custom_id,
    match_results,
    parse_custom_id,
    split,
)
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import (
    ClassifyRequest,
    ContextError,
    PermanentError,
    Reply,
    SpendLimitError,
    TransientError,
    Usage,
)
from workers.providers.replies import map_batch_error
from workers.sources import FileSource, is_database_url

REQ = ClassifyRequest(
    "anthropic", "claude-haiku-5-5", "system", "<item>\nhi\n</item>", ("a", "b"), 64, "forced_tool"
)


def test_custom_ids_round_trip_and_fit_the_api_pattern() -> None:
    cid = custom_id(123456789, 7)
    assert parse_custom_id(cid) == (123456789, 7)
    assert len(cid) <= 64 and cid.replace("_", "").replace("-", "").isalnum()
    assert parse_custom_id("someone-else") is None


@pytest.mark.parametrize(
    ("sizes", "max_requests", "max_bytes", "expected"),
    [
        ([1, 1, 1], 2, 100, [[1, 1], [1]]),  # the request count limit cuts
        ([60, 50, 40], 10, 100, [[60], [50, 40]]),  # the byte limit cuts
        ([500, 1], 10, 100, [[500], [1]]),  # one oversized request still gets its own batch
        ([], 10, 100, []),  # nothing to send: no batch
    ],
)
def test_split_under_the_limits(
    sizes: list[int], max_requests: int, max_bytes: int, expected: list[list[int]]
) -> None:
    got = split(sizes, lambda s: s, max_requests=max_requests, max_bytes=max_bytes)
    assert got == expected


def test_match_results_in_order_and_a_missing_result_is_transient() -> None:
    reply = Reply("end_turn", {"label": "a"}, "", Usage(10, 2))
    err = PermanentError("invalid_request_error: bad")
    tries = match_results(["x", "y", "z"], {"y": err, "x": reply}, 42)
    assert tries[0][0].reply is reply and tries[0][0].latency_ms == 42
    assert tries[1][0].error is err
    missing = tries[2][0].error
    assert isinstance(missing, TransientError) and missing.message == MISSING


@pytest.mark.parametrize(
    ("polls", "delay"),
    [(0, 5.0), (1, 10.0), (3, 40.0), (20, 600.0)],  # doubles, then stays capped under 1 h
)
def test_poll_backs_off_under_the_visibility_timeout(polls: int, delay: float) -> None:
    assert PollPlan(5.0).delay(polls) == delay


@pytest.mark.parametrize(
    ("error_type", "message", "kind"),
    [
        ("overloaded_error", "Overloaded", TransientError),  # 529: may pass with time
        ("api_error", "Internal", TransientError),  # 500
        ("rate_limit_error", "slow down", TransientError),
        ("invalid_request_error", "bad tool_choice", PermanentError),
        ("invalid_request_error", "prompt is too long: 300000 tokens", ContextError),
        ("billing_error", "credit balance too low", SpendLimitError),
        ("not_found_error", "model: claude-x", PermanentError),  # retired model
    ],
)
def test_errored_batch_requests_map_like_realtime_errors(
    error_type: str, message: str, kind: type
) -> None:
    assert type(map_batch_error(error_type, message, "req_1")) is kind


def test_the_fake_refuses_duplicate_custom_ids() -> None:
    body = {"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]}
    assert isinstance(validate(body), str)
    assert isinstance(validate({"requests": []}), str)


def test_provider_batch_round_trip_with_errored_and_expired_results() -> None:
    """Create, retrieve while running, retrieve ended, results: each mapped to a Try value."""
    now = [0.0]
    with FakeServer() as fake:
        store = fake.app[BATCHES_KEY]
        store.clock = lambda: now[0]
        store.config = BatchConfig(delay_s=10, errored_pattern="boom", expired_pattern="late")
        provider = AnthropicProvider(api_key="k", base_url=fake.start())

        def req(text: str) -> ClassifyRequest:
            return ClassifyRequest(
                REQ.provider, REQ.model, REQ.system, f"<item>\n{text}\n</item>", REQ.labels, 64,
                REQ.mechanism,
            )  # fmt: skip

        async def run() -> None:
            batches = provider.batches
            bid = await batches.create_batch(
                [("ok", req("fine")), ("e", req("boom")), ("x", req("late"))]
            )
            running = await batches.retrieve_batch(bid)
            assert not running.ended and running.counts["processing"] == 3
            now[0] = 11.0
            ended = await batches.retrieve_batch(bid)
            assert ended.ended
            assert ended.counts | {"processing": 0} == {
                "processing": 0, "succeeded": 1, "errored": 1, "canceled": 0, "expired": 1,
            }  # fmt: skip
            results = await batches.batch_results(bid, "forced_tool")
            assert isinstance(results["ok"], Reply) and results["ok"].structured is not None
            assert isinstance(results["e"], TransientError) and results["e"].status == 500
            assert isinstance(results["x"], TransientError) and results["x"].message == "expired"
            await provider.aclose()

        asyncio.run(run())
        assert fake.stats()["by_model"]["claude-haiku-5-5"]["calls"] == 2  # expired never ran


def test_file_sources_take_files_changed_since_the_watermark(tmp_path: Path) -> None:
    import os

    for day, stamp in (("2026-11-01", 1_000), ("2026-11-02", 2_000)):
        path = tmp_path / f"{day}.jsonl"
        path.write_text('{"id": "1", "text": "x"}\n')
        os.utime(path, (stamp, stamp))
    source = FileSource(str(tmp_path / "*.jsonl"))
    files = source.files()
    assert [f.path.name for f in files] == ["2026-11-01.jsonl", "2026-11-02.jsonl"]
    assert [f.path.name for f in source.changed_since(files[0].updated_at)] == ["2026-11-02.jsonl"]
    assert is_database_url("postgresql+psycopg://u@h/db") and not is_database_url("posts.jsonl")


@pytest.mark.parametrize("mechanism", ["forced_tool", "tool", "json_schema"])
@pytest.mark.parametrize(
    "text",
    [
        "hi",
        "déjà vu — 日本語のテキスト " * 50,  # multi-byte characters count as bytes
        'quotes " and \\ backslashes\n' * 40,  # characters JSON escapes grow
        '"' * 4000,  # each one written as two bytes
        "line\n" * 800,  # a text of many short lines
        "\x01\x02" * 1000,  # control characters: six bytes each
    ],
)
def test_request_bytes_is_never_below_the_entry_it_stands_for(mechanism: str, text: str) -> None:
    """Batches are cut by this estimate: below the real size, one could exceed the API's cap."""
    import json

    from workers.batch import request_bytes
    from workers.providers.anthropic import build_params

    labels = ("billing", "technical", "account", "shipping", "feedback", "other")
    req = ClassifyRequest(
        "anthropic",
        "claude-haiku-4-5",
        "Classify the ticket. " * 30,
        f"<item>\n{text}\n</item>",
        labels,
        200,
        mechanism,  # type: ignore[arg-type]
        cache_ttl="5m",
    )
    entry = {"custom_id": custom_id(10**12, 99), "params": build_params(req)}

    # the body as the SDK writes it: UTF-8, compact, non-ASCII characters as they are
    body = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()
    assert request_bytes(req) >= len(body)


@pytest.mark.parametrize(("max_requests", "max_bytes"), [(0, 100), (10, 0), (-1, -1)])
def test_split_refuses_limits_below_one(max_requests: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_requests and max_bytes must be at least 1"):
        split([1], lambda s: s, max_requests=max_requests, max_bytes=max_bytes)


def test_split_fills_a_batch_to_exactly_the_byte_limit() -> None:
    assert split([40, 60, 1], lambda s: s, max_requests=10, max_bytes=100) == [[40, 60], [1]]

"""``parse_reply`` reads the Messages API's wire JSON, and a 200 that is not a message is a
transient API error, not a crash of the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from workers.providers.anthropic import AnthropicProvider, parse_reply
from workers.providers.base import TOOL_NAME, ClassifyRequest, TransientError, Usage


def message(*content: dict[str, Any], **usage: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "stop_reason": "tool_use",
        "content": list(content),
        "usage": {"input_tokens": 12, "output_tokens": 7, **usage},
    }


def tool(name: str, given: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_1", "name": name, "input": given}


def test_the_first_tool_call_of_ours_is_the_answer_and_texts_are_joined() -> None:
    body = message(
        {"type": "text", "text": "Let me "},
        tool("other_tool", {"label": "no"}),
        tool(TOOL_NAME, {"label": "spam", "confidence": 0.9}),
        tool(TOOL_NAME, {"label": "ok", "confidence": 0.1}),
        {"type": "text", "text": "think."},
    )
    reply = parse_reply(body, "forced_tool", {"anthropic-ratelimit-requests-remaining": "9"}, "r1")
    assert reply.structured == {"label": "spam", "confidence": 0.9}
    assert reply.text == "Let me think."
    assert reply.stop_reason == "tool_use"
    assert reply.request_id == "r1"
    assert reply.rate_limits == {"anthropic-ratelimit-requests-remaining": "9"}
    assert reply.usage == Usage(input_tokens=12, output_tokens=7)


def test_a_tool_input_that_is_not_an_object_is_no_answer() -> None:
    reply = parse_reply(message(tool(TOOL_NAME, ["spam"])), "tool")
    assert reply.structured is None


def test_json_schema_answers_are_read_from_the_text() -> None:
    body = message({"type": "text", "text": '{"label": "ok", "confidence": 0.8}'})
    assert parse_reply(body, "json_schema").structured == {"label": "ok", "confidence": 0.8}
    assert parse_reply(message({"type": "text", "text": "ok"}), "json_schema").structured is None


def test_cache_usage_with_the_one_hour_share() -> None:
    body = message(
        cache_creation_input_tokens=4000,
        cache_read_input_tokens=300,
        cache_creation={"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 3000},
    )
    assert parse_reply(body, "tool").usage == Usage(
        input_tokens=12,
        output_tokens=7,
        cache_write_tokens=4000,
        cache_read_tokens=300,
        cache_write_1h_tokens=3000,
    )


def test_absent_or_null_counts_are_zero() -> None:
    body = message(cache_creation_input_tokens=None, cache_creation=None)
    del body["usage"]["output_tokens"]
    assert parse_reply(body, "tool").usage == Usage(input_tokens=12)


@pytest.mark.parametrize(
    "body",
    [{}, {"content": "text", "usage": {}}, {"content": [], "usage": None}, {"type": "error"}],
)
def test_a_body_that_is_not_a_message_is_transient(body: dict[str, Any]) -> None:
    with pytest.raises(TransientError, match="not a message"):
        parse_reply(body, "tool")


@pytest.mark.parametrize(
    ("payload", "match"), [(b"<html>busy</html>", "not JSON"), (b"[1, 2]", "not a message")]
)
def test_a_200_that_is_not_a_message_is_a_transient_error(payload: bytes, match: str) -> None:
    async def main() -> None:
        async def reply(_: web.Request) -> web.Response:
            return web.Response(body=payload, content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/messages", reply)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        provider = AnthropicProvider("anthropic", "sk-test", f"http://127.0.0.1:{port}", 5.0)
        request = ClassifyRequest(
            "anthropic", "claude-haiku-4-5", "Classify.", "<item>x</item>", ("a", "b"), 50, "tool"
        )
        try:
            with pytest.raises(TransientError, match=match):
                await provider.classify(request)
        finally:
            await provider.aclose()
            await runner.cleanup()

    asyncio.run(main())

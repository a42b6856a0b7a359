"""``parse_reply`` reads the Messages API's wire JSON, and a 200 that is not a message is a
transient API error, not a crash of the worker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import pytest
from aiohttp import web

from workers.providers.anthropic import AnthropicProvider, build_params, sdk_error
from workers.providers.base import (
    TOOL_NAME,
    ClassifyRequest,
    ProviderError,
    TransientError,
    Usage,
)
from workers.providers.replies import parse_reply, reply_of


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


# -- the direct Messages endpoint sends and reads what the SDK would ---------------------
SECRET = "sk-ant-wire-SECRET-42"


class Capture:
    """A one-route server: records each request, answers with the next canned reply."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.reply = (status, body, headers)
        self.seen: list[tuple[dict[str, str], Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.json()))
        status, body, headers = self.reply
        return web.Response(status=status, body=body, headers=headers)


async def served(capture: Capture, run: Any) -> Any:
    app = web.Application()
    app.router.add_post("/v1/messages", capture.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    provider = AnthropicProvider("anthropic", SECRET, f"http://127.0.0.1:{runner.addresses[0][1]}")
    try:
        return await run(provider)
    finally:
        await provider.aclose()
        await runner.cleanup()


def both_ways(capture: Capture, request: ClassifyRequest) -> list[Any]:
    """The request sent directly, then through the SDK's ``messages.create``: what each
    returned or raised (SDK errors mapped as the SDK path maps them)."""

    async def run(provider: AnthropicProvider) -> list[Any]:
        out: list[Any] = []
        try:
            out.append(await provider.classify(request))
        except ProviderError as exc:
            out.append(exc)
        try:
            raw = await provider._sdk().messages.with_raw_response.create(**build_params(request))
            out.append(reply_of(await raw.read(), request.mechanism, raw.headers, raw.request_id))
        except anthropic.AnthropicError as exc:
            out.append(sdk_error(exc, SECRET, 60.0))
        return out

    result: list[Any] = asyncio.run(served(capture, run))
    return result


CACHED = ClassifyRequest(
    "anthropic",
    "claude-haiku-5-5",
    "Policy: « no spam » — every label defined.",
    "<item>“quoted” text \\ with \u0007 control</item>",
    ("ok", "spam"),
    64,
    "forced_tool",
    cache_ttl="1h",
)
OK_BODY = json.dumps(message(tool(TOOL_NAME, {"label": "ok", "confidence": 0.7}))).encode()


@pytest.mark.parametrize(
    ("payload", "match"), [(b"<html>busy</html>", "not JSON"), (b"[1, 2]", "not a message")]
)
def test_a_200_that_is_not_a_message_is_a_transient_error(payload: bytes, match: str) -> None:
    async def run(provider: AnthropicProvider) -> None:
        with pytest.raises(TransientError, match=match):
            await provider.classify(CACHED)

    asyncio.run(served(Capture(200, payload, {}), run))


def test_the_direct_request_is_the_sdks_request() -> None:
    capture = Capture(
        200, OK_BODY, {"request-id": "req_1", "anthropic-ratelimit-requests-remaining": "5"}
    )
    direct, via_sdk = both_ways(capture, CACHED)
    assert direct == via_sdk
    assert direct.request_id == "req_1" and direct.rate_limits is not None
    (direct_headers, direct_body), (sdk_headers, sdk_body) = capture.seen
    assert direct_body == sdk_body == build_params(CACHED)
    for name in ("Authorization", "anthropic-version", "Content-Type", "Accept", "User-Agent"):
        assert direct_headers[name] == sdk_headers[name], name
    assert direct_headers["Authorization"] == f"Bearer {SECRET}"


ERRORS = [
    (429, {"error": {"type": "rate_limit_error", "message": "slow down"}}, {"retry-after": "7"}),
    (
        429,
        {
            "error": {
                "type": "rate_limit_error",
                "message": "x",
                "details": {"error_code": "enforced_spend_limit_reached"},
            }
        },
        {},
    ),
    (
        529,
        {"error": {"type": "overloaded_error", "message": "Overloaded"}},
        {"retry-after-ms": "1500"},
    ),
    (500, None, {}),
    (
        400,
        {
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 300000 tokens",
            }
        },
        {},
    ),
    (
        401,
        {"error": {"type": "authentication_error", "message": f"invalid x-api-key {SECRET}"}},
        {},
    ),
    (403, {"error": {"type": "permission_error", "message": "You reached your spend limit"}}, {}),
    (404, {"error": {"type": "not_found_error", "message": "model: nope"}}, {}),
    (413, {"error": {"type": "request_too_large", "message": "too big"}}, {}),
]


@pytest.mark.parametrize(("status", "body", "headers"), ERRORS)
def test_an_error_is_classified_alike_both_ways(
    status: int, body: dict[str, Any] | None, headers: dict[str, str]
) -> None:
    raw = b"<html>bad gateway</html>" if body is None else json.dumps(body).encode()
    capture = Capture(status, raw, {"request-id": "req_e", **headers})
    direct, via_sdk = both_ways(capture, CACHED)
    assert isinstance(direct, ProviderError)
    assert (type(direct), direct.message, direct.status) == (
        type(via_sdk),
        via_sdk.message,
        via_sdk.status,
    )
    assert (direct.request_id, direct.retry_after_s) == (via_sdk.request_id, via_sdk.retry_after_s)
    assert direct.rate_limits == via_sdk.rate_limits
    assert SECRET not in direct.message

"""AnthropicProvider through the real anthropic SDK against the fake Messages API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from cascade.fakeapi import FakeRateLimits, FakeServer
from workers.providers.anthropic import AnthropicProvider, build_params
from workers.providers.base import (
    TOOL_NAME,
    AuthError,
    ClassifyRequest,
    ContextError,
    Mechanism,
    PermanentError,
    ProviderError,
    Reply,
    SpendLimitError,
    TransientError,
    classification_schema,
)
from workers.providers.headers import parse_retry_after, rate_limit_headers

T = TypeVar("T")
KEY = "sk-ant-test-SECRET-0123456789"
LABELS = ("billing", "technical", "account", "shipping", "feedback", "other")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean(server: FakeServer) -> None:
    server.reset()


def request(
    model: str, mechanism: Mechanism, item: str = "I was charged twice, refund please"
) -> ClassifyRequest:
    return ClassifyRequest(
        provider="anthropic",
        model=model,
        system=f"Classify the item. Call {TOOL_NAME}.",
        user=f"<item>{item}</item>",
        labels=LABELS,
        max_tokens=200,
        mechanism=mechanism,
    )


def with_provider(
    server: FakeServer,
    body: Callable[[AnthropicProvider], Awaitable[T]],
    timeout_s: float = 5.0,
) -> T:
    """Run ``body`` with a fresh provider in its own event loop, always closing it."""

    async def main() -> T:
        provider = AnthropicProvider("anthropic", KEY, server.base_url, timeout_s)
        try:
            return await body(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def classify(server: FakeServer, req: ClassifyRequest, timeout_s: float = 5.0) -> Reply:
    return with_provider(server, lambda p: p.classify(req), timeout_s)


def failure(server: FakeServer, req: ClassifyRequest, timeout_s: float = 5.0) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        classify(server, req, timeout_s)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    return info.value


@pytest.mark.parametrize(
    ("model", "mechanism"),
    [
        ("claude-haiku-4-5", "forced_tool"),
        ("claude-haiku-5-5", "forced_tool"),
        ("claude-sonnet-5-5", "tool"),
        ("claude-haiku-4-5", "json_schema"),
    ],
)
def test_each_mechanism_on_a_model_that_supports_it(
    server: FakeServer, model: str, mechanism: Mechanism
) -> None:
    reply = classify(server, request(model, mechanism))
    assert reply.structured is not None
    assert reply.structured["label"] == "billing"
    assert reply.structured["label"] in LABELS
    assert 0 <= reply.structured["confidence"] <= 1
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.usage.cache_read_tokens == 0 and reply.usage.cache_write_tokens == 0
    assert reply.request_id is not None and reply.request_id.startswith("req_fake_")
    expected_stop = "end_turn" if mechanism == "json_schema" else "tool_use"
    assert reply.stop_reason == expected_stop
    stats = server.stats()["by_model"][model]
    assert stats["input_tokens"] == reply.usage.input_tokens
    assert stats["output_tokens"] == reply.usage.output_tokens


def test_json_schema_reply_keeps_the_raw_text(server: FakeServer) -> None:
    reply = classify(server, request("claude-haiku-4-5", "json_schema"))
    assert reply.text.startswith("{") and '"label"' in reply.text


def test_one_client_serves_many_calls(server: FakeServer) -> None:
    async def body(provider: AnthropicProvider) -> list[Reply]:
        reqs = [request("claude-haiku-5-5", "forced_tool", f"app crash {i}") for i in range(20)]
        return await asyncio.gather(*(provider.classify(r) for r in reqs))

    replies = with_provider(server, body)
    assert all(r.structured is not None and r.structured["label"] == "technical" for r in replies)


def test_forced_tool_on_sonnet_5_5_is_permanent(server: FakeServer) -> None:
    error = failure(server, request("claude-sonnet-5-5", "forced_tool"))
    assert type(error) is PermanentError and error.status == 400
    assert error.request_id is not None


def test_unknown_model_is_permanent_404(server: FakeServer) -> None:
    error = failure(server, request("claude-3-5-sonnet-retired", "forced_tool"))
    assert type(error) is PermanentError and error.status == 404
    assert "model: claude-3-5-sonnet-retired" in error.message


def test_429_with_retry_after_is_transient_and_sdk_does_not_retry(server: FakeServer) -> None:
    server.set_faults("claude-haiku-4-5", error_status=429, retry_after=7)
    started = time.monotonic()
    error = failure(server, request("claude-haiku-4-5", "forced_tool"))
    assert type(error) is TransientError
    assert (error.status, error.retry_after_s) == (429, 7)
    assert server.stats()["by_model"]["claude-haiku-4-5"]["calls"] == 1  # SDK retries are off
    assert time.monotonic() - started < 3  # and it did not sleep 7 s either


def test_no_rate_limit_headers_no_rate_limits(server: FakeServer) -> None:
    assert classify(server, request("claude-haiku-5-5", "forced_tool")).rate_limits is None


LIMITS = FakeRateLimits(
    requests_per_min=1000, input_tokens_per_min=100_000, output_tokens_per_min=20_000
)


def test_reply_carries_the_rate_limit_headers_and_only_those() -> None:
    with FakeServer(rate_limits=LIMITS) as limited:
        reply = classify(limited, request("claude-haiku-5-5", "forced_tool"))
    assert reply.structured is not None and reply.request_id is not None
    assert reply.rate_limits is not None
    # requests, input-tokens, output-tokens and the combined tokens: limit, remaining, reset
    assert len(reply.rate_limits) == 12
    assert all(name.startswith("anthropic-ratelimit-") for name in reply.rate_limits)
    assert reply.rate_limits["anthropic-ratelimit-requests-limit"] == "1000"
    assert reply.rate_limits["anthropic-ratelimit-requests-remaining"] == "999"
    # output tokens are taken at max_tokens (200), input at the prompt's tokens
    assert reply.rate_limits["anthropic-ratelimit-output-tokens-remaining"] == "19800"
    assert int(reply.rate_limits["anthropic-ratelimit-input-tokens-remaining"]) == (
        100_000 - reply.usage.input_tokens
    )


def test_a_429_carries_the_rate_limit_headers() -> None:
    with FakeServer(rate_limits=FakeRateLimits(requests_per_min=1)) as limited:
        classify(limited, request("claude-haiku-5-5", "forced_tool"))
        error = failure(limited, request("claude-haiku-5-5", "forced_tool"))
    assert type(error) is TransientError and error.status == 429
    assert error.retry_after_s == 60
    assert error.rate_limits == {
        "anthropic-ratelimit-requests-limit": "1",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": error.rate_limits[
            "anthropic-ratelimit-requests-reset"
        ],
    }


@pytest.mark.parametrize("status", [400, 529])
def test_any_status_error_carries_the_rate_limit_headers(status: int) -> None:
    with FakeServer(rate_limits=LIMITS) as limited:
        limited.set_faults("claude-haiku-5-5", error_status=status)
        error = failure(limited, request("claude-haiku-5-5", "forced_tool"))
    assert error.status == status
    assert error.rate_limits is not None
    assert error.rate_limits["anthropic-ratelimit-requests-remaining"] == "999"


def test_rate_limit_headers_filter() -> None:
    headers = {
        "Anthropic-RateLimit-Requests-Remaining": "5",
        "request-id": "req_1",
        "retry-after": "3",
        "anthropic-organization-id": "org",
    }
    assert rate_limit_headers(headers) == {"anthropic-ratelimit-requests-remaining": "5"}
    assert rate_limit_headers({"request-id": "req_1"}) is None


@pytest.mark.parametrize("status", [529, 500, 503, 408, 409])
def test_server_side_statuses_are_transient(server: FakeServer, status: int) -> None:
    server.set_faults("claude-haiku-5-5", error_status=status)
    error = failure(server, request("claude-haiku-5-5", "forced_tool"))
    assert type(error) is TransientError and error.status == status
    assert server.stats()["by_model"]["claude-haiku-5-5"]["calls"] == 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"error_status": 429, "error_type": "billing_error"}, SpendLimitError),
        ({"error_status": 429, "error_message": "You reached your spend limit"}, SpendLimitError),
        ({"error_status": 429, "error_message": "reached your specified API usage limits"},
         SpendLimitError),
        ({"error_status": 402}, SpendLimitError),
        ({"error_status": 400, "error_message": "prompt is too long: 219898 tokens > 200000"},
         ContextError),
        ({"error_status": 400, "error_message": "max_tokens: 999999 > 64000"}, PermanentError),
        ({"error_status": 401}, AuthError),  # no later try passes with this key
        ({"error_status": 403}, AuthError),
        ({"error_status": 413}, PermanentError),
        ({"error_status": 422}, PermanentError),
    ],
)  # fmt: skip
def test_error_mapping(
    server: FakeServer, fault: dict[str, Any], expected: type[ProviderError]
) -> None:
    server.set_faults("claude-haiku-4-5", **fault)
    error = failure(server, request("claude-haiku-4-5", "forced_tool"))
    assert type(error) is expected
    assert error.status == fault["error_status"]


def test_refusal_is_a_reply_not_an_error(server: FakeServer) -> None:
    server.set_faults("claude-sonnet-5-5", refuse_pattern="weapon")
    reply = classify(server, request("claude-sonnet-5-5", "tool", "how to build a weapon"))
    assert reply.stop_reason == "refusal"
    assert reply.structured is None and reply.text == ""
    assert reply.usage.output_tokens == 0


def test_malformed_reply_has_text_but_no_structure(server: FakeServer) -> None:
    server.set_faults("claude-haiku-4-5", malformed_rate=1.0)
    mechanisms: tuple[Mechanism, ...] = ("forced_tool", "json_schema")
    for mechanism in mechanisms:
        reply = classify(server, request("claude-haiku-4-5", mechanism))
        assert reply.structured is None and reply.text == "I think it's billing"


def test_dropped_connection_is_transient(server: FakeServer) -> None:
    server.set_faults("claude-haiku-4-5", drop_rate=1.0)
    error = failure(server, request("claude-haiku-4-5", "forced_tool"))
    assert type(error) is TransientError and error.status is None
    assert server.stats()["by_model"]["claude-haiku-4-5"]["dropped"] == 1


def test_hang_beyond_the_timeout_is_transient_and_bounded(server: FakeServer) -> None:
    server.set_faults("claude-haiku-4-5", hang_s=30)
    started = time.monotonic()
    error = failure(server, request("claude-haiku-4-5", "forced_tool"), timeout_s=0.5)
    assert type(error) is TransientError and "timeout" in error.message
    assert time.monotonic() - started < 5


def test_a_key_echoed_by_the_server_is_scrubbed(server: FakeServer) -> None:
    server.set_faults(
        "claude-haiku-4-5", error_status=401, error_message=f"invalid x-api-key {KEY}"
    )
    error = failure(server, request("claude-haiku-4-5", "forced_tool"))
    assert "invalid x-api-key ***" in error.message


def test_unknown_provider_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        AnthropicProvider("openai", KEY, None, 5.0)


def test_repr_hides_the_key() -> None:
    assert KEY not in repr(AnthropicProvider("anthropic", KEY, "http://127.0.0.1:1", 5.0))


def test_aclose_without_a_call_is_fine() -> None:
    asyncio.run(AnthropicProvider("anthropic", KEY, None, 5.0).aclose())


def test_schema_shape() -> None:
    schema = classification_schema(["a", "b"])
    assert schema["properties"]["label"] == {"type": "string", "enum": ["a", "b"]}
    assert schema["required"] == ["label", "confidence", "reason"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("mechanism", "choice"),
    [("forced_tool", {"type": "tool", "name": TOOL_NAME}), ("tool", {"type": "auto"})],
)
def test_tool_params(mechanism: Mechanism, choice: dict[str, str]) -> None:
    params = build_params(request("claude-haiku-5-5", mechanism))
    assert params["tool_choice"] == choice
    [tool] = params["tools"]
    assert tool["name"] == TOOL_NAME
    assert tool["input_schema"] == classification_schema(LABELS)
    assert "output_config" not in params
    assert not {"temperature", "top_p", "top_k"} & set(params)


def test_json_schema_params() -> None:
    params = build_params(request("claude-haiku-4-5", "json_schema"))
    assert "tools" not in params and "tool_choice" not in params
    assert params["output_config"] == {
        "format": {"type": "json_schema", "schema": classification_schema(LABELS)}
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # ms wins
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "Thu, 01 Jan 1970 00:00:30 GMT"}, 20.0),  # HTTP date, now = 10
        ({"retry-after": "soon"}, None),  # unparseable: no hint
        ({}, None),
        ({"retry-after-ms": "later", "retry-after": "4"}, 4.0),  # bad ms: the seconds header
        ({"retry-after-ms": "", "retry-after": "4"}, 4.0),  # an empty header is no header
        ({"retry-after-ms": "-200"}, 0.0),  # never a negative wait
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "Thu, 01 Jan 1970 00:00:05 GMT"}, 0.0),  # a date already past
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=10.0) == expected


def test_enforced_spend_limit_code_on_429_is_spend_limit() -> None:
    """The SDK's EnforcedSpendLimitReachedError carries the cause in error.details.error_code."""
    import anthropic
    import httpx2

    from workers.providers.anthropic import map_status_error

    body = {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "monthly threshold crossed",
            "details": {"error_code": "enforced_spend_limit_reached"},
        },
    }
    response = httpx2.Response(
        429, headers={"retry-after": "5"}, request=httpx2.Request("POST", "http://127.0.0.1/")
    )
    exc = anthropic.RateLimitError("Error code: 429", response=response, body=body)
    assert type(map_status_error(exc)) is SpendLimitError
    plain = anthropic.RateLimitError("Error code: 429", response=response, body={"error": {}})
    mapped = map_status_error(plain)
    assert type(mapped) is TransientError and mapped.retry_after_s == 5


def test_no_key_at_all_is_an_auth_error_not_a_crash(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK raises a bare TypeError when it has no key to send: no call, no retry."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)

    async def main() -> None:
        provider = AnthropicProvider("anthropic", None, server.base_url, 5)
        try:
            await provider.classify(request("claude-haiku-5-5", "forced_tool"))
        finally:
            await provider.aclose()

    with pytest.raises(AuthError, match="ANTHROPIC_API_KEY"):
        asyncio.run(main())
    assert server.stats()["requests"] == 0


# -- count_tokens, SDK failures outside a status, Message Batches errors ----------------


def test_count_tokens_proves_the_key_and_counts_more_for_longer_text(server: FakeServer) -> None:
    async def body(provider: AnthropicProvider) -> tuple[int, int]:
        short = await provider.count_tokens("claude-haiku-5-5", "hi")
        long = await provider.count_tokens("claude-haiku-5-5", "hello there " * 200)
        return short, long

    short, long = with_provider(server, body)

    assert 0 < short < long


def test_count_tokens_of_an_unknown_model_is_a_permanent_404(server: FakeServer) -> None:
    with pytest.raises(PermanentError) as info:
        with_provider(server, lambda p: p.count_tokens("claude-retired-1", "hi"))

    assert type(info.value) is PermanentError and info.value.status == 404


def test_count_tokens_without_any_key_is_an_auth_error(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)

    async def main() -> int:
        provider = AnthropicProvider("anthropic", None, server.base_url, 5)
        try:
            return await provider.count_tokens("claude-haiku-5-5", "hi")
        finally:
            await provider.aclose()

    with pytest.raises(AuthError, match="ANTHROPIC_API_KEY"):
        asyncio.run(main())


def test_sdk_failures_without_a_status_are_classified() -> None:
    import anthropic
    import httpx2

    from workers.providers.anthropic import sdk_error

    req = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    cases: list[tuple[anthropic.AnthropicError, type[ProviderError], str]] = [
        (anthropic.APITimeoutError(req), TransientError, "timeout: no reply within 7.5 s"),
        (anthropic.APIConnectionError(request=req), TransientError, "connection error: "),
        # a 200 reply the SDK could not parse: may pass on a retry
        (anthropic.APIError("bad body", req, body=None), TransientError, "api error: APIError"),
        # client set-up (e.g. no cloud credentials): no retry helps
        (anthropic.AnthropicError("no region"), PermanentError, "client error: AnthropicError"),
    ]
    for exc, kind, start in cases:
        mapped = sdk_error(exc, KEY, 7.5)
        assert type(mapped) is kind, exc
        assert mapped.message.startswith(start)


@pytest.mark.parametrize("name", ["bedrock", "vertex"])
def test_batches_are_refused_on_bedrock_and_vertex(name: str) -> None:
    provider = AnthropicProvider(name)

    with pytest.raises(PermanentError) as info:
        asyncio.run(provider.batches.retrieve_batch("msgbatch_1"))

    assert info.value.message == (
        f"the Message Batches API is not available on {name}: "
        'use provider = "anthropic" on a batch tier'
    )


@pytest.mark.parametrize(
    ("error_type", "status", "kind"),
    [
        ("authentication_error", 401, AuthError),  # no later request passes with this key
        ("permission_error", 403, AuthError),
        ("rate_limit_error", 429, TransientError),
        ("overloaded_error", 529, TransientError),
        ("timeout_error", 504, TransientError),
        ("request_too_large", 413, PermanentError),
        ("some_new_error", 500, TransientError),  # an unknown type is taken as a server error
    ],
)
def test_errored_batch_requests_keep_the_status_their_type_stands_for(
    error_type: str, status: int, kind: type[ProviderError]
) -> None:
    from workers.providers.anthropic import map_batch_error

    mapped = map_batch_error(error_type, f"failed with {KEY}", "req_9", secret=KEY)

    assert type(mapped) is kind
    assert (mapped.status, mapped.request_id) == (status, "req_9")
    assert mapped.message == f"{error_type}: failed with ***"  # the key is scrubbed


def test_a_rate_limit_batch_error_about_the_spend_limit_pauses() -> None:
    from workers.providers.anthropic import map_batch_error

    assert type(map_batch_error("rate_limit_error", "You hit your spend limit")) is SpendLimitError
    assert type(map_batch_error("invalid_request_error", "usage limits reached")) is SpendLimitError


@pytest.mark.parametrize(
    ("result_type", "message"),
    [("expired", "expired"), ("canceled", "expired (canceled)")],
)
def test_a_batch_request_that_never_ran_is_transient(result_type: str, message: str) -> None:
    from types import SimpleNamespace

    from workers.providers.anthropic import batch_outcome

    outcome = batch_outcome(SimpleNamespace(type=result_type), "tool")

    assert type(outcome) is TransientError
    assert outcome.message == message

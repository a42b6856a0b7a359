"""The only module that imports ``anthropic``: one SDK client, requests built per mechanism,
replies parsed into :class:`~workers.providers.base.Reply`, and every SDK failure
mapped once into the :mod:`workers.providers.base` error tree::

    RateLimitError 429 ─┬─ spend limit reached (type/code/message) ... SpendLimitError
                        └─ otherwise ................................ TransientError (+ retry-after)
    402 / spend-limit markers on 400 ................................ SpendLimitError
    408, 409, 5xx (incl. 529 OverloadedError) ....................... TransientError
    APITimeoutError, APIConnectionError ............................. TransientError
    400 "prompt is too long" ........................................ ContextError
    401, 403; no key to send at all (the SDK's TypeError) ........... AuthError
    other 400, 404, 413, 422, other 4xx ............................. PermanentError

The API's ``anthropic-ratelimit-*`` response headers, of a reply and of an error
alike, ride along as ``rate_limits`` on the :class:`Reply` or the error, so the
rate limiter can adapt to what the API says is left.

The API key is never logged nor copied into an error message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import anthropic
from anthropic.types import Message, MessageParam, ToolChoiceParam, ToolParam

from workers.providers.base import (
    TOOL_NAME,
    AuthError,
    BatchStatus,
    ClassifyRequest,
    ContextError,
    PermanentError,
    ProviderError,
    Reply,
    SpendLimitError,
    TransientError,
    Usage,
    classification_schema,
    json_object,
)
from workers.providers.headers import parse_retry_after, rate_limit_headers

if TYPE_CHECKING:
    from anthropic import AsyncAnthropicBedrock, AsyncAnthropicVertex

    Client = anthropic.AsyncAnthropic | AsyncAnthropicBedrock | AsyncAnthropicVertex

PROVIDERS: Final = frozenset({"anthropic", "bedrock", "vertex"})
TOOL_DESCRIPTION: Final = (
    "Record the classification of the item: one label from the allowed set, "
    "a confidence between 0 and 1, and a short reason."
)
SPEND_LIMIT_CODES: Final = frozenset(
    {"enforced_spend_limit_reached", "contract_spend_limit_reached", "billing_error"}
)
SPEND_LIMIT_WORDS: Final = ("spend limit", "usage limits")
MAX_MESSAGE_CHARS: Final = 300


def build_params(request: ClassifyRequest) -> dict[str, Any]:
    """Keyword arguments for ``messages.create``. Never any temperature/top_p/top_k."""
    messages: list[MessageParam] = [{"role": "user", "content": request.user}]
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "system": request.system,
        "messages": messages,
    }
    if request.cache_ttl is not None:
        # One breakpoint on the system block caches tools + system (the prefix order is
        # tools -> system -> messages); the user turn after it is never cached.
        params["system"] = [
            {
                "type": "text",
                "text": request.system,
                "cache_control": {"type": "ephemeral", "ttl": request.cache_ttl},
            }
        ]
    schema = classification_schema(request.labels)
    if request.mechanism == "json_schema":
        # The SDK's create() takes output_config directly; no extra_body needed.
        params["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return params
    tool: ToolParam = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": schema}
    choice: ToolChoiceParam
    if request.mechanism == "forced_tool":
        choice = {"type": "tool", "name": TOOL_NAME}
    else:  # "tool": the system prompt asks for the tool call; the answer is judged later
        choice = {"type": "auto"}
    params["tools"] = [tool]
    params["tool_choice"] = choice
    return params


def parse_reply(
    message: Message, mechanism: str, rate_limits: Mapping[str, str] | None = None
) -> Reply:
    texts: list[str] = []
    structured: dict[str, Any] | None = None
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use" and block.name == TOOL_NAME and structured is None:
            structured = dict(block.input) if isinstance(block.input, Mapping) else None
    text = "".join(texts)
    if mechanism == "json_schema":
        structured = json_object(text)
    usage = message.usage
    by_ttl = usage.cache_creation
    return Reply(
        stop_reason=message.stop_reason,
        structured=structured,
        text=text,
        usage=Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_1h_tokens=(by_ttl.ephemeral_1h_input_tokens or 0) if by_ttl else 0,
        ),
        request_id=getattr(message, "_request_id", None),  # none on a batch result
        rate_limits=rate_limits,
    )


def _is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    if exc.type in SPEND_LIMIT_CODES or exc.error_code in SPEND_LIMIT_CODES:
        return True
    message = (exc.api_message or "").lower()
    return any(words in message for words in SPEND_LIMIT_WORDS)


def map_status_error(exc: anthropic.APIStatusError, secret: str | None = None) -> ProviderError:
    """One SDK status error -> our error tree. Pure; the caller raises it ``from exc``."""
    status = exc.status_code
    detail = _scrub(f"{exc.type or 'error'}: {exc.api_message or f'HTTP {status}'}", secret)
    headers = exc.response.headers
    common: dict[str, Any] = {
        "status": status,
        "request_id": exc.request_id,
        "rate_limits": rate_limit_headers(headers),
    }
    if status == 402 or (status in (400, 403, 429) and _is_spend_limit(exc)):
        return SpendLimitError(detail, **common)
    if status in (408, 409, 429) or status >= 500:
        retry_after = parse_retry_after(headers)
        return TransientError(detail, retry_after_s=retry_after, **common)
    if status == 400 and "prompt is too long" in (exc.api_message or "").lower():
        return ContextError(detail, **common)
    if status in (401, 403):
        return AuthError(detail, **common)
    return PermanentError(detail, **common)


def sdk_error(exc: anthropic.AnthropicError, secret: str | None, timeout_s: float) -> ProviderError:
    """Any other SDK failure -> our error tree (the caller raises it ``from exc``)."""
    if isinstance(exc, anthropic.APIStatusError):
        return map_status_error(exc, secret)
    if isinstance(exc, anthropic.APITimeoutError):
        return TransientError(f"timeout: no reply within {timeout_s:g} s")
    if isinstance(exc, anthropic.APIConnectionError):
        return TransientError(f"connection error: {type(exc.__cause__ or exc).__name__}")
    if isinstance(exc, anthropic.APIError):  # e.g. a 200 reply the SDK could not parse
        return TransientError(f"api error: {type(exc).__name__}")
    # client set-up, e.g. missing cloud credentials
    return PermanentError(f"client error: {type(exc).__name__}")


def _no_credentials(exc: TypeError) -> bool:
    """The SDK raises a bare TypeError when it has no key to send (none set anywhere)."""
    return "authentication" in str(exc).lower()


NO_KEY = "no API key: set ANTHROPIC_API_KEY (or run offline with --offline)"


def _scrub(message: str, secret: str | None) -> str:
    if secret:
        message = message.replace(secret, "***")
    return message[:MAX_MESSAGE_CHARS]


class AnthropicProvider:
    """A :class:`~workers.providers.base.Provider` over the anthropic SDK (API, Bedrock, Vertex).

    The SDK client is made on the first call, inside the running event loop
    (the aiohttp transport needs one), so constructing this object is loop-free.
    Use one instance per event loop and close it with :meth:`aclose`.
    """

    def __init__(
        self,
        provider: str = "anthropic",
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; expected one of {sorted(PROVIDERS)}")
        self.provider = provider
        self._api_key = api_key
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._client: Client | None = None

    def __repr__(self) -> str:  # never show the key
        return f"AnthropicProvider(provider={self.provider!r}, base_url={self._base_url!r})"

    def _make_client(self) -> Client:
        # max_retries=0: our own retry policy (backoff, retry-after, breaker) owns retries;
        # SDK retries would multiply attempts and hide failures from it.
        common: dict[str, Any] = {
            "base_url": self._base_url,
            "timeout": self._timeout_s,
            "max_retries": 0,
            "http_client": anthropic.DefaultAioHttpClient(),
        }
        if self.provider == "bedrock":
            from anthropic import AsyncAnthropicBedrock

            return AsyncAnthropicBedrock(**common)
        if self.provider == "vertex":
            from anthropic import AsyncAnthropicVertex

            return AsyncAnthropicVertex(**common)
        return anthropic.AsyncAnthropic(api_key=self._api_key, **common)

    async def classify(self, request: ClassifyRequest) -> Reply:
        params = build_params(request)
        try:
            if self._client is None:
                self._client = self._make_client()
            # The raw response: the same parse as create() plus the headers, for the limiter.
            raw = await self._client.messages.with_raw_response.create(**params)
            message = await raw.parse()
        except anthropic.AnthropicError as exc:
            raise sdk_error(exc, self._api_key, self._timeout_s) from exc
        except TypeError as exc:
            if _no_credentials(exc):
                raise AuthError(NO_KEY) from exc
            raise
        return parse_reply(message, request.mechanism, rate_limit_headers(raw.headers))

    async def count_tokens(self, model: str, text: str) -> int:
        """One token-count call (free): proves the key and the endpoint work."""
        try:
            if self._client is None:
                self._client = self._make_client()
            counted = await self._client.messages.count_tokens(
                model=model, messages=[{"role": "user", "content": text}]
            )
        except anthropic.APIError as exc:  # not a client set-up error: that one propagates
            raise sdk_error(exc, self._api_key, self._timeout_s) from exc
        except TypeError as exc:
            if _no_credentials(exc):
                raise AuthError(NO_KEY) from exc
            raise
        return int(counted.input_tokens)

    @property
    def batches(self) -> AnthropicBatches:
        """The Message Batches calls, on this provider's client."""
        return AnthropicBatches(self)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


# -- Message Batches ------------------------------------------------------------
# An errored batch request carries the error body but no HTTP status: the status its
# type stands for feeds the same classification as a realtime error.
BATCH_ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
T = TypeVar("T")


def map_batch_error(
    error_type: str, message: str, request_id: str | None = None, secret: str | None = None
) -> ProviderError:
    """One errored batch request -> our error tree, classified like a realtime error."""
    status = BATCH_ERROR_STATUS.get(error_type, 500)
    detail = _scrub(f"{error_type}: {message}", secret)
    common: dict[str, Any] = {"status": status, "request_id": request_id}
    lowered = message.lower()
    spend = error_type in SPEND_LIMIT_CODES or any(w in lowered for w in SPEND_LIMIT_WORDS)
    if status == 402 or (status in (400, 403, 429) and spend):
        return SpendLimitError(detail, **common)
    if status in (408, 409, 429) or status >= 500:
        return TransientError(detail, **common)
    if status == 400 and "prompt is too long" in lowered:
        return ContextError(detail, **common)
    if status in (401, 403):
        return AuthError(detail, **common)
    return PermanentError(detail, **common)


def batch_outcome(result: Any, mechanism: str, secret: str | None = None) -> Reply | ProviderError:
    """One ``MessageBatchResult`` -> a reply or the error it stands for."""
    if result.type == "succeeded":
        return parse_reply(result.message, mechanism)
    if result.type == "errored":
        err = result.error.error
        return map_batch_error(err.type, err.message, result.error.request_id, secret)
    # canceled or expired: never ran; may pass with time, so the fallback path treats it so
    return TransientError("expired" if result.type == "expired" else f"expired ({result.type})")


class AnthropicBatches:
    """The Message Batches half of the adapter (a :class:`~workers.providers.base.BatchProvider`).

    Only the Anthropic API has batches: the Bedrock and Vertex SDK clients raise
    "Batch API is not supported" (anthropic-api-facts.md §6), so they are refused here.
    """

    def __init__(self, provider: AnthropicProvider) -> None:
        self._p = provider

    def _client(self) -> anthropic.AsyncAnthropic:
        if self._p.provider != "anthropic":
            raise PermanentError(
                f"the Message Batches API is not available on {self._p.provider}: "
                'use provider = "anthropic" on a batch tier'
            )
        if self._p._client is None:
            self._p._client = self._p._make_client()
        return cast(anthropic.AsyncAnthropic, self._p._client)

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except anthropic.AnthropicError as exc:
            raise sdk_error(exc, self._p._api_key, self._p._timeout_s) from exc
        except TypeError as exc:  # as in classify: no key is an auth failure, not a crash
            if _no_credentials(exc):
                raise AuthError(NO_KEY) from exc
            raise

    async def create_batch(self, requests: Sequence[tuple[str, ClassifyRequest]]) -> str:
        body = [{"custom_id": cid, "params": build_params(r)} for cid, r in requests]
        client = self._client()
        batch = await self._guard(client.messages.batches.create(requests=cast(Any, body)))
        return batch.id

    async def retrieve_batch(self, batch_id: str) -> BatchStatus:
        client = self._client()
        batch = await self._guard(client.messages.batches.retrieve(batch_id))
        c = batch.request_counts
        counts = {
            "processing": c.processing,
            "succeeded": c.succeeded,
            "errored": c.errored,
            "canceled": c.canceled,
            "expired": c.expired,
        }
        return BatchStatus(batch.id, batch.processing_status, counts)

    async def batch_results(
        self, batch_id: str, mechanism: str
    ) -> dict[str, Reply | ProviderError]:
        client = self._client()

        async def collect() -> dict[str, Reply | ProviderError]:
            out: dict[str, Reply | ProviderError] = {}
            async for line in await client.messages.batches.results(batch_id):
                out[line.custom_id] = batch_outcome(line.result, mechanism, self._p._api_key)
            return out

        return await self._guard(collect())

"""The only module that imports ``anthropic``: one SDK client per provider object,
requests built per mechanism, and every SDK failure mapped into the
:mod:`workers.providers.base` error tree (through :mod:`workers.providers.replies`, which
reads replies and error bodies for both ways of calling)::

    APIStatusError ................................ by status and error body (replies.py)
    APITimeoutError, APIConnectionError ........... TransientError
    other APIError (e.g. a reply it cannot read) .. TransientError
    no key to send at all (the SDK's TypeError) ... AuthError
    anything else (client set-up) ................. PermanentError

A realtime call on the Anthropic API goes through :mod:`workers.providers.direct` (the
same request, a quarter of the CPU); the SDK sends Bedrock and Vertex calls, batches
and token counts, and resolves the key, base URL and headers for both.

The API's ``anthropic-ratelimit-*`` response headers, of a reply and of an error
alike, ride along as ``rate_limits`` on the :class:`Reply` or the error, so the
rate limiter can adapt to what the API says is left.

The API key is never logged nor copied into an error message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import anthropic
from anthropic.types import MessageParam, ToolChoiceParam, ToolParam

from workers.providers.base import (
    TOOL_NAME,
    AuthError,
    BatchStatus,
    ClassifyRequest,
    PermanentError,
    ProviderError,
    Reply,
    TransientError,
    classification_schema,
)
from workers.providers.direct import NO_KEY, MessagesEndpoint
from workers.providers.replies import map_batch_error, parse_reply, reply_of, status_error

if TYPE_CHECKING:
    from anthropic import AsyncAnthropicBedrock, AsyncAnthropicVertex

    Client = anthropic.AsyncAnthropic | AsyncAnthropicBedrock | AsyncAnthropicVertex

PROVIDERS: Final = frozenset({"anthropic", "bedrock", "vertex"})
TOOL_DESCRIPTION: Final = (
    "Record the classification of the item: one label from the allowed set, "
    "a confidence between 0 and 1, and a short reason."
)


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


def map_status_error(exc: anthropic.APIStatusError, secret: str | None = None) -> ProviderError:
    """One SDK status error -> our error tree. Pure; the caller raises it ``from exc``."""
    return status_error(exc.status_code, exc.body, exc.response.headers, exc.request_id, secret)


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
        self._direct: MessagesEndpoint | None = None

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

    def _sdk(self) -> Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _endpoint(self) -> MessagesEndpoint:
        """The direct Messages endpoint, with the URL and headers the SDK client resolved
        (key from the argument or ANTHROPIC_API_KEY, base URL, anthropic-version)."""
        if self._direct is None:
            client = self._sdk()
            headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
            secret = getattr(client, "api_key", None) or self._api_key
            self._direct = MessagesEndpoint(str(client.base_url), headers, self._timeout_s, secret)
        return self._direct

    async def classify(self, request: ClassifyRequest) -> Reply:
        params = build_params(request)
        if self.provider == "anthropic":
            return await self._endpoint().create(params, request.mechanism)
        try:  # Bedrock and Vertex: their requests are signed by the SDK's cloud clients
            raw = await self._sdk().messages.with_raw_response.create(**params)
            body = await raw.read()
        except anthropic.AnthropicError as exc:
            raise sdk_error(exc, self._api_key, self._timeout_s) from exc
        except TypeError as exc:
            if _no_credentials(exc):
                raise AuthError(NO_KEY) from exc
            raise
        return reply_of(body, request.mechanism, raw.headers, raw.request_id)

    async def count_tokens(self, model: str, text: str) -> int:
        """One token-count call (free): proves the key and the endpoint work."""
        try:
            counted = await self._sdk().messages.count_tokens(
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
        direct, self._direct = self._direct, None
        if direct is not None:
            await direct.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.close()


# -- Message Batches ------------------------------------------------------------
T = TypeVar("T")


def batch_outcome(result: Any, mechanism: str, secret: str | None = None) -> Reply | ProviderError:
    """One ``MessageBatchResult`` -> a reply or the error it stands for."""
    if result.type == "succeeded":
        return parse_reply(result.message.to_dict(mode="json"), mechanism)
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
        return cast(anthropic.AsyncAnthropic, self._p._sdk())

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

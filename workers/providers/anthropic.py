"""The only module that imports ``anthropic``: one SDK client, requests built per mechanism,
replies parsed into :class:`~workers.providers.base.Reply`, and every SDK failure
mapped once into the :mod:`workers.providers.base` error tree::

    RateLimitError 429 ─┬─ spend limit reached (type/code/message) ... SpendLimitError
                        └─ otherwise ................................ TransientError (+ retry-after)
    402 / spend-limit markers on 400 ................................ SpendLimitError
    408, 409, 5xx (incl. 529 OverloadedError) ....................... TransientError
    APITimeoutError, APIConnectionError ............................. TransientError
    400 "prompt is too long" ........................................ ContextError
    other 400, 401, 403, 404, 413, 422, other 4xx ................... PermanentError

The API key is never logged nor copied into an error message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final

import anthropic
from anthropic.types import Message, MessageParam, ToolChoiceParam, ToolParam

from workers.providers.base import (
    TOOL_NAME,
    ClassifyRequest,
    ContextError,
    PermanentError,
    ProviderError,
    Reply,
    SpendLimitError,
    TransientError,
    Usage,
)

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


def classification_schema(labels: Sequence[str]) -> dict[str, Any]:
    """JSON schema of the structured answer: used as tool input schema and as output format."""
    return {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": list(labels)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string", "maxLength": 200},
        },
        "required": ["label", "confidence", "reason"],
        "additionalProperties": False,
    }


def build_params(request: ClassifyRequest) -> dict[str, Any]:
    """Keyword arguments for ``messages.create``. Never any temperature/top_p/top_k."""
    messages: list[MessageParam] = [{"role": "user", "content": request.user}]
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "system": request.system,
        "messages": messages,
    }
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


def parse_reply(message: Message, mechanism: str) -> Reply:
    texts: list[str] = []
    structured: dict[str, Any] | None = None
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use" and block.name == TOOL_NAME and structured is None:
            structured = dict(block.input) if isinstance(block.input, Mapping) else None
    text = "".join(texts)
    if mechanism == "json_schema":
        structured = _json_object(text)
    usage = message.usage
    return Reply(
        stop_reason=message.stop_reason,
        structured=structured,
        text=text,
        usage=Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
        ),
        request_id=message._request_id,
    )


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _is_spend_limit(exc: anthropic.APIStatusError) -> bool:
    if exc.type in SPEND_LIMIT_CODES or exc.error_code in SPEND_LIMIT_CODES:
        return True
    message = (exc.api_message or "").lower()
    return any(words in message for words in SPEND_LIMIT_WORDS)


def map_status_error(exc: anthropic.APIStatusError, secret: str | None = None) -> ProviderError:
    """One SDK status error -> our error tree. Pure; the caller raises it ``from exc``."""
    status = exc.status_code
    detail = _scrub(f"{exc.type or 'error'}: {exc.api_message or f'HTTP {status}'}", secret)
    common: dict[str, Any] = {"status": status, "request_id": exc.request_id}
    if status == 402 or (status in (400, 403, 429) and _is_spend_limit(exc)):
        return SpendLimitError(detail, **common)
    if status in (408, 409, 429) or status >= 500:
        retry_after = parse_retry_after(exc.response.headers)
        return TransientError(detail, retry_after_s=retry_after, **common)
    if status == 400 and "prompt is too long" in (exc.api_message or "").lower():
        return ContextError(detail, **common)
    return PermanentError(detail, **common)


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
            message = await self._client.messages.create(**params)
        except anthropic.APIStatusError as exc:
            raise map_status_error(exc, self._api_key) from exc
        except anthropic.APITimeoutError as exc:
            raise TransientError(f"timeout: no reply within {self._timeout_s:g} s") from exc
        except anthropic.APIConnectionError as exc:
            cause = type(exc.__cause__ or exc).__name__
            raise TransientError(f"connection error: {cause}") from exc
        except anthropic.APIError as exc:  # e.g. a 200 reply the SDK could not parse
            raise TransientError(f"api error: {type(exc).__name__}") from exc
        except anthropic.AnthropicError as exc:  # client set-up, e.g. missing cloud credentials
            raise PermanentError(f"client error: {type(exc).__name__}") from exc
        return parse_reply(message, request.mechanism)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

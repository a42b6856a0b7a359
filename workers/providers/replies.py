"""What the Messages API sent back, read without the SDK: a reply's JSON into a
:class:`~workers.providers.base.Reply`, and an error (an HTTP status with its error
body, or an errored batch request) into the :mod:`workers.providers.base` error tree::

    429 ─┬─ spend limit reached (type/code/message) ...... SpendLimitError
         └─ otherwise ..................................... TransientError (+ retry-after)
    402 / spend-limit markers on 400 or 403 ............... SpendLimitError
    408, 409, 5xx (incl. 529 overloaded) .................. TransientError
    400 "prompt is too long" .............................. ContextError
    401, 403 .............................................. AuthError
    other 400, 404, 413, 422, other 4xx ................... PermanentError

Both ways of calling the API (the SDK for batches, Bedrock and Vertex; the direct
Messages endpoint of :mod:`workers.providers.direct`) read replies and errors here, so
they are told apart the same way. The API key is scrubbed from every message kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from workers.providers.base import (
    TOOL_NAME,
    AuthError,
    ContextError,
    PermanentError,
    ProviderError,
    Reply,
    SpendLimitError,
    TransientError,
    Usage,
    json_object,
)
from workers.providers.headers import parse_retry_after, rate_limit_headers

SPEND_LIMIT_CODES: Final = frozenset(
    {"enforced_spend_limit_reached", "contract_spend_limit_reached", "billing_error"}
)
SPEND_LIMIT_WORDS: Final = ("spend limit", "usage limits")
MAX_MESSAGE_CHARS: Final = 300
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


def parse_reply(
    body: Mapping[str, Any],
    mechanism: str,
    rate_limits: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> Reply:
    """A Messages API reply, as the JSON the API sent (a realtime body, or a batch
    result's ``message``), -> :class:`Reply`. Read straight from the wire format: building
    the SDK's pydantic ``Message`` first cost a third of the SDK path's CPU per call
    (``python -m bench.call_cpu``: sdk 1.33 vs sdk-model 1.96 ms, 2026-12-07) for fields
    read once.

    Raises :class:`TransientError` for a 200 whose body is not a message (the API's
    contract broken, as the SDK's ``APIResponseValidationError`` would)."""
    content = body.get("content")
    usage = body.get("usage")
    if not isinstance(content, list) or not isinstance(usage, Mapping):
        raise TransientError("api error: a 200 reply that is not a message")
    texts: list[str] = []
    structured: dict[str, Any] | None = None
    for block in content:
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use" and block.get("name") == TOOL_NAME and structured is None:
            given = block.get("input")
            structured = dict(given) if isinstance(given, Mapping) else None
    text = "".join(texts)
    if mechanism == "json_schema":
        structured = json_object(text)
    by_ttl = usage.get("cache_creation")
    return Reply(
        stop_reason=body.get("stop_reason"),
        structured=structured,
        text=text,
        usage=Usage(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_write_tokens=_count(usage, "cache_creation_input_tokens"),
            cache_read_tokens=_count(usage, "cache_read_input_tokens"),
            cache_write_1h_tokens=(
                _count(by_ttl, "ephemeral_1h_input_tokens") if isinstance(by_ttl, Mapping) else 0
            ),
        ),
        request_id=request_id,
        rate_limits=rate_limits,
    )


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) else 0


def reply_of(
    raw: bytes, mechanism: str, headers: Mapping[str, str], request_id: str | None
) -> Reply:
    """A 200 response's body and headers -> :class:`Reply`; a body that is not a message
    (a proxy's page, a cut body) is a :class:`TransientError`."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise TransientError("api error: a 200 reply that is not JSON") from exc
    if not isinstance(body, dict):
        raise TransientError("api error: a 200 reply that is not a message")
    return parse_reply(body, mechanism, rate_limit_headers(headers), request_id)


def scrub(message: str, secret: str | None) -> str:
    if secret:
        message = message.replace(secret, "***")
    return message[:MAX_MESSAGE_CHARS]


def _field(body: object, *path: str) -> str | None:
    for key in path:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body if isinstance(body, str) else None


def status_error(
    status: int,
    body: object,
    headers: Mapping[str, str] | None,
    request_id: str | None,
    secret: str | None = None,
) -> ProviderError:
    """An HTTP error status and its JSON error body (``{"error": {"type", "message",
    "details": {"error_code"}}}``, or None when it was not JSON) -> our error tree.
    Pure; the caller raises it."""
    kind = _field(body, "error", "type")
    code = _field(body, "error", "details", "error_code")
    message = _field(body, "error", "message") or ""
    detail = scrub(f"{kind or 'error'}: {message or f'HTTP {status}'}", secret)
    common: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "rate_limits": rate_limit_headers(headers) if headers is not None else None,
    }
    lowered = message.lower()
    spend = (
        kind in SPEND_LIMIT_CODES
        or code in SPEND_LIMIT_CODES
        or any(words in lowered for words in SPEND_LIMIT_WORDS)
    )
    if status == 402 or (status in (400, 403, 429) and spend):
        return SpendLimitError(detail, **common)
    if status in (408, 409, 429) or status >= 500:
        retry_after = parse_retry_after(headers) if headers is not None else None
        return TransientError(detail, retry_after_s=retry_after, **common)
    if status == 400 and "prompt is too long" in lowered:
        return ContextError(detail, **common)
    if status in (401, 403):
        return AuthError(detail, **common)
    return PermanentError(detail, **common)


def map_batch_error(
    error_type: str, message: str, request_id: str | None = None, secret: str | None = None
) -> ProviderError:
    """One errored batch request -> our error tree, classified like a realtime error."""
    status = BATCH_ERROR_STATUS.get(error_type, 500)
    body = {"error": {"type": error_type, "message": message}}
    return status_error(status, body, None, request_id, secret)

"""The Messages endpoint of the Anthropic API, called directly over one aiohttp session.

A realtime call is the one request the workers send at volume, and through the SDK it
costs 1.33 ms of CPU in the worker's process against 0.48 ms for the same request sent
here (``python -m bench.call_cpu``, medians, 2026-12-07); on 2-core machines the
workers' CPU is what bounds the calls in flight. So for ``provider = "anthropic"``
the realtime call goes here; batches, token counts, Bedrock and Vertex (whose requests
are signed by their cloud's credentials) stay on the SDK.

What is sent is what the SDK sends for the same call: the URL and headers (key,
``anthropic-version``, user agent) are the SDK client's own, the body is the JSON of
:func:`workers.providers.anthropic.build_params` (a test compares the two requests).
Replies and errors are read by :mod:`workers.providers.replies`, as the SDK path's are.
No retries here: the retry policy, the breaker and the rate limiter own them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from workers.providers.base import AuthError, Reply, TransientError
from workers.providers.replies import reply_of, status_error

NO_KEY: Final = "no API key: set ANTHROPIC_API_KEY (or run offline with --offline)"
AUTH_HEADERS: Final = frozenset({"authorization", "x-api-key"})


class MessagesEndpoint:
    """``POST {base_url}/v1/messages``, one aiohttp session per event loop (made on first
    use). ``secret`` (the key) is scrubbed from every error message."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], timeout_s: float, secret: str | None
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._headers = dict(headers)
        self._timeout_s = timeout_s
        self._secret = secret
        self._keyed = any(name.lower() in AUTH_HEADERS for name in headers)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never show the key
        return f"MessagesEndpoint(url={self._url!r})"

    async def create(self, params: Mapping[str, Any], mechanism: str) -> Reply:
        if not self._keyed:
            raise AuthError(NO_KEY)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # the executor bounds the calls
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            )
        try:
            async with self._session.post(
                self._url, data=_encode(params), headers=self._headers
            ) as response:
                status, headers, raw = response.status, response.headers, await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransientError(f"timeout: no reply within {self._timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(f"connection error: {type(exc).__name__}") from exc
        request_id = headers.get("request-id")
        if status >= 300:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None  # a proxy's page: classified by its status alone
            raise status_error(status, body, headers, request_id, self._secret)
        return reply_of(raw, mechanism, headers, request_id)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _encode(params: Mapping[str, Any]) -> bytes:
    """The body as the SDK writes it: compact UTF-8 JSON."""
    return json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()

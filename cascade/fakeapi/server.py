"""A local fake of the Anthropic Messages API, for tests, benchmarks and the offline demo.

Wire-compatible enough for the real ``anthropic`` SDK: message envelopes,
error bodies, ``request-id`` headers, per-model rules, injectable faults
per model, and optional per-model rate limits with the API's
``anthropic-ratelimit-*`` headers (:mod:`cascade.fakeapi.ratelimits`); the
request -> reply logic lives in :mod:`cascade.fakeapi.wire`. This module adds
the HTTP side: auth, rate limits, latency, dropped connections, hangs, the
``/_fake/*`` control endpoints, and :class:`FakeServer`, which runs the app on
its own event loop in a daemon thread for sync callers.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

from aiohttp import web

from cascade.fakeapi.batches import add_batch_routes
from cascade.fakeapi.latency import LatencySpec
from cascade.fakeapi.ratelimits import FakeRateLimits
from cascade.fakeapi.reqlog import Entry, RequestLog, item_digest
from cascade.fakeapi.request import MODELS, input_tokens, item_text, user_text
from cascade.fakeapi.wire import (
    FakeConfig,
    FakeState,
    Fault,
    ModelStats,
    Outcome,
    answer,
    error_outcome,
)

T = TypeVar("T")


STATE_KEY = web.AppKey("fake_state", FakeState)
LOG_KEY = web.AppKey("fake_request_log", RequestLog)


def _respond(outcome: Outcome, request_id: str) -> web.Response:
    headers = {"request-id": request_id, **outcome.headers}
    return web.Response(
        status=outcome.status,
        body=json.dumps(outcome.body).encode(),
        content_type="application/json",
        headers=headers,
    )


def _authorised(request: web.Request) -> bool:
    return bool(request.headers.get("x-api-key") or request.headers.get("authorization"))


async def _read_json(request: web.Request) -> dict[str, Any] | None:
    try:
        data = await request.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def handle_messages(request: web.Request) -> web.StreamResponse:
    """A Messages call; its reply is sent here (not after return) so the log knows it went."""
    state = request.app[STATE_KEY]
    entry = Entry(f"req_fake_{state.next_id()}", time.time())
    try:
        outcome = await _messages(request, state, entry)
        if outcome is None:  # dropped on purpose: nothing to send
            entry.outcome = "dropped"
            return web.Response(status=500)
        response = _respond(outcome, entry.request_id)
        entry.status, entry.usage = outcome.status, outcome.body.get("usage")
        entry.refusal = outcome.refusal
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:  # the client went away first; aiohttp ends the connection
            return response
        entry.sent = time.time()
        entry.outcome = "ok" if outcome.status == 200 else "error"
        return response
    finally:  # cancelled (the client gave up) or failed: the entry says cut_off
        entry.ended = time.time()
        state.outcomes[entry.outcome] = state.outcomes.get(entry.outcome, 0) + 1
        request.app[LOG_KEY].write(entry)


async def _messages(request: web.Request, state: FakeState, entry: Entry) -> Outcome | None:
    """The reply to send, or None when the connection was dropped on purpose."""
    request_id = entry.request_id
    arrived = state.cache.clock()  # a prompt-cache write completing later is not read
    body = await _read_json(request)
    state.requests += 1
    if body is None:
        return error_outcome(400, "request body must be a JSON object", request_id)
    model = entry.model = str(body.get("model"))
    entry.item = item_digest(item_text(user_text(body)))
    stats = state.by_model.setdefault(model, ModelStats())
    stats.calls += 1
    if not _authorised(request):
        outcome = error_outcome(401, "x-api-key header is required", request_id)
        state.record(model, outcome)
        return outcome

    limited = None
    if state.buckets is not None:  # rate limits configured: take from the model's buckets
        limited = state.buckets.take(model, input_tokens(body), _max_tokens(body))
        if not limited.ok:
            outcome = error_outcome(429, f"rate limit exceeded for {model}", request_id)
            outcome.headers.update(limited.headers)
            outcome.headers["retry-after"] = str(math.ceil(limited.retry_after_s))
            state.record(model, outcome)
            return outcome
    fault = state.faults.get(model)
    delay = state.delay_s(model) + (fault.hang_s if fault is not None else 0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    if fault is not None and state.chance(fault.drop_rate) and request.transport is not None:
        stats.dropped += 1
        request.transport.close()  # the client sees the connection drop; this reply is never sent
        return None
    outcome = answer(state, body, request_id, arrived)
    if limited is not None:
        outcome.headers.update(limited.headers)
    state.record(model, outcome)
    return outcome


def _max_tokens(body: Mapping[str, Any]) -> int:
    value = body.get("max_tokens")
    return value if isinstance(value, int) else 0


async def handle_count_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    request_id = f"req_fake_{state.next_id()}"
    body = await _read_json(request)
    if body is None:
        outcome = error_outcome(400, "request body must be a JSON object", request_id)
    elif not _authorised(request):
        outcome = error_outcome(401, "x-api-key header is required", request_id)
    elif str(body.get("model")) not in MODELS:
        outcome = error_outcome(404, f"model: {body.get('model')}", request_id)
    else:
        outcome = Outcome(200, {"input_tokens": input_tokens(body)})
    return _respond(outcome, request_id)


async def handle_set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await _read_json(request)
    model = body.pop("model", None) if body is not None else None
    if body is None or not isinstance(model, str):
        return web.json_response({"error": "expected a JSON object with a 'model'"}, status=400)
    try:
        state.faults[model] = Fault.from_mapping(body)
    except (TypeError, ValueError, re.error) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"ok": True})


async def handle_reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"ok": True})


async def handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].stats())


def make_app(config: FakeConfig) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = FakeState(config)
    app[LOG_KEY] = RequestLog(config.request_log)

    async def close_log(app: web.Application) -> None:
        app[LOG_KEY].close()

    app.on_cleanup.append(close_log)
    app.router.add_post("/v1/messages", handle_messages)
    app.router.add_post("/v1/messages/count_tokens", handle_count_tokens)
    add_batch_routes(app, app[STATE_KEY])  # Message Batches, built on `answer`
    app.router.add_post("/_fake/faults", handle_set_faults)
    app.router.add_post("/_fake/reset", handle_reset)
    app.router.add_get("/_fake/stats", handle_stats)
    return app


def bind_loopback(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def make_runner(app: web.Application) -> web.AppRunner:
    # handler_cancellation: a client that gives up (timeout) cancels its hanging handler.
    return web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)


class FakeServer:
    """Runs the fake on 127.0.0.1 in a daemon thread with its own event loop."""

    def __init__(
        self,
        latency_ms: float = 0,
        jitter_ms: float = 0,
        seed: int = 0,
        *,
        faults: Mapping[str, Mapping[str, Any]] | None = None,
        model_latency_ms: Mapping[str, float] | None = None,
        rate_limits: FakeRateLimits | None = None,
        latency: LatencySpec | None = None,
        model_latency: Mapping[str, LatencySpec] | None = None,
        request_log: str | Path | None = None,
        port: int = 0,
    ) -> None:
        self.config = FakeConfig(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            seed=seed,
            model_latency_ms=dict(model_latency_ms or {}),
            faults={m: Fault.from_mapping(f) for m, f in (faults or {}).items()},
            rate_limits=rate_limits,
            latency=latency,
            model_latency=dict(model_latency or {}),
            request_log=None if request_log is None else str(request_log),
        )
        self.app = make_app(self.config)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def state(self) -> FakeState:
        return self.app[STATE_KEY]

    def start(self) -> str:
        if self._thread is not None:
            return self.base_url
        sock = bind_loopback(self._port)
        port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        runner = make_runner(self.app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.SockSite(runner, sock).start())
        self._loop, self._runner = loop, runner
        self._thread = threading.Thread(
            target=loop.run_forever, name="fake-messages-api", daemon=True
        )
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (directly when not running) and return its value."""
        if self._loop is None:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        return self._call(self.state.stats)

    def set_faults(self, model: str, **fault: Any) -> None:
        """Replace ``model``'s faults (see :class:`~cascade.fakeapi.wire.Fault` for the keys)."""
        parsed = Fault.from_mapping(fault)
        self._call(lambda: self.state.faults.__setitem__(model, parsed))

    def reset(self) -> None:
        """Clear faults and stats."""
        self._call(self.state.reset)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

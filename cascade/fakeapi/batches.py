"""The fake's Message Batches endpoints: create, retrieve, results (JSONL).

A batch stays ``in_progress`` for ``BatchConfig.delay_s`` seconds, then ends; its
requests are answered when it ends, each by :func:`~cascade.fakeapi.wire.answer`
exactly as a realtime call would be (model faults and rules apply, stats count
each request as a call of its model). Items whose text matches ``errored_pattern``
come back ``errored``, those matching ``expired_pattern`` come back ``expired``,
so tests can prove none of them is lost.

Configure at run time with ``POST /_fake/batches`` (the keys of :class:`BatchConfig`)
or in-process through ``app[BATCHES_KEY].config``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from cascade.fakeapi.request import item_text, user_text
from cascade.fakeapi.wire import (
    FakeState,
    ModelStats,
    Outcome,
    answer,
    error_outcome,
)

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(slots=True)
class BatchConfig:
    delay_s: float = 0.0  # from create until the batch ends
    errored_pattern: str | None = None  # item text matching -> result "errored"
    errored_status: int = 500
    expired_pattern: str | None = None  # item text matching -> result "expired"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BatchConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown batch config keys: {sorted(unknown)}")
        config = cls(**dict(data))
        for pattern in (config.errored_pattern, config.expired_pattern):
            if pattern is not None:
                re.compile(pattern)
        return config


@dataclass(slots=True)
class FakeBatch:
    id: str
    created: datetime
    ends_at: float  # on the store's clock
    requests: list[tuple[str, dict[str, Any]]]
    results: list[dict[str, Any]] | None = None
    ended: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)


class BatchStore:
    """Every batch the fake has been given. Only touched from the server's loop thread."""

    def __init__(self, state: FakeState, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.config = BatchConfig()
        self.clock = clock
        self.batches: dict[str, FakeBatch] = {}

    def create(self, requests: list[tuple[str, dict[str, Any]]]) -> FakeBatch:
        batch_id = f"msgbatch_fake_{self.state.next_id():06d}"
        batch = FakeBatch(batch_id, datetime.now(UTC), self.clock() + self.config.delay_s, requests)
        self.batches[batch_id] = batch
        return batch

    def settle(self, batch: FakeBatch) -> None:
        """Answer every request once the batch's time has come."""
        if batch.results is not None or self.clock() < batch.ends_at:
            return
        results: list[dict[str, Any]] = []
        counts = dict.fromkeys(("succeeded", "errored", "canceled", "expired"), 0)
        for custom_id, params in batch.requests:
            result = self._one(params)
            counts[result["type"]] += 1
            results.append({"custom_id": custom_id, "result": result})
        batch.results, batch.counts, batch.ended = results, counts, datetime.now(UTC)

    def _one(self, params: dict[str, Any]) -> dict[str, Any]:
        config = self.config
        text = item_text(user_text(params))
        if config.expired_pattern and re.search(config.expired_pattern, text):
            return {"type": "expired"}
        request_id = f"req_fake_{self.state.next_id()}"
        model = str(params.get("model"))
        stats = self.state.by_model.setdefault(model, ModelStats())
        stats.calls += 1
        if config.errored_pattern and re.search(config.errored_pattern, text):
            outcome: Outcome = error_outcome(
                config.errored_status, "fake batch request error", request_id
            )
        else:
            outcome = answer(self.state, params, request_id)
        self.state.record(model, outcome)
        if outcome.status == 200:
            return {"type": "succeeded", "message": outcome.body}
        return {"type": "errored", "error": outcome.body}

    def describe(self, batch: FakeBatch, base_url: str) -> dict[str, Any]:
        self.settle(batch)
        ended = batch.results is not None
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if ended:
            counts |= batch.counts
        else:
            counts["processing"] = len(batch.requests)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": batch.created.isoformat(),
            "expires_at": (batch.created + timedelta(hours=24)).isoformat(),
            "ended_at": batch.ended.isoformat() if batch.ended else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }


BATCHES_KEY = web.AppKey("fake_batches", BatchStore)


def _error(status: int, message: str, store: BatchStore) -> web.Response:
    request_id = f"req_fake_{store.state.next_id()}"
    outcome = error_outcome(status, message, request_id)
    return web.json_response(outcome.body, status=status, headers={"request-id": request_id})


def _authorised(request: web.Request) -> bool:
    return bool(request.headers.get("x-api-key") or request.headers.get("authorization"))


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def validate(body: Any) -> list[tuple[str, dict[str, Any]]] | str:
    """The batch's (custom_id, params) pairs, or why the real API would answer 400."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return "requests: at least one request is required"
    if len(requests) > MAX_REQUESTS:
        return f"requests: at most {MAX_REQUESTS} requests per batch"
    seen: set[str] = set()
    out: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(requests):
        cid = entry.get("custom_id") if isinstance(entry, dict) else None
        params = entry.get("params") if isinstance(entry, dict) else None
        if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
            return f"requests[{i}].custom_id: must match {CUSTOM_ID.pattern}"
        if cid in seen:
            return f"requests[{i}].custom_id: {cid!r} is not unique in the batch"
        if not isinstance(params, dict):
            return f"requests[{i}].params: an object is required"
        seen.add(cid)
        out.append((cid, params))
    return out


async def handle_create(request: web.Request) -> web.Response:
    store = request.app[BATCHES_KEY]
    if not _authorised(request):
        return _error(401, "x-api-key header is required", store)
    raw = await request.read()
    if len(raw) > MAX_BYTES:
        return _error(413, "batch larger than 256 MB", store)
    try:
        body = json.loads(raw)
    except ValueError:
        return _error(400, "request body must be a JSON object", store)
    checked = validate(body)
    if isinstance(checked, str):
        return _error(400, checked, store)
    batch = store.create(checked)
    return web.json_response(store.describe(batch, _base_url(request)))


def _find(request: web.Request) -> FakeBatch | web.Response:
    store = request.app[BATCHES_KEY]
    if not _authorised(request):
        return _error(401, "x-api-key header is required", store)
    batch = store.batches.get(request.match_info["batch_id"])
    if batch is None:
        return _error(404, f"message batch {request.match_info['batch_id']} not found", store)
    return batch


async def handle_retrieve(request: web.Request) -> web.Response:
    found = _find(request)
    if isinstance(found, web.Response):
        return found
    return web.json_response(request.app[BATCHES_KEY].describe(found, _base_url(request)))


async def handle_results(request: web.Request) -> web.Response:
    found = _find(request)
    if isinstance(found, web.Response):
        return found
    store = request.app[BATCHES_KEY]
    store.settle(found)
    if found.results is None:
        return _error(400, f"message batch {found.id} has not ended yet", store)
    lines = "".join(json.dumps(r) + "\n" for r in found.results)
    return web.Response(body=lines.encode(), content_type="application/binary")


async def handle_config(request: web.Request) -> web.Response:
    try:
        data = await request.json()
        request.app[BATCHES_KEY].config = BatchConfig.from_mapping(data)
    except (TypeError, ValueError, re.error) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"ok": True})


def add_batch_routes(app: web.Application, state: FakeState) -> None:
    app[BATCHES_KEY] = BatchStore(state)
    app.router.add_post("/v1/messages/batches", handle_create)
    app.router.add_get("/v1/messages/batches/{batch_id}", handle_retrieve)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", handle_results)
    app.router.add_post("/_fake/batches", handle_config)

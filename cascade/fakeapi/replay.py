"""Replay mode: the fake Messages API answers with answers recorded from real models.

A :class:`ReplayBook` maps a model name to, per item text, what that model
answered when it was really asked (:class:`Recorded`: the raw completion, a
confidence and what the call cost). The replay app speaks the same wire format
as the fake (the real ``anthropic`` SDK and our provider adapter talk to it
unchanged), so the real engine runs the cascade over recorded answers:

- a recorded completion that is one of the request's labels (case-insensitive)
  comes back as the structured answer (a tool call, or JSON text for
  ``json_schema``), with the book's confidence and the reason
  ``"recorded answer of <model>"``;
- any other completion (a model that rambled) comes back as plain text, which
  the engine judges malformed: never accepted;
- cost: the reply's usage is **denominated in nano-USD**: ``input_tokens`` is the
  recorded cost of the call in nano-USD and ``output_tokens`` is 0, so a price
  table that bills a replay model 0.001 USD per million input tokens (one
  nano-USD per "token") makes the ledger's cost exactly the recorded cost
  (see :func:`replay_prices_toml`);
- an unknown model is a 404, an item the book does not hold a 400.

:class:`ReplayServer` runs it like :class:`~cascade.fakeapi.server.FakeServer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cascade.fakeapi.request import item_text, labels_of, user_text
from cascade.fakeapi.server import STATE_KEY, FakeServer
from cascade.fakeapi.wire import (
    FakeConfig,
    FakeState,
    ModelStats,
    Outcome,
    envelope,
    error_outcome,
    tool_use,
)


@dataclass(frozen=True, slots=True)
class Recorded:
    answer: str  # the raw completion the model gave
    confidence: float  # 0..1; recorded models rarely report one, so the book supplies it
    cost_nanos: int  # what the recorded call cost, in nano-USD


class ReplayBook:
    """Model -> item text -> recorded answer."""

    def __init__(self, answers: Mapping[str, Mapping[str, Recorded]]) -> None:
        self._answers = {m: dict(by_text) for m, by_text in answers.items()}

    @property
    def models(self) -> list[str]:
        return sorted(self._answers)

    def knows(self, model: str) -> bool:
        return model in self._answers

    def lookup(self, model: str, text: str) -> Recorded | None:
        return self._answers.get(model, {}).get(text)


BOOK_KEY = web.AppKey("replay_book", ReplayBook)


def replay_answer(state: FakeState, book: ReplayBook, body: Mapping[str, Any]) -> Outcome:
    """One Messages request body -> the recorded answer as a Messages reply. No I/O."""
    request_id = f"req_replay_{state.next_id()}"
    model = str(body.get("model"))
    if not book.knows(model):
        return error_outcome(404, f"model: {model} (not in the replay book)", request_id)
    text = item_text(user_text(body))
    recorded = book.lookup(model, text)
    if recorded is None:
        return error_outcome(400, f"no recorded answer of {model} for this item", request_id)
    labels = {label.lower(): label for label in labels_of(body)}
    label = labels.get(recorded.answer.strip().lower())
    tools = body.get("tools")
    content: list[dict[str, Any]]
    if label is None:
        content, stop = [{"type": "text", "text": recorded.answer}], "end_turn"
    else:
        result = {
            "label": label,
            "confidence": recorded.confidence,
            "reason": f"recorded answer of {model}",
        }
        if tools:
            content = [tool_use(tools, result, f"toolu_replay_{state.next_id()}")]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": json.dumps(result)}], "end_turn"
    usage = {  # nano-USD, see the module docstring
        "input_tokens": recorded.cost_nanos,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = envelope(state, model, content, stop, (usage, 0), source="replay")
    return Outcome(200, message)


async def handle_replay(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.requests += 1
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        outcome = error_outcome(400, "request body must be a JSON object", "req_replay_0")
    else:
        model = str(body.get("model"))
        state.by_model.setdefault(model, ModelStats()).calls += 1
        outcome = replay_answer(state, request.app[BOOK_KEY], body)
        state.record(model, outcome)
    request_id = str(outcome.body.get("request_id") or f"req_replay_{state.next_id()}")
    return web.Response(
        status=outcome.status,
        body=json.dumps(outcome.body).encode(),
        content_type="application/json",
        headers={"request-id": request_id, **outcome.headers},
    )


async def handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].stats())


def make_replay_app(config: FakeConfig, book: ReplayBook) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = FakeState(config)
    app[BOOK_KEY] = book
    app.router.add_post("/v1/messages", handle_replay)
    app.router.add_get("/_fake/stats", handle_stats)
    return app


class ReplayServer(FakeServer):
    """The replay app on 127.0.0.1 in a daemon thread (start/stop/stats as FakeServer)."""

    def __init__(self, book: ReplayBook, *, seed: int = 0, port: int = 0) -> None:
        super().__init__(seed=seed, port=port)
        self.book = book
        self.app = make_replay_app(self.config, book)


def replay_prices_toml(models: Iterable[str]) -> str:
    """A price file billing each replay model one nano-USD per (nano-USD) input token."""
    out = ["# Replay models: usage is denominated in nano-USD (see cascade.fakeapi.replay)."]
    for model in models:
        out += [
            f'["{model}"]',
            "input = 0.001",
            "output = 0",
            "cache_write_5m = 0",
            "cache_write_1h = 0",
            "cache_read = 0",
            'structured = "forced_tool"',
            "",
        ]
    return "\n".join(out)

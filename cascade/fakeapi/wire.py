"""The Messages API's behaviour without any I/O: request body in, status and body out.

:class:`FakeState` holds configuration, faults, counters and stats; :func:`answer`
turns one Messages request body into an :class:`Outcome` applying the model
catalogue, per-model rules (forced tool use, sampling parameters, structured
outputs) and the model-level faults (errors, refusals, malformed replies).
The HTTP layer (:mod:`cascade.fakeapi.server`) adds auth, latency, drops and
hangs around it; a future Message Batches endpoint reuses :func:`answer` per
request of a batch.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cascade.fakeapi.brain import VERDICT_LABELS, Verdict, classify, verify
from cascade.fakeapi.cache import FakeCache
from cascade.fakeapi.latency import LatencySpec, sample_ms
from cascade.fakeapi.ratelimits import FakeBuckets, FakeRateLimits
from cascade.fakeapi.request import (
    MODELS,
    check_rules,
    input_tokens,
    item_text,
    labels_of,
    text_of,
    user_text,
)

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 408: "timeout_error",
    409: "conflict_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 503: "api_error", 504: "timeout_error", 529: "overloaded_error",
}  # fmt: skip
MALFORMED_TEXT = "I think it's billing"
_PROPOSED = re.compile(r"<proposed_label>(.*?)</proposed_label>", re.DOTALL)
_SYSTEM_LABELS = re.compile(r"^Labels: (.+)\.$", re.MULTILINE)


@dataclass(slots=True)
class Fault:
    """Misbehaviour injected for one model. Rates are probabilities drawn from the seeded RNG."""

    error_status: int | None = None
    # Instead of one status: each failing call takes the next of these in turn (e.g.
    # [429, 529, 500]); retry_after is then sent with the 429s only.
    error_cycle: list[int] | None = None
    error_rate: float | None = None  # None with no error_every: every call fails
    error_every: int | None = None  # fail the N-th, 2N-th, ... call instead of at random
    error_type: str | None = None
    error_message: str | None = None
    retry_after: float | None = None
    refuse_pattern: str | None = None
    malformed_rate: float = 0.0
    drop_rate: float = 0.0
    hang_s: float = 0.0
    latency_ms: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        fault = cls(**dict(data))
        if fault.error_cycle is not None:
            if not fault.error_cycle or not all(isinstance(c, int) for c in fault.error_cycle):
                raise ValueError("error_cycle must be a non-empty list of HTTP statuses")
            fault.error_cycle = list(fault.error_cycle)
        if fault.refuse_pattern is not None:
            re.compile(fault.refuse_pattern)  # fail now, not on the next request
        return fault


@dataclass(slots=True)
class FakeConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int = 0
    model_latency_ms: dict[str, float] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    # None (the default): no rate limits enforced and no anthropic-ratelimit-* headers sent
    rate_limits: FakeRateLimits | None = None
    # A latency shape for every model (replaces latency_ms ± jitter_ms when set), and per
    # model (wins over model_latency_ms); a fault's latency_ms still wins over both.
    latency: LatencySpec | None = None
    model_latency: dict[str, LatencySpec] = field(default_factory=dict)
    # Append one JSON line per Messages request to this file (see cascade.fakeapi.reqlog).
    request_log: str | None = None


@dataclass(slots=True)
class ModelStats:
    calls: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    refusals: int = 0
    dropped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "ok": self.ok, "errors": dict(self.errors),
            "refusals": self.refusals, "dropped": self.dropped,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to send back for one request: a status, a JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    refusal: bool = False


class FakeState:
    """Everything that changes while the server runs. Only touched from the loop thread."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.faults: dict[str, Fault] = dict(config.faults)
        self.rng = random.Random(config.seed)
        # Latency shapes draw from their own stream, so a lognormal run meets the same
        # faults, in the same order of calls, as a constant-latency run of the same seed.
        self.latency_rng = random.Random(config.seed)
        self.counter = 0
        self.requests = 0
        self.by_model: dict[str, ModelStats] = {}
        self.outcomes: dict[str, int] = {}  # request log outcomes: ok | error | dropped | cut_off
        self.cycle_pos: dict[str, int] = {}  # model -> failing calls so far (Fault.error_cycle)
        self.buckets = _buckets(config)
        self.cache = FakeCache()  # prompt caching (cascade.fakeapi.cache)

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    def reset(self) -> None:
        self.faults = {}
        self.rng = random.Random(self.config.seed)
        self.latency_rng = random.Random(self.config.seed)
        self.counter = 0
        self.requests = 0
        self.by_model = {}
        self.outcomes = {}
        self.cycle_pos = {}
        self.buckets = _buckets(self.config)
        self.cache.reset()

    def stats(self) -> dict[str, Any]:
        by_model = {m: s.as_dict() for m, s in self.by_model.items()}
        out: dict[str, Any] = {
            "requests": self.requests,
            "by_model": by_model,
            "outcomes": dict(self.outcomes),
        }
        cache = self.cache.stats()
        if cache:  # only once a marked prefix long enough to cache was seen
            out["cache"] = cache
        return out

    def record(self, model: str, outcome: Outcome) -> None:
        stats = self.by_model.setdefault(model, ModelStats())
        if outcome.status != 200:
            key = str(outcome.status)
            stats.errors[key] = stats.errors.get(key, 0) + 1
            return
        usage = outcome.body.get("usage", {})
        stats.input_tokens += usage.get("input_tokens", 0)
        stats.output_tokens += usage.get("output_tokens", 0)
        stats.cache_write_tokens += usage.get("cache_creation_input_tokens", 0)
        stats.cache_read_tokens += usage.get("cache_read_input_tokens", 0)
        if outcome.refusal:
            stats.refusals += 1
        else:
            stats.ok += 1

    def delay_s(self, model: str) -> float:
        """The wait before answering: a fault's latency_ms, else the model's shape, else
        its model_latency_ms (± jitter), else the default shape, else latency_ms ± jitter."""
        fault = self.faults.get(model)
        config = self.config
        if fault is not None and fault.latency_ms is not None:
            base = fault.latency_ms
        elif model in config.model_latency:
            return sample_ms(config.model_latency[model], self.latency_rng) / 1000.0
        elif model in config.model_latency_ms or config.latency is None:
            base = config.model_latency_ms.get(model, config.latency_ms)
        else:
            return sample_ms(config.latency, self.latency_rng) / 1000.0
        jitter = self.config.jitter_ms
        if jitter:
            base += self.rng.uniform(-jitter, jitter)
        return max(base, 0.0) / 1000.0

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate


def _buckets(config: FakeConfig) -> FakeBuckets | None:
    return FakeBuckets(config.rate_limits) if config.rate_limits is not None else None


def error_outcome(
    status: int, message: str, request_id: str, error_type: str | None = None
) -> Outcome:
    kind = error_type or ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return Outcome(status, body)


def envelope(
    state: FakeState,
    model: str,
    content: list[dict[str, Any]],
    stop: str,
    tokens: tuple[dict[str, Any], int],
    *,
    source: str = "fake",
) -> dict[str, Any]:
    """A Messages reply; ``tokens`` is the usage's input side and its output tokens."""
    return {
        "id": f"msg_{source}_{state.next_id()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {**tokens[0], "output_tokens": tokens[1]},
    }


def answer(
    state: FakeState, body: Mapping[str, Any], request_id: str, arrived: float | None = None
) -> Outcome:
    """One Messages request -> outcome. Model-level faults and rules apply; no I/O.

    ``arrived``: when the request came in (``state.cache.clock``), so a prefix written
    by a request still running at that time is not read (see :mod:`.cache`).
    """
    model = str(body.get("model"))
    if model not in MODELS:
        return error_outcome(404, f"model: {model}", request_id)
    fault = state.faults.get(model)
    status = _fault_status(state, model, fault)
    if fault is not None and status is not None:
        outcome = error_outcome(
            status,
            fault.error_message or f"fake fault injected for {model}",
            request_id,
            fault.error_type,
        )
        if fault.retry_after is not None and (fault.error_cycle is None or status == 429):
            outcome.headers["retry-after"] = f"{fault.retry_after:g}"
        return outcome
    problem = check_rules(model, body)
    if problem is not None:
        return error_outcome(400, problem, request_id)

    item = item_text(user_text(body))
    tokens_in = state.cache.usage(model, body, input_tokens(body), arrived)
    if fault is not None and fault.refuse_pattern and re.search(fault.refuse_pattern, item):
        message = envelope(state, model, [], "refusal", (tokens_in, 0))
        return Outcome(200, message, refusal=True)
    if fault is not None and state.chance(fault.malformed_rate):
        out = math.ceil(len(MALFORMED_TEXT) / 4) + 8
        content = [{"type": "text", "text": MALFORMED_TEXT}]
        return Outcome(200, envelope(state, model, content, "end_turn", (tokens_in, out)))

    labels = labels_of(body)
    if not labels:
        text = "Hello from the fake Messages API."
        out = math.ceil(len(text) / 4) + 8
        content = [{"type": "text", "text": text}]
        return Outcome(200, envelope(state, model, content, "end_turn", (tokens_in, out)))
    verdict = _verdict(model, body, item, labels)
    result = {"label": verdict.label, "confidence": verdict.confidence, "reason": verdict.reason}
    result_json = json.dumps(result)
    out = math.ceil(len(result_json) / 4) + 8
    tools = body.get("tools")
    if tools:
        block = tool_use(tools, result, f"toolu_fake_{state.next_id()}")
        return Outcome(200, envelope(state, model, [block], "tool_use", (tokens_in, out)))
    content = [{"type": "text", "text": result_json}]
    return Outcome(200, envelope(state, model, content, "end_turn", (tokens_in, out)))


def tool_use(tools: list[Any], result: dict[str, Any], block_id: str) -> dict[str, Any]:
    """The content block answering ``result`` through the request's first tool."""
    return {"type": "tool_use", "id": block_id, "name": tools[0].get("name"), "input": result}


def _verdict(model: str, body: Mapping[str, Any], item: str, labels: list[str]) -> Verdict:
    """A classification, or a verifier's verdict when asked to check a proposed label.

    A verifier request (labels correct/incorrect, a ``<proposed_label>`` after the
    item) is judged against the pipeline's labels from the system turn's
    ``Labels: ...`` line; anything else is classified exactly as before.
    """
    proposed = _PROPOSED.search(user_text(body).rsplit("</item>", 1)[-1])
    found = _SYSTEM_LABELS.findall(text_of(body.get("system")))
    if tuple(labels) == VERDICT_LABELS and proposed is not None and found:
        candidates = [x.strip() for x in found[-1].split(",") if x.strip()]
        label = proposed.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        return verify(model, item, candidates, label)
    return classify(model, item, labels)


def _fault_status(state: FakeState, model: str, fault: Fault | None) -> int | None:
    """The error status this call fails with, or None."""
    if fault is None or (fault.error_status is None and not fault.error_cycle):
        return None
    if not _fails(state, model, fault):
        return None
    if fault.error_cycle:
        n = state.cycle_pos.get(model, 0)
        state.cycle_pos[model] = n + 1
        return fault.error_cycle[n % len(fault.error_cycle)]
    return fault.error_status


def _fails(state: FakeState, model: str, fault: Fault) -> bool:
    if fault.error_every:
        return state.by_model.setdefault(model, ModelStats()).calls % fault.error_every == 0
    if fault.error_rate is None:
        return True
    return state.chance(fault.error_rate)

"""Prompt caching as the fake Messages API emulates it (anthropic-api-facts.md §7).

- The prefix runs from the start of the request (tools, then system, then messages)
  up to and including the last block marked ``cache_control``; it is keyed by the
  model and the prefix's content (``cache_control`` itself left out).
- A prefix shorter than the model's minimum cacheable length is silently not cached.
- The first request with a prefix writes it (``cache_creation_input_tokens``, and the
  ``cache_creation.ephemeral_5m/1h_input_tokens`` breakdown); a request that *arrives*
  after that write completed reads it (``cache_read_input_tokens``) and refreshes its
  TTL. Requests that arrive while the first is still running write too, as on the
  real API: that is the thundering herd a fleet must avoid.
- ``input_tokens`` is what is left of the prompt, uncached.

Token counts are the fake's usual estimate, characters / 4, so the three usage
figures add up to :func:`cascade.fakeapi.request.input_tokens`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The shortest prefix each model caches (anthropic-api-facts.md §7).
MIN_CACHEABLE: dict[str, int] = {
    "claude-haiku-5-5": 512,
    "claude-sonnet-5-5": 512,
    "claude-opus-5-5": 512,
    "claude-opus-5": 512,
    "claude-sonnet-5": 1024,
    "claude-haiku-4-5": 4096,
    "claude-haiku-4-5-20251001": 4096,
}
TTL_S = {"5m": 300.0, "1h": 3600.0}


@dataclass(slots=True)
class _Entry:
    written_at: float  # when the writing request completed
    expires_at: float
    ttl: str


@dataclass(slots=True)
class CacheStats:
    writes: int = 0
    reads: int = 0
    write_tokens: int = 0
    read_tokens: int = 0
    prefixes: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {
            "writes": self.writes,
            "reads": self.reads,
            "write_tokens": self.write_tokens,
            "read_tokens": self.read_tokens,
            "prefixes": len(self.prefixes),
        }


def _strip(value: Any) -> Any:
    """A block without its ``cache_control`` (the mark is not part of the cached content)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _marked(block: Any) -> str | None:
    """The TTL of a block's cache mark ("5m" when none is given); None if unmarked."""
    if not isinstance(block, dict):
        return None
    mark = block.get("cache_control")
    if not isinstance(mark, dict) or mark.get("type") != "ephemeral":
        return None
    ttl = mark.get("ttl", "5m")
    return ttl if ttl in TTL_S else "5m"


def _text_len(block: Any) -> int:
    if isinstance(block, str):
        return len(block)
    if isinstance(block, dict) and block.get("type") == "text":
        return len(str(block.get("text", "")))
    return 0


def marked_prefix(body: Mapping[str, Any]) -> tuple[int, str, str] | None:
    """(characters, TTL, key material) of the prefix up to the last marked block; None if
    nothing is marked. Characters are counted as :func:`request.input_tokens` counts them."""
    tools = body.get("tools") or []
    system = body.get("system")
    system_blocks = [system] if isinstance(system, str) else list(system or [])
    found: tuple[int, str, str] | None = None
    parts: list[Any] = []
    chars = 0
    if tools:
        parts.append(_strip(tools))
        chars += len(json.dumps(tools))  # the whole tools array counts, as in input_tokens
        for tool in tools:
            ttl = _marked(tool)
            if ttl is not None:
                found = (chars, ttl, json.dumps(parts))
    for block in system_blocks:
        parts.append(_strip(block))
        chars += _text_len(block)
        ttl = _marked(block)
        if ttl is not None:
            found = (chars, ttl, json.dumps(parts))
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        for block in [content] if isinstance(content, str) else list(content or []):
            parts.append(_strip(block))
            chars += _text_len(block)
            ttl = _marked(block)
            if ttl is not None:
                found = (chars, ttl, json.dumps(parts))
    return found


class FakeCache:
    """The fake's prompt cache: prefix key -> entry, on an injectable clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self.by_model: dict[str, CacheStats] = {}

    def reset(self) -> None:
        self._entries = {}
        self.by_model = {}

    def stats(self) -> dict[str, dict[str, int]]:
        return {m: s.as_dict() for m, s in self.by_model.items()}

    def usage(
        self, model: str, body: Mapping[str, Any], tokens_in: int, arrived: float | None = None
    ) -> dict[str, Any]:
        """The prompt's part of the usage: uncached input, cache writes and reads."""
        usage: dict[str, Any] = {
            "input_tokens": tokens_in,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        prefix = marked_prefix(body)
        if prefix is None:
            return usage
        chars, ttl, material = prefix
        cached = min(math.ceil(chars / 4), tokens_in)
        if cached < MIN_CACHEABLE.get(model, 1024):
            return usage  # too short: silently not cached
        key = hashlib.sha256(f"{model}\0{material}".encode()).hexdigest()
        now = self.clock()
        start = now if arrived is None else arrived
        stats = self.by_model.setdefault(model, CacheStats())
        stats.prefixes.add(key)
        entry = self._entries.get(key)
        usage["input_tokens"] = tokens_in - cached
        if entry is not None and entry.written_at <= start and entry.expires_at > start:
            entry.expires_at = max(entry.expires_at, now + TTL_S[ttl])  # a read refreshes
            usage["cache_read_input_tokens"] = cached
            stats.reads += 1
            stats.read_tokens += cached
            return usage
        if entry is None or entry.expires_at <= start:
            self._entries[key] = _Entry(now, now + TTL_S[ttl], ttl)
        usage["cache_creation_input_tokens"] = cached
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": cached if ttl == "5m" else 0,
            "ephemeral_1h_input_tokens": cached if ttl == "1h" else 0,
        }
        stats.writes += 1
        stats.write_tokens += cached
        return usage

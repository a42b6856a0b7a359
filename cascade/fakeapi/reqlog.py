"""The fake's request log: one JSON line per Messages request, as the server saw it.

A soak or a benchmark compares it with the ledger (what the workers think they
were billed for). Each line holds:

- ``request_id``: the id sent back in the ``request-id`` header (and in an error body);
- ``model``; ``status``: the HTTP status sent, or null when none was (a reply that
  was ready but could not be sent keeps its status in ``unsent_status``);
- ``outcome``: ``ok`` (a 200 was sent: an answer, a refusal or a malformed reply, all
  billed), ``error`` (an error status was sent), ``dropped`` (the fake closed the
  connection on purpose: a ``drop_rate`` fault), ``cut_off`` (the client went away or
  the handler was cancelled before the whole response was sent);
- ``item``: :func:`item_digest` of the item text found in the prompt (between
  ``<item>`` tags, else the whole user turn), so calls can be tied to ledger items
  without the ledger's ids;
- ``refusal`` (true on a 200 refusal only);
- ``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``: the usage of a reply that was sent, else 0 (a cut-off
  request whose answer was ready keeps that usage in ``unsent_*`` fields, for whoever
  wants to count work the client never received);
- ``received``, ``sent``: epoch seconds the request came in and the reply went out
  (``sent`` is null when nothing was sent); ``ended``: when the server was done with it.

The file is opened for appending and line-buffered, so a reader sees each line as
soon as the request ends. Only :mod:`cascade.fakeapi.server` writes it, from the
server's loop thread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

OUTCOMES: Final = ("ok", "error", "dropped", "cut_off")
USAGE_KEYS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@dataclass(slots=True)
class Entry:
    """One request while it is handled; filled in as it goes, written once when it ends."""

    request_id: str
    received: float
    model: str | None = None
    item: str | None = None
    status: int | None = None
    outcome: str = "cut_off"  # until a reply has been sent, a cancellation cuts it off
    refusal: bool = False
    usage: Mapping[str, Any] | None = None
    sent: float | None = None
    ended: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "model": self.model,
            "item": self.item,
            "status": self.status if self.sent is not None else None,
            "outcome": self.outcome,
        }
        if self.sent is None and self.status is not None:
            out["unsent_status"] = self.status
        if self.refusal:
            out["refusal"] = True
        usage = self.usage or {}
        billed = self.outcome == "ok"
        for key in USAGE_KEYS:
            value = int(usage.get(key) or 0)
            out[key] = value if billed else 0
            if value and not billed:
                out[f"unsent_{key}"] = value
        out["received"] = round(self.received, 6)
        out["sent"] = None if self.sent is None else round(self.sent, 6)
        out["ended"] = round(self.ended, 6)
        return out


def item_digest(text: str) -> str:
    """A short, stable fingerprint of an item's text (not a secret: sha1, 16 hex digits)."""
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


class RequestLog:
    """Appends entries to ``path`` (line-buffered); ``path=None`` logs nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self._file: TextIO | None = None
        if self.path is not None:
            self._file = self.path.open("a", buffering=1, encoding="utf-8")

    def write(self, entry: Entry) -> None:
        if self._file is not None:
            self._file.write(json.dumps(entry.as_dict(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The entries of a request log, skipping a last line still being written."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return
            yield json.loads(line)

"""Values as Postgres ``COPY`` text: the backslash, tab, newline and carriage return
escaped, ``\\N`` for NULL; JSON the way ``json.dumps`` writes it, cheaper; and the
columns of an item row in the order COPY writes them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Table

from models.core import ITEMS

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def field(value: object) -> str:
    """One value in COPY text format."""
    if type(value) is str:  # the common case first; four scans beat one regex search
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_ESCAPES)
        return value
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):  # a str subclass
        return value.translate(_ESCAPES)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no COPY text form for {type(value).__name__}")


def _fail(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# json.dumps builds its C encoder on every call; this one is built once. Same output:
# ASCII, ", " and ": " separators. (Parsed input cannot be circular: no markers.)
_ENCODER = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _fail, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)


def json_text(value: Any) -> str:
    if not value and type(value) is dict:  # most lines carry no metadata
        return "{}"
    return "".join(_ENCODER(value, 0)) if _ENCODER is not None else json.dumps(value)


@lru_cache(maxsize=4096)
def row_text(values: tuple[object, ...]) -> str:
    return "\t".join(map(field, values))


# Written per row; every column after ``meta`` is in the cached tail.
ITEM_HEAD = ("id", "job_id", "submission_id", "item_key", "line_no", "text", "meta", "text_hash")


def _tail_defaults(table: Table, head: Sequence[str]) -> dict[str, Any]:
    """Every other column with what an INSERT would give it: its Python-side scalar
    default (``status='pending'``, ``model_calls=0``…), the chunk's transaction time
    for a ``now()`` server default, else NULL."""
    out: dict[str, Any] = {}
    for col in table.columns:
        default, server = col.default, col.server_default
        if col.name in head:
            continue
        if default is not None and getattr(default, "is_scalar", False):
            out[col.name] = default.arg  # type: ignore[attr-defined]
        elif server is not None:
            if "now" not in str(getattr(server, "arg", "")):
                raise RuntimeError(f"{table.name}.{col.name}: unexpected server default")
            out[col.name] = NOW
        else:
            out[col.name] = None
    return out


NOW = object()  # stands for the chunk's transaction timestamp
ITEM_TAIL = _tail_defaults(ITEMS, ITEM_HEAD)
ITEM_COLS = (*ITEM_HEAD, *ITEM_TAIL)


def row_tail(values: Mapping[str, Any]) -> tuple[object, ...]:
    """The columns after ``meta``: ``values`` over the defaults (``NOW``: the chunk's time)."""
    merged = ITEM_TAIL | dict(values)
    merged.pop("text", None)
    if len(merged) != len(ITEM_TAIL):
        raise ValueError(f"not columns of items: {sorted(set(merged) - set(ITEM_TAIL))}")
    return tuple(merged.values())


@lru_cache(maxsize=4096)
def tail_at(values: tuple[object, ...], now: datetime) -> str:
    return "\t".join(field(now if v is NOW else v) for v in values)

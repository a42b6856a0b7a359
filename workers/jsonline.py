"""One JSONL line into a JSON object, or the reason (a reason code of
:mod:`workers.intake`, with its detail) it is not one: strict JSON (no NaN), no NUL
character and no unpaired surrogate hidden in an escape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

NOT_JSON = "not_json"
NOT_AN_OBJECT = "not_an_object"
BAD_ENCODING = "bad_encoding"

_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")
_JSON_TYPES = {dict: "an object", list: "an array", bool: "a boolean", int: "a number"}


def parse_object(text: str) -> dict[str, Any] | str:
    """The JSON object on this line, or the reason it is not one."""
    try:
        obj = _decode(text)
    except json.JSONDecodeError as exc:
        column = min(exc.pos, len(text.rstrip())) + 1  # not past the end of the line
        return f"{NOT_JSON}: {exc.msg} at column {column}"
    except (ValueError, RecursionError) as exc:  # NaN, huge integers, deep nesting
        return f"{NOT_JSON}: {exc}"
    if not isinstance(obj, dict):
        return f"{NOT_AN_OBJECT}: got {type_name(obj)}"
    if _SUSPECT_ESCAPE.search(text):
        for string in _strings(obj):
            if "\x00" in string:
                return f"{BAD_ENCODING}: contains a NUL character"
            try:
                string.encode("utf-8")
            except UnicodeEncodeError:
                return f"{BAD_ENCODING}: unpaired surrogate escape"
    return obj


def _strings(value: object) -> Iterator[str]:
    """Every string (keys included) inside a parsed JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), "a number" if isinstance(value, float) else "a string")


# One decoder for every line: json.loads with an argument builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]


def _decode(text: str) -> Any:
    """The decoder's scanner straight away (half the time of ``decode``, which wraps it in
    two whitespace regexes); anything unusual goes through ``decode`` for its errors."""
    try:
        obj, end = _SCAN(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return _DECODER.decode(text)
    if end != len(text) and not text[end:].isspace():
        return _DECODER.decode(text)  # extra data: raises with the position
    return obj

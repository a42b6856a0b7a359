"""COPY text for the submit fast path: values as data, and meta as json.dumps writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from models.copyin import field, json_text


@pytest.mark.parametrize(
    "value",
    [{}, {"a": 'é😀\n\t"\\'}, {"n": [1, 2.5, -0.0, 1e300, True, False, None]}, {"x": {"y": {}}}],
)
def test_meta_json_is_what_json_dumps_writes(value: dict[str, Any]) -> None:
    assert json_text(value) == json.dumps(value)


def test_meta_json_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        json_text({"s": {1}})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "\\N"),
        (True, "t"),
        (False, "f"),
        (12, "12"),
        (0.5, "0.5"),
        ("plain", "plain"),
        ("tab\there\nnew\rline \\N back\\slash", "tab\\there\\nnew\\rline \\\\N back\\\\slash"),
        # each special alone is found (they are looked for one by one)
        ("a\tb", "a\\tb"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("a\\b", "a\\\\b"),
        (type("Sub", (str,), {})("a\tb"), "a\\tb"),  # a str subclass takes the slow way
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05+00:00"),
    ],
)
def test_copy_fields_escape_everything_copy_would_read_as_syntax(value: object, text: str) -> None:
    assert field(value) == text


def test_a_value_copy_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError, match="no COPY text form for bytes"):
        field(b"raw")

"""One JSONL line into an object or the reason it is not one (workers/jsonline.py), and
backfill file sources (workers/sources.py): a single file, a relative glob, no match."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.jsonline import parse_object, type_name
from workers.sources import FileSource, is_database_url


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # the position of a syntax error, never past the end of the line
        ('{"id": 1,', "not_json: Expecting property name enclosed in double quotes at column 10"),
        ('{"id": 1}\n', None),  # a line's own newline is fine
        ('{"id": 1} {"id": 2}', "not_json: Extra data at column 11"),
        ('{"id": 1}  ', None),  # trailing blanks are fine
        # strict JSON: no NaN or Infinity
        ('{"x": NaN}', "not_json: NaN is not valid JSON"),
        ('{"x": -Infinity}', "not_json: -Infinity is not valid JSON"),
        ("", "not_json: Expecting value at column 1"),
        # a JSON value that is not an object names its type
        ("[1, 2]", "not_an_object: got an array"),
        ('"text"', "not_an_object: got a string"),
        ("3.5", "not_an_object: got a number"),
        ("7", "not_an_object: got a number"),
        ("true", "not_an_object: got a boolean"),
        ("null", "not_an_object: got null"),
        # escapes hidden anywhere in the object: keys, nested objects, arrays
        ('{"\\u0000": 1}', "bad_encoding: contains a NUL character"),
        ('{"a": {"b": "x\\u0000"}}', "bad_encoding: contains a NUL character"),
        ('{"a": ["ok", ["\\u0000"]]}', "bad_encoding: contains a NUL character"),
        ('{"a": [1, "\\udc00"]}', "bad_encoding: unpaired surrogate escape"),
        ('{"a": "\\uD800"}', "bad_encoding: unpaired surrogate escape"),
        # a surrogate *pair* is one valid character
        ('{"a": "\\ud83d\\ude00"}', None),
    ],
)
def test_parse_object(line: str, reason: str | None) -> None:
    got = parse_object(line)

    if reason is None:
        assert isinstance(got, dict)
    else:
        assert got == reason


def test_a_valid_line_is_its_object() -> None:
    assert parse_object('{"id": "a", "text": "smile \\ud83d\\ude00", "n": [1, 2.5]}') == {
        "id": "a",
        "text": "smile \U0001f600",
        "n": [1, 2.5],
    }


def test_deep_nesting_is_a_reason_not_a_crash() -> None:
    got = parse_object('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")

    assert isinstance(got, str) and got.startswith("not_json: ")


def test_type_names() -> None:
    assert [type_name(v) for v in ({}, [], True, 1, 1.5, "s", None)] == [
        "an object",
        "an array",
        "a boolean",
        "a number",
        "a number",
        "a string",
        "null",
    ]


# -- file sources ---------------------------------------------------------------------


def touch(path: Path, stamp: int) -> Path:
    path.write_text('{"id": "1", "text": "x"}\n')
    os.utime(path, (stamp, stamp))
    return path


def test_a_single_file_source_is_that_file(tmp_path: Path) -> None:
    path = touch(tmp_path / "posts.jsonl", 5_000)

    [found] = FileSource(str(path)).files()

    assert found.path == path
    assert found.updated_at.timestamp() == 5_000
    assert found.updated_at.tzinfo is not None  # UTC, comparable with a watermark


def test_a_missing_file_or_a_glob_matching_nothing_is_no_files(tmp_path: Path) -> None:
    assert FileSource(str(tmp_path / "nope.jsonl")).files() == []
    assert FileSource(str(tmp_path / "*.csv")).files() == []
    assert FileSource(str(tmp_path / "*.csv")).changed_since(None) == []


def test_a_glob_skips_directories_and_sorts_by_time_then_name(tmp_path: Path) -> None:
    touch(tmp_path / "b.jsonl", 2_000)
    touch(tmp_path / "a.jsonl", 2_000)
    touch(tmp_path / "c.jsonl", 1_000)
    (tmp_path / "dir.jsonl").mkdir()

    names = [f.path.name for f in FileSource(str(tmp_path / "*.jsonl")).files()]

    assert names == ["c.jsonl", "a.jsonl", "b.jsonl"]


def test_a_relative_glob_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "daily").mkdir()
    touch(tmp_path / "daily" / "2026-11-01.jsonl", 1_000)
    monkeypatch.chdir(tmp_path)

    source = FileSource("daily/*.jsonl")

    assert [f.path for f in source.files()] == [Path("daily/2026-11-01.jsonl")]
    assert source.key == str(tmp_path / "daily" / "*.jsonl")  # the watermark's key is absolute


def test_the_key_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")

    assert FileSource("~/posts/*.jsonl").key == "/home/someone/posts/*.jsonl"


@pytest.mark.parametrize(
    ("spec", "is_db"),
    [
        ("postgresql://u@h/db", True),
        ("postgres://u@h/db", True),
        ("postgresql+psycopg://u@h/db", True),
        ("sqlite:///local.db", True),
        ("sqlite+pysqlite:///local.db", True),
        ("mysql://u@h/db", False),  # not a supported database
        ("posts.jsonl", False),
        ("/data/postgresql://x", False),  # only a scheme at the start counts
    ],
)
def test_is_database_url(spec: str, is_db: bool) -> None:
    assert is_database_url(spec) is is_db

from __future__ import annotations

import gc
import gzip
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from workers.intake import (
    BAD_ENCODING,
    CSV_COLUMNS,
    CSV_SYNTAX,
    LINE_TOO_LONG,
    NOT_JSON,
    REASON_CODES,
    InputError,
    InputItem,
    RejectedLine,
    count_lines,
    read_items,
)

MAX = 40
GOOD_JSON = b'{"id": "ok", "text": "fine"}\n'
CSV_HEADER = b"id,text,lang\n"
GOOD_CSV = b"ok,fine,en\n"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def read(path: Path, **kwargs: object) -> list[InputItem | RejectedLine]:
    return list(read_items(path, max_text_chars=MAX, **kwargs))  # type: ignore[arg-type]


# (format, the bad line, expected reason). The file holds a good line first, so the
# bad one is line 2 in JSONL and line 3 in CSV (after the header).
BAD_LINES = [
    # not JSON at all; column of the first bad character
    ("jsonl", b"nope", "not_json: Expecting value at column 1"),
    # JSON cut short
    ("jsonl", b'{"id": "a", "text": "x"', "not_json: Expecting ',' delimiter at column 24"),
    # NaN is accepted by Python's json but is not JSON and would not store as JSON
    ("jsonl", b'{"id": "a", "text": "x", "score": NaN}', "not_json: NaN is not valid JSON"),
    # valid JSON but not an object
    ("jsonl", b'"just a string"', "not_an_object: got a string"),
    ("jsonl", b"[1, 2]", "not_an_object: got an array"),
    # id missing, empty, or of a type that is not an identifier
    ("jsonl", b'{"text": "x"}', "no_id"),
    ("jsonl", b'{"id": " ", "text": "x"}', "no_id: id is empty"),
    ("jsonl", b'{"id": 1.5, "text": "x"}', "bad_id: id must be a string or an integer"),
    ("jsonl", b'{"id": true, "text": "x"}', "bad_id: id must be a string or an integer"),
    ("jsonl", b'{"id": null, "text": "x"}', "bad_id: id must be a string or an integer"),
    ("jsonl", b'{"id": {"a": 1}, "text": "x"}', "bad_id: id must be a string or an integer"),
    # 201 characters is one over the limit
    ("jsonl", b'{"id": "' + b"i" * 201 + b'", "text": "x"}', "id_too_long: 201 > 200 characters"),
    # text missing, not a string, empty, whitespace only, or over max_text_chars
    ("jsonl", b'{"id": "a"}', "no_text"),
    ("jsonl", b'{"id": "a", "text": 5}', "text_not_string: got a number"),
    ("jsonl", b'{"id": "a", "text": null}', "text_not_string: got null"),
    ("jsonl", b'{"id": "a", "text": ["x"]}', "text_not_string: got an array"),
    ("jsonl", b'{"id": "a", "text": ""}', "empty_text"),
    ("jsonl", b'{"id": "a", "text": " \\t\\n "}', "empty_text"),
    ("jsonl", b'{"id": "a", "text": "' + b"x" * 41 + b'"}', "text_too_long: 41 > 40 characters"),
    # Latin-1 bytes: the line is rejected, the file goes on
    ("jsonl", b'{"id": "a", "text": "caf\xe9"}', "bad_encoding: not valid UTF-8"),
    # escapes that decode to text no database can store
    ("jsonl", b'{"id": "a", "text": "a\\u0000b"}', "bad_encoding: contains a NUL character"),
    (
        "jsonl",
        b'{"id": "a", "text": "x", "m": "\\ud800"}',
        "bad_encoding: unpaired surrogate escape",
    ),
    # CSV: wrong number of fields for the header
    ("csv", b"a,x", "csv_columns: expected 3 fields, got 2"),
    ("csv", b"a,x,en,extra", "csv_columns: expected 3 fields, got 4"),
    # CSV: empty id cell, empty or blank text cell, text too long
    ("csv", b",hello,en", "no_id: id is empty"),
    ("csv", b"a,,en", "empty_text"),
    ("csv", b'a,"  ",en', "empty_text"),
    ("csv", b"a," + b"x" * 41 + b",en", "text_too_long: 41 > 40 characters"),
    # CSV: bad bytes and a NUL byte
    ("csv", b"a,caf\xe9,en", "bad_encoding: not valid UTF-8"),
    ("csv", b"a,x\x00y,en", "bad_encoding: contains a NUL character"),
    # CSV: a bare carriage return inside an unquoted field (message varies by Python)
    ("csv", b"a,x\ry,en", CSV_SYNTAX + ": "),
]


@pytest.mark.parametrize(("fmt", "line", "reason"), BAD_LINES)
def test_bad_line_is_rejected_and_reading_goes_on(
    tmp_path: Path, fmt: str, line: bytes, reason: str
) -> None:
    good = GOOD_JSON if fmt == "jsonl" else CSV_HEADER + GOOD_CSV
    after = b'{"id": "z", "text": "after"}\n' if fmt == "jsonl" else b"z,after,en\n"
    path = write(tmp_path, f"in.{fmt}", good + line + b"\n" + after)
    first, bad, last = read(path)
    assert isinstance(first, InputItem)
    assert isinstance(bad, RejectedLine)
    assert bad.line_no == (2 if fmt == "jsonl" else 3)
    if reason.startswith(CSV_SYNTAX):
        assert bad.reason.startswith(reason)
    else:
        assert bad.reason == reason
    assert bad.code in REASON_CODES
    assert bad.raw == line.decode("utf-8", "replace")
    assert isinstance(last, InputItem)
    assert last.text == "after"


def test_raw_is_truncated_to_500_characters(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", GOOD_JSON + b"x" * 2000 + b"\n")
    bad = read(path)[1]
    assert isinstance(bad, RejectedLine)
    assert bad.code == NOT_JSON
    assert bad.raw == "x" * 500


def test_overlong_line_is_rejected_without_reading_it_whole(tmp_path: Path) -> None:
    # max_text_chars=1 caps a line at 12 + 1 MiB bytes; this one is 3 MiB
    huge = b'{"id": "big", "text": "' + b"x" * (3 << 20) + b'"}\n'
    path = write(tmp_path, "in.jsonl", GOOD_JSON + huge + GOOD_JSON)
    results = list(read_items(path, max_text_chars=1))
    assert [r.line_no for r in results] == [1, 2, 3]
    bad = results[1]
    assert isinstance(bad, RejectedLine)
    assert bad.code == LINE_TOO_LONG
    assert len(bad.raw) == 500
    assert isinstance(results[2], RejectedLine)  # "fine" > 1 character: judged normally
    assert results[2].reason == "text_too_long: 4 > 1 characters"


def test_good_jsonl_keeps_metadata_and_counts_blank_lines(tmp_path: Path) -> None:
    data = (
        b"\n"  # line 1: blank, skipped but counted
        b'{"id": 42, "text": "  padded  ", "lang": "en", "tags": ["a"], "n": {"k": 1.5}}\n'
        b"   \t\r\n"  # line 3: whitespace only, skipped
        b'{"id": "s-1", "text": "caf\xc3\xa9 \\u00e9 \\ud83d\\ude00"}\r\n'  # CRLF line end
        b'{"id": -7, "text": "last, no newline"}'
    )
    items = read(write(tmp_path, "in.ndjson", data))
    assert items == [
        InputItem(2, "42", "  padded  ", {"lang": "en", "tags": ["a"], "n": {"k": 1.5}}),
        InputItem(4, "s-1", "café é 😀", {}),
        InputItem(5, "-7", "last, no newline", {}),
    ]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    assert read(write(tmp_path, "in.json", b"\xef\xbb\xbf" + GOOD_JSON)) == [
        InputItem(1, "ok", "fine", {})
    ]
    csv_path = write(tmp_path, "in.csv", b"\xef\xbb\xbf" + CSV_HEADER + GOOD_CSV)
    assert read(csv_path) == [InputItem(2, "ok", "fine", {"lang": "en"})]


def test_good_csv_with_metadata_and_multiline_field(tmp_path: Path) -> None:
    data = (
        b"ID, Text ,lang,score\r\n"  # header names are matched case- and space-insensitively
        b'1,"spans\r\ntwo lines, with a comma",en,\r\n'  # lines 2-3; empty cell -> ""
        b"\r\n"  # line 4: blank
        b'2,"say ""hi""",fr,0.5\r\n'  # line 5: escaped quotes
    )
    items = read(write(tmp_path, "in.csv", data))
    assert items == [
        InputItem(2, "1", "spans\r\ntwo lines, with a comma", {"lang": "en", "score": ""}),
        InputItem(5, "2", 'say "hi"', {"lang": "fr", "score": "0.5"}),
    ]


@pytest.mark.parametrize(
    ("name", "data", "line_nos"),
    [
        ("in.jsonl.gz", GOOD_JSON + b"\n" + b'{"id": 2, "text": "two"}\n', (1, 3)),
        ("in.csv.gz", b"id,text\nok,fine\n\n2,two\n", (2, 4)),
    ],
)
def test_gzip_input(tmp_path: Path, name: str, data: bytes, line_nos: tuple[int, int]) -> None:
    path = write(tmp_path, name, data)
    assert read(path) == [
        InputItem(line_nos[0], "ok", "fine", {}),
        InputItem(line_nos[1], "2", "two", {}),
    ]
    assert count_lines(path) is None


def test_truncated_gzip_fails_loudly(tmp_path: Path) -> None:
    data = b"".join(b'{"id": %d, "text": "item %d"}\n' % (i, i) for i in range(20_000))
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(data)[:-2000])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read(path)


def test_format_argument_overrides_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "export.txt", b"id,text\n7,seven\n")
    assert read(path, fmt="csv") == [InputItem(2, "7", "seven", {})]


@pytest.mark.parametrize(
    ("name", "data", "kwargs", "message"),
    [
        ("missing.jsonl", None, {}, "no such file"),
        ("adir.jsonl", "dir", {}, "is a directory"),
        ("in.txt", GOOD_JSON, {}, "cannot tell the format from the extension '.txt'"),
        ("noext", GOOD_JSON, {}, "extension '(none)'"),
        ("in.jsonl", GOOD_JSON, {"fmt": "xml"}, "unknown input format 'xml'; use jsonl or csv"),
        ("in.jsonl", b"", {}, "is empty"),
        ("in.jsonl", b"\n  \n\n", {}, "has only blank lines"),
        ("in.jsonl.gz", GOOD_JSON, {}, "is named .gz but is not gzip-compressed"),
        ("in.json", b'[\n  {"id": 1, "text": "x"}\n]\n', {}, "one object per line"),
        ("in.json", b'{\n  "id": 1,\n  "text": "x"\n}\n', {}, "one object per line"),
        ("in.csv", b"name,body\na,b\n", {}, "must have 'id' and 'text' columns; found: 'name'"),
        ("in.csv", b"id,text,id\n1,x,2\n", {}, "column 3 has an empty or repeated name"),
        ("in.csv", b"id,text\n\n", {}, "has a header row but no data rows"),
        ("in.csv", b"id,te\xffxt\n1,x\n", {}, "the header row has bad_encoding"),
        # a CSV file of blank lines has no header to read the columns from
        ("in.csv", b"\n  \n\n", {}, "has only blank lines; it needs a header row"),
        ("in.csv", b"id,te\rxt\n1,x\n", {}, "line 1: unreadable CSV header: "),
        # the format names its columns: case and spaces around them do not matter
        ("in.csv", b"ID , Text\n\n", {}, "has a header row but no data rows"),
    ],
)
def test_unusable_file_raises_before_anything_is_yielded(
    tmp_path: Path, name: str, data: bytes | str | None, kwargs: dict[str, object], message: str
) -> None:
    path = tmp_path / name
    if data == "dir":
        path.mkdir()
    elif isinstance(data, bytes):
        path.write_bytes(data)
    fmt = kwargs.get("fmt")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_items(path, max_text_chars=MAX, fmt=fmt)  # type: ignore[arg-type]  # not iterated


def test_count_lines(tmp_path: Path) -> None:
    assert count_lines(write(tmp_path, "a.jsonl", b"a\n\nb\n")) == 3
    assert count_lines(write(tmp_path, "b.jsonl", b"a\nb")) == 2  # no final newline
    assert count_lines(write(tmp_path, "c.jsonl", b"")) == 0
    assert count_lines(tmp_path / "missing.jsonl") is None


def test_abandoned_iterators_close_the_file(tmp_path: Path) -> None:
    """No ResourceWarning (an error here) when a reader is dropped early or never used."""
    path = write(tmp_path, "in.jsonl", GOOD_JSON * 3)
    started = read_items(path, max_text_chars=MAX)
    next(started)
    del started
    read_items(path, max_text_chars=MAX)
    gc.collect()


def _big_file(path: Path, fmt: str, lines: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        if fmt == "csv":
            f.write("id,text,source\n")
        for i in range(lines):
            text = f"ticket {i}: the printer on floor {i % 9} is jammed again " * 2
            if fmt == "csv":
                f.write(f'{i},"{text}",web\n')
            else:
                f.write(f'{{"id": {i}, "text": "{text}", "source": "web"}}\n')


@pytest.mark.parametrize(
    ("fmt", "lines"),
    [
        ("jsonl", 200_000),  # ~31 MB
        ("csv", 50_000),  # ~7 MB; the CSV path shares the line reader, so fewer lines suffice
    ],
)
def test_memory_stays_flat_on_a_large_file(tmp_path: Path, fmt: str, lines: int) -> None:
    """Streaming: peak traced memory stays under 2 MB whatever the file size."""
    path = tmp_path / f"big.{fmt}"
    _big_file(path, fmt, lines)
    assert path.stat().st_size > 5_000_000
    tracemalloc.start()
    try:
        items = rejected = 0
        for result in read_items(path, max_text_chars=4000):
            if isinstance(result, InputItem):
                items += 1
            else:
                rejected += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (items, rejected) == (lines, 0)
    assert peak < 2_000_000, f"peak traced memory {peak} bytes"


def test_reason_codes_are_stable() -> None:
    assert {BAD_ENCODING, CSV_COLUMNS, NOT_JSON} <= REASON_CODES
    assert {
        "not_json",
        "not_an_object",
        "no_id",
        "bad_id",
        "id_too_long",
        "no_text",
        "empty_text",
        "text_not_string",
        "text_too_long",
        "bad_encoding",
        "csv_columns",
    } <= REASON_CODES


@pytest.mark.parametrize(
    "line",
    [
        '{"id": 1, "text": "a"}\n',
        '  {"id": 1, "text": "a"}',
        '{"id": 1, "text": "a"} trailing',
        '{"id": 1, "text": "a"}\t\r\n',
        '{"id": NaN}',
        '{"id": 1e999999}',
        "[" * 100_000 + "]" * 100_000,
        "\ufeff{}",
        "",
        '{"a": "\\u00e9\\ud83d\\ude00", "b": [1, 2.5, true, null]}',
        '{"unterminated": "x',
    ],
)
def test_the_fast_json_path_answers_like_the_decoder(line: str) -> None:
    from workers.jsonline import _DECODER, _decode

    def outcome(fn: Any) -> tuple[str, Any]:
        try:
            return "ok", fn(line)
        except (ValueError, RecursionError) as exc:
            return type(exc).__name__, str(exc)

    assert outcome(_decode) == outcome(_DECODER.decode)


@pytest.mark.parametrize("limit", [0, -5])
def test_a_text_limit_below_one_is_refused(tmp_path: Path, limit: int) -> None:
    path = write(tmp_path, "a.jsonl", GOOD_JSON)

    with pytest.raises(ValueError, match="max_text_chars must be >= 1"):
        read_items(path, max_text_chars=limit)

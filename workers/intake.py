"""Stream a user's input file (JSONL or CSV, optionally gzipped) into items.

Files can be many gigabytes, so nothing here holds more than one record: bytes
are read one physical line at a time (with a length cap), decoded per line, and
each record is turned into an :class:`InputItem` or a :class:`RejectedLine` with
a stable reason code. A file that cannot be used at all raises
:class:`InputError` before anything is yielded (from :func:`read_items` itself).

Line numbers are 1-based physical lines; blank lines are skipped but counted; a
CSV record spanning lines (a quoted newline) carries the number of its first line.
Duplicate ids are not detected here; the database does that.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workers.jsonline import BAD_ENCODING, NOT_AN_OBJECT, NOT_JSON, parse_object, type_name

# Reason codes: a RejectedLine.reason is "<code>" or "<code>: <detail>" (the JSON ones
# are in workers/jsonline.py).
NO_ID = "no_id"
BAD_ID = "bad_id"
ID_TOO_LONG = "id_too_long"
NO_TEXT = "no_text"
EMPTY_TEXT = "empty_text"
TEXT_NOT_STRING = "text_not_string"
TEXT_TOO_LONG = "text_too_long"
CSV_COLUMNS = "csv_columns"
CSV_SYNTAX = "csv_syntax"
LINE_TOO_LONG = "line_too_long"
REASON_CODES = frozenset(
    {NOT_JSON, NOT_AN_OBJECT, NO_ID, BAD_ID, ID_TOO_LONG, NO_TEXT, EMPTY_TEXT, TEXT_NOT_STRING}
    | {TEXT_TOO_LONG, BAD_ENCODING, CSV_COLUMNS, CSV_SYNTAX, LINE_TOO_LONG}
)

FORMATS = ("jsonl", "csv")
MAX_ID_CHARS = 200
RAW_CHARS = 500
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# JSON escapes that decode to text a database cannot store (checked precisely after).


@dataclass(slots=True)  # not frozen: one per line, and frozen fields cost a call each
class InputItem:
    line_no: int
    item_id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line_no: int
    reason: str
    raw: str  # the line (or CSV record) as read, at most RAW_CHARS characters

    @property
    def code(self) -> str:
        return self.reason.partition(":")[0]


class InputError(Exception):
    """The input file cannot be used at all; the message says what to fix."""


def read_items(
    path: Path, *, max_text_chars: int, fmt: str | None = None
) -> Iterator[InputItem | RejectedLine]:
    """Items and rejected lines of ``path``, in file order, streamed.

    Raises :class:`InputError` here, before returning, when the file is unusable.
    A gzip file cut short mid-way raises :class:`InputError` during iteration.
    """
    if max_text_chars < 1:
        raise ValueError("max_text_chars must be >= 1")
    path = Path(path)
    fmt, compressed = _detect(path, fmt)
    records = _records(path, fmt, compressed, max_text_chars)
    first = next(records)  # runs the header and emptiness checks now
    return itertools.chain((first,), records)


def count_lines(path: Path) -> int | None:
    """Physical lines in a plain file, for progress; None for gzip or on error."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            if path.name.lower().endswith(".gz") or f.read(2) == _GZIP_MAGIC:
                return None
            f.seek(0)
            count, last = 0, b""
            while chunk := f.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    return count + (1 if last not in (b"", b"\n") else 0)


def _detect(path: Path, fmt: str | None) -> tuple[str, bool]:
    """(format, gzip-compressed) or InputError."""
    try:  # one open, no stat first: a one-item file is read on the short path
        with path.open("rb") as f:
            head = f.read(2)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file; check the path") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory; give the input file itself") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    if not head:
        raise InputError(f"{path}: is empty; it needs at least one item")
    name = path.name.lower()
    named_gz = name.endswith(".gz")
    compressed = head == _GZIP_MAGIC
    if named_gz and not compressed:
        raise InputError(f"{path}: is named .gz but is not gzip-compressed; rename it")
    if fmt is None:
        ext = Path(name[:-3] if named_gz else name).suffix
        if ext not in _EXTENSIONS:
            raise InputError(
                f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; "
                "name it .jsonl, .ndjson, .json or .csv (optionally + .gz), "
                "or give the format (jsonl or csv)"
            )
        return _EXTENSIONS[ext], compressed
    if fmt.lower() not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use jsonl or csv")
    return fmt.lower(), compressed


class _Readable(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class _Lines:
    """Decoded physical lines of a byte stream, each capped at ``limit`` bytes.

    Remembers, since the last :meth:`take`, the start of the text read and the
    first problem seen (too long, not UTF-8, NUL), so a CSV record spanning
    several lines can be judged and quoted as a whole.
    """

    def __init__(self, stream: _Readable, path: Path, limit: int) -> None:
        self._stream, self._path, self._limit = stream, path, limit
        self.count = 0
        self._parts: list[str] = []
        self._parts_len = 0
        self._problem: str | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        data = self._readline()
        if not data:
            raise StopIteration
        self.count += 1
        if self.count == 1 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if len(data) >= self._limit and not data.endswith(b"\n"):
            while (more := self._readline()) and not more.endswith(b"\n"):
                pass  # drop the rest of the line: memory stays bounded
            data += b"\n"
            self._problem = self._problem or f"{LINE_TOO_LONG}: over {self._limit} bytes"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", "replace")
            self._problem = self._problem or f"{BAD_ENCODING}: not valid UTF-8"
        if "\x00" in text:
            self._problem = self._problem or f"{BAD_ENCODING}: contains a NUL character"
        if self._parts_len < RAW_CHARS:
            self._parts.append(text)
            self._parts_len += len(text)
        return text

    def take(self) -> tuple[list[str], str | None]:
        """(the start of the lines, problem) read since the last call; then reset."""
        parts, problem = self._parts, self._problem
        self._parts, self._parts_len, self._problem = [], 0, None
        return parts, problem

    def _readline(self) -> bytes:
        try:
            return self._stream.readline(self._limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(
                f"{self._path}: cannot read past line {self.count}: {exc}; "
                "the file may be truncated or corrupt"
            ) from exc


def _records(
    path: Path, fmt: str, compressed: bool, max_text_chars: int
) -> Iterator[InputItem | RejectedLine]:
    # Room for the text fully \u-escaped plus generous metadata.
    limit = 12 * max_text_chars + (1 << 20)
    with gzip.open(path, "rb") if compressed else path.open("rb") as stream:
        lines = _Lines(stream, path, limit)
        if fmt == "csv":
            yield from _csv_records(lines, path, limit, max_text_chars)
        else:
            yield from _jsonl_records(lines, path, max_text_chars)


def _jsonl_records(
    lines: _Lines, path: Path, max_text_chars: int
) -> Iterator[InputItem | RejectedLine]:
    seen_any = False
    for text in lines:
        parts, problem = lines.take()
        if problem is None and (not text or text.isspace()):
            continue
        if not seen_any:
            seen_any = True
            if text.lstrip().startswith("[") or text.strip() == "{":
                raise InputError(
                    f"{path}: line {lines.count} starts a JSON array or a multi-line object; "
                    "give JSON Lines instead: one object per line, e.g. jq -c '.[]'"
                )
        parsed = problem or parse_object(text)
        result = (
            parsed if isinstance(parsed, str) else _judge(lines.count, parsed, None, max_text_chars)
        )
        yield _reject(lines.count, result, parts) if isinstance(result, str) else result
    if not seen_any:
        raise InputError(f"{path}: has only blank lines; it needs at least one item")


def _csv_records(
    lines: _Lines, path: Path, limit: int, max_text_chars: int
) -> Iterator[InputItem | RejectedLine]:
    # Process-wide setting; only ever raised, so other readers are not restricted.
    csv.field_size_limit(max(csv.field_size_limit(), limit))
    reader = csv.reader(lines, strict=False)
    header: list[str] = []
    while not header:
        try:
            row = next(reader)
        except StopIteration:
            raise InputError(f"{path}: has only blank lines; it needs a header row") from None
        except csv.Error as exc:
            raise InputError(f"{path}: line {lines.count}: unreadable CSV header: {exc}") from exc
        _, problem = lines.take()
        if problem is not None:
            raise InputError(f"{path}: line {lines.count}: the header row has {problem}")
        if not _blank_row(row):
            header = [name.strip() for name in row]
    lowered = [name.lower() for name in header]
    if "id" not in lowered or "text" not in lowered:
        raise InputError(
            f"{path}: the CSV header must have 'id' and 'text' columns; "
            f"found: {', '.join(repr(n) for n in header)}"
        )
    for col, name in enumerate(lowered):
        if not name or lowered.index(name) != col:
            raise InputError(f"{path}: CSV column {col + 1} has an empty or repeated name")
    id_col, text_col = lowered.index("id"), lowered.index("text")
    meta_cols = [(col, name) for col, name in enumerate(header) if col not in (id_col, text_col)]
    seen_any = False
    while True:
        line_no = lines.count + 1
        try:
            row = next(reader)
            parts, problem = lines.take()
        except StopIteration:
            break
        except csv.Error as exc:
            parts, problem = lines.take()
            problem, row = problem or f"{CSV_SYNTAX}: {exc}", []
        if problem is None and _blank_row(row):
            continue
        seen_any = True
        if problem is None and len(row) != len(header):
            problem = f"{CSV_COLUMNS}: expected {len(header)} fields, got {len(row)}"
        if problem is None:
            fields = {"id": row[id_col], "text": row[text_col]}
            metadata = {name: row[col] for col, name in meta_cols}
            result = _judge(line_no, fields, metadata, max_text_chars)
        else:
            result = problem
        yield _reject(line_no, result, parts) if isinstance(result, str) else result
    if not seen_any:
        raise InputError(f"{path}: has a header row but no data rows")


def _judge(
    line_no: int, fields: dict[str, Any], metadata: dict[str, Any] | None, max_text_chars: int
) -> InputItem | str:
    """An item from one parsed record (JSON object or CSV row), or the reason it is not one.

    ``metadata`` None means: every field but id and text.
    """
    if "id" not in fields:
        return NO_ID
    item_id = fields["id"]
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        return f"{BAD_ID}: id must be a string or an integer"
    item_id = str(item_id)
    if not item_id or item_id.isspace():
        return f"{NO_ID}: id is empty"
    if len(item_id) > MAX_ID_CHARS:
        return f"{ID_TOO_LONG}: {len(item_id)} > {MAX_ID_CHARS} characters"
    if "text" not in fields:
        return NO_TEXT
    text = fields["text"]
    if not isinstance(text, str):
        return f"{TEXT_NOT_STRING}: got {type_name(text)}"
    if not text or text.isspace():
        return EMPTY_TEXT
    if len(text) > max_text_chars:
        return f"{TEXT_TOO_LONG}: {len(text)} > {max_text_chars} characters"
    if metadata is None:  # the parsed object is this line's own: take id and text out of it
        metadata = fields
        del metadata["id"], metadata["text"]
    return InputItem(line_no, item_id, text, metadata)


def _reject(line_no: int, reason: str, parts: list[str]) -> RejectedLine:
    return RejectedLine(line_no, reason, _raw(parts))


def _raw(parts: list[str]) -> str:
    return "".join(part[:RAW_CHARS] for part in parts)[:RAW_CHARS].rstrip("\r\n")


def _blank_row(row: list[str]) -> bool:
    return not row or (len(row) == 1 and (not row[0] or row[0].isspace()))

"""The call spool: a worker process's own file of the calls it sends and what came back,
written the moment each happens, so that a process killed with -9 loses none of them.

The ledger thread (:mod:`tasks.writer`) commits a call's reply within a flush window
and a commit; a process killed inside that window took with it an answer the API had
billed, and the item's next claim bought it again. The spool closes the window with
one ``write(2)`` per event, which lands in the page cache and outlives the process
(not the machine):

- ``i ITEM STEP`` before the call's in-flight row is written to the ledger;
- ``s ITEM STEP`` once that row is committed, just before the request leaves;
- ``r {row}`` when its reply or error is back, before anything else is done with it.

Each process writes segment files (``*.spool``) in ``CASCADE_SPOOL_DIR/<database>/``
and holds an exclusive ``flock`` on each. The ledger thread deletes a segment once
every entry written before it was committed (:meth:`Spool.committed`). A segment no
live process holds is a dead process's: any worker of the same host and database
replays it (:func:`recover`, one at a time under the directory's lock) when its pool
starts and before each sweep, well inside a lease:

- a reply replaces its call's in-flight row, so the item's next claim reuses the
  answer instead of buying it again;
- a call with ``i`` and no ``s`` never left: its in-flight row is deleted;
- a call with ``s`` and no reply stays in flight, and becomes ``unknown`` (sent,
  outcome unknown, estimated cost) when the item is claimed again.

Rows the ledger already holds otherwise (settled, or claimed since) are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.logs import get_logger
from models import ledger
from models.db import database_identity
from models.errors import with_db_retry
from tasks.runtime import Runtime

log = get_logger("cascade.spool")

SEGMENT_S = 5.0  # a process starts a new segment this often (while it writes)
SUFFIX = ".spool"
LOCK_NAME = ".recover.lock"


def spool_dir(base: Path | None, database_url: str) -> Path:
    """The spool directory of one database on this host; ``base`` (CASCADE_SPOOL_DIR)
    defaults to one in the temp directory."""
    root = base or Path(tempfile.gettempdir()) / f"cascade-spool-{os.getuid()}"
    key = hashlib.sha256(database_identity(database_url).encode()).hexdigest()[:16]
    return root / key


@dataclass(slots=True)
class Segment:
    path: Path
    fd: int
    opened: float


class Spool:
    """One process's spool. Written from the loop thread; segments are released from
    the ledger thread, in the order :meth:`rotate` hands them over."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self._clock = clock
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)  # the ledger's rows: this user's only
        self._current = self._open()
        self._kept: list[Segment] = []  # segments whose entries did not all commit
        self._closed = False
        self._failing = False  # logged once per run of failed writes

    def _open(self) -> Segment:
        # Made under a name no recovery looks at, locked, then renamed: a recovering
        # process never sees a segment of a live one unlocked.
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.directory / f"{name}{SUFFIX}"
        tmp.rename(path)
        return Segment(path, fd, self._clock())

    @property
    def path(self) -> Path:
        """The segment written now."""
        return self._current.path

    def _write(self, line: str) -> None:
        if self._closed:  # a call still out when the pool shut down: nothing to keep it
            return
        try:
            os.write(self._current.fd, line.encode())
        except OSError as exc:  # a full disk: the ledger still has it, a commit later
            if not self._failing:
                log.error("cascade.spool.write_failed", path=str(self.path), error=repr(exc))
            self._failing = True
        else:
            self._failing = False

    # -- the loop thread ------------------------------------------------------------
    def intent(self, item: int, step: int) -> None:
        self._write(f"i {item} {step}\n")

    def sent(self, item: int, step: int) -> None:
        self._write(f"s {item} {step}\n")

    def returned(self, row: dict[str, Any]) -> None:
        self._write(f"r {json.dumps(row, separators=(',', ':'))}\n")

    def rotate(self) -> Segment | None:
        """A new segment once the current one is old enough; returns the old one, for
        the ledger thread to release once everything queued before it is committed."""
        if self._closed or self._clock() - self._current.opened < SEGMENT_S:
            return None
        old, self._current = self._current, self._open()
        return old

    # -- the ledger thread ----------------------------------------------------------
    def committed(self, segment: Segment, ok: bool) -> None:
        """Every entry of ``segment`` is in the ledger (``ok``): delete it. Otherwise keep
        it, locked, until the process ends; a successor replays it."""
        if not ok:
            self._kept.append(segment)
            return
        segment.path.unlink(missing_ok=True)
        os.close(segment.fd)

    def close(self, clean: bool) -> None:
        """At the process's end: delete the current segment if everything committed
        (``clean``), and unlock what is left for a successor to replay."""
        if self._closed:
            return
        self._closed = True
        if clean:
            self.committed(self._current, True)
        else:
            os.close(self._current.fd)
        for seg in self._kept:
            os.close(seg.fd)
        self._kept.clear()


# -- recovery ----------------------------------------------------------------------
@dataclass
class Found:
    """What dead processes' segments knew: replies, and calls that never left."""

    replies: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    intents: set[tuple[int, int]] = field(default_factory=set)
    sent: set[tuple[int, int]] = field(default_factory=set)
    segments: int = 0
    bad_lines: int = 0

    @property
    def unsent(self) -> list[tuple[int, int]]:
        """Calls whose row was to be written and whose request never left (matched
        across every segment read together: a rotation may part ``i`` from ``s``)."""
        return sorted(self.intents - self.sent - self.replies.keys())

    def read(self, lines: Sequence[bytes]) -> None:
        """Fold one segment's lines in; a line without its newline (cut short) or that
        does not parse is counted, not used."""
        for raw in lines:
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("cut short")
                kind, _, rest = raw[:-1].decode().partition(" ")
                if kind == "r":
                    row = json.loads(rest)
                    self.replies[(int(row["item_id"]), int(row["step"]))] = row
                elif kind in ("i", "s"):
                    item, step = rest.split()
                    (self.intents if kind == "i" else self.sent).add((int(item), int(step)))
                else:
                    raise ValueError(kind)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.bad_lines += 1


@contextlib.contextmanager
def _dead_segments(directory: Path) -> Iterator[list[tuple[Path, int]]]:
    """The segments no live process holds, locked (and the directory's recovery lock)."""
    lock = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    taken: list[tuple[Path, int]] = []
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is recovering now
            yield taken
            return
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live process's
                os.close(fd)
                continue
            if os.fstat(fd).st_nlink == 0:  # released by its owner as we opened it
                os.close(fd)
                continue
            taken.append((path, fd))
        yield taken
    finally:
        for _, fd in taken:
            os.close(fd)
        os.close(lock)


def recover(
    directory: Path,
    apply: Callable[[list[dict[str, Any]], list[tuple[int, int]]], tuple[int, int]],
) -> Found | None:
    """Replay dead processes' segments into the ledger through ``apply(replies, unsent)``
    (:func:`models.ledger.recover_calls` in a transaction) and delete them. None when
    there was nothing to replay."""
    if not directory.is_dir():
        return None
    with _dead_segments(directory) as taken:
        if not taken:
            return None
        found = Found(segments=len(taken))
        for path, _ in taken:
            found.read(path.read_bytes().splitlines(keepends=True))
        unsent = found.unsent
        filled, removed = apply(list(found.replies.values()), unsent)
        for path, _ in taken:
            path.unlink(missing_ok=True)
    log.warning(
        "cascade.spool.recovered",
        segments=found.segments,
        replies=len(found.replies),
        replies_filled=filled,
        unsent=len(unsent),
        unsent_removed=removed,
        bad_lines=found.bad_lines,
    )
    return found


def replay(rt: Runtime, directory: Path) -> Found | None:
    """:func:`recover` into the runtime's ledger; a database that cannot be reached
    leaves the segments for the next try."""

    def apply(replies: list[dict[str, Any]], unsent: list[tuple[int, int]]) -> tuple[int, int]:
        def write() -> tuple[int, int]:
            with rt.sessions.begin() as session:
                return ledger.recover_calls(session, replies, unsent)

        return with_db_retry(write)

    try:
        return recover(directory, apply)
    except Exception as exc:
        log.error("cascade.spool.recover_failed", directory=str(directory), error=repr(exc))
        return None

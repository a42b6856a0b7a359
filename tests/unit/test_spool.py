"""The call spool (:mod:`tasks.spool`): what a process writes, when a segment goes, and
what a recovering process finds in a dead one's segments, including one killed with -9.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog

from models.db import database_identity
from tasks import spool as spool_mod
from tasks.spool import SEGMENT_S, Found, Spool, recover, spool_dir

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Apply:
    """Stands in for the ledger: records what recovery hands it."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[list[dict[str, Any]], list[tuple[int, int]]]] = []
        self.fail = fail

    def __call__(
        self, replies: list[dict[str, Any]], unsent: list[tuple[int, int]]
    ) -> tuple[int, int]:
        if self.fail:
            raise ConnectionError("database down")
        self.calls.append((replies, unsent))
        return len(replies), len(unsent)


def reply(item: int, step: int, **values: Any) -> dict[str, Any]:
    return {"item_id": item, "step": step, "outcome": "ok", "request_id": f"r{item}"} | values


def test_each_event_is_one_line_in_the_segment(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.intent(7, 0)
    s.sent(7, 0)
    s.returned(reply(7, 0, label="spam"))
    lines = s.path.read_text().splitlines()
    assert lines[:2] == ["i 7 0", "s 7 0"]
    assert lines[2].startswith("r {") and '"label":"spam"' in lines[2]
    s.close(clean=False)


def test_a_live_segment_is_not_replayed(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.intent(1, 0)
    apply = Apply()
    assert recover(tmp_path, apply) is None
    assert apply.calls == [] and s.path.exists()
    s.close(clean=True)
    assert not s.path.exists()


def test_a_dead_segment_gives_its_replies_and_its_unsent_calls(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.intent(1, 0)  # sent, answered
    s.sent(1, 0)
    s.returned(reply(1, 0))
    s.intent(2, 0)  # never left
    s.intent(3, 4)  # on the wire
    s.sent(3, 4)
    s.intent(4, 1)  # an error came back before its send was noted: it left
    s.returned(reply(4, 1, outcome="transient"))
    path = s.path
    s.close(clean=False)
    apply = Apply()
    found = recover(tmp_path, apply)
    assert found is not None and found.segments == 1 and found.bad_lines == 0
    [(replies, unsent)] = apply.calls
    assert sorted((r["item_id"], r["step"], r["outcome"]) for r in replies) == [
        (1, 0, "ok"),
        (4, 1, "transient"),
    ]
    assert unsent == [(2, 0)]
    assert not path.exists()
    assert recover(tmp_path, Apply()) is None  # replayed once


def test_an_intent_and_its_send_in_two_segments_are_matched(tmp_path: Path) -> None:
    clock = Clock()
    s = Spool(tmp_path, clock=clock)
    s.intent(5, 2)
    assert s.rotate() is None  # too young
    clock.now += SEGMENT_S
    old = s.rotate()
    assert old is not None and old.path != s.path
    s.sent(5, 2)
    s.committed(old, ok=False)  # its entries did not all commit: kept for a successor
    assert old.path.exists()
    s.close(clean=False)
    apply = Apply()
    found = recover(tmp_path, apply)
    assert found is not None and found.segments == 2
    assert apply.calls == [([], [])]  # it left: nothing to drop


def test_a_committed_segment_is_deleted(tmp_path: Path) -> None:
    clock = Clock()
    s = Spool(tmp_path, clock=clock)
    s.returned(reply(1, 0))
    clock.now += SEGMENT_S
    old = s.rotate()
    assert old is not None
    s.committed(old, ok=True)
    assert not old.path.exists()
    s.close(clean=True)
    assert list(tmp_path.glob("*.spool")) == []


def test_a_line_cut_short_or_garbled_is_counted_not_used(tmp_path: Path) -> None:
    found = Found()
    found.read([b"i 1 0\n", b"s 1 0\n", b'r {"item_id": 1, "st', b"x what\n", b"i 2\n"])
    assert found.bad_lines == 3
    assert found.unsent == [] and found.replies == {}
    assert found.sent == {(1, 0)}


def test_segments_stay_when_the_ledger_cannot_be_reached(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.returned(reply(1, 0))
    path = s.path
    s.close(clean=False)
    with pytest.raises(ConnectionError):
        recover(tmp_path, Apply(fail=True))
    assert path.exists()
    apply = Apply()
    assert recover(tmp_path, apply) is not None  # the next try replays it
    assert [r["item_id"] for r in apply.calls[0][0]] == [1]


def test_one_recovery_at_a_time(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.returned(reply(1, 0))
    s.close(clean=False)
    seen: list[Any] = []

    def apply(replies: list[dict[str, Any]], unsent: list[tuple[int, int]]) -> tuple[int, int]:
        # another process recovering meanwhile finds the directory taken
        seen.append(recover(tmp_path, Apply()))
        return 0, 0

    assert recover(tmp_path, apply) is not None
    assert seen == [None]


def test_a_process_killed_with_9_leaves_every_write_for_recovery(tmp_path: Path) -> None:
    # the child writes, says so, and waits; the kill gives it no chance to flush anything
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from tasks.spool import Spool
                s = Spool(Path({str(tmp_path)!r}))
                s.intent(1, 0); s.sent(1, 0); s.returned({{"item_id": 1, "step": 0}})
                s.intent(2, 0)
                print("written", flush=True)
                time.sleep(60)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    with child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"written\n"
            assert recover(tmp_path, Apply()) is None  # alive: its segment is locked
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    apply = Apply()
    assert recover(tmp_path, apply) is not None
    assert apply.calls == [([{"item_id": 1, "step": 0}], [(2, 0)])]


def test_each_database_has_its_own_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = "postgresql+psycopg://cascade:secret@127.0.0.1:5432/cascade"
    assert spool_dir(tmp_path, pg) == spool_dir(tmp_path, pg.replace("secret", "other"))
    assert spool_dir(tmp_path, pg) != spool_dir(tmp_path, pg.replace("/cascade", "/other"))
    assert "secret" not in database_identity(pg)
    # a relative SQLite path names a different file from another directory
    monkeypatch.chdir(tmp_path)
    here = spool_dir(None, "sqlite:///cascade.db")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert spool_dir(None, "sqlite:///cascade.db") != here
    assert spool_dir(None, "sqlite:///cascade.db").parent == here.parent
    assert spool_mod.tempfile.gettempdir() in str(here)


def test_a_write_that_fails_is_logged_once_and_the_call_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(tmp_path)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_mod.os, "write", full)
    with structlog.testing.capture_logs() as logs:
        s.intent(1, 0)
        s.sent(1, 0)
    assert [e["event"] for e in logs] == ["cascade.spool.write_failed"]
    monkeypatch.undo()
    s.close(clean=True)
    s.intent(2, 0)  # after close: dropped, not an error

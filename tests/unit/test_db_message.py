"""The CLI's one line for a database error says what happened: unreachable, or a
transaction the database gave up on (a deadlock), which is not an outage."""

from __future__ import annotations

from cascade.cliutil import db_unreachable


class _Orig(Exception):
    def __init__(self, text: str, sqlstate: str | None) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


class _Wrapped(Exception):
    def __init__(self, orig: _Orig) -> None:
        super().__init__(str(orig))
        self.orig = orig


def test_a_deadlock_is_not_called_an_unreachable_database() -> None:
    line = db_unreachable(_Wrapped(_Orig("deadlock detected\nDETAIL: ...", "40P01")))
    assert "cannot reach" not in line
    assert "gave up on this command's transaction (deadlock detected)" in line
    assert "run the command again" in line


def test_a_refused_connection_is() -> None:
    line = db_unreachable(_Wrapped(_Orig("connection refused", "08001")))
    assert line.startswith("cannot reach the database at ")
    assert "(connection refused)" in line

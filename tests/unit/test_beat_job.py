"""Beat's jobs survive a database restart: retried for a few seconds, then one log line
and a skipped turn, never a traceback."""

from __future__ import annotations

import pytest
import structlog
from sqlalchemy.exc import OperationalError

from tasks import app as app_module
from tasks.app import beat_job


def _gone() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("the database system is shutting down"))


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr(app_module, "_sleep", delays.append)
    return delays


def test_a_database_back_within_seconds_is_waited_for(slept: list[float]) -> None:
    calls: list[int] = []

    @beat_job
    def sweep(idle: int) -> int:
        calls.append(idle)
        if len(calls) < 3:
            raise _gone()
        return 7

    assert sweep(120) == 7
    assert calls == [120, 120, 120]
    assert slept == [0.4, 0.8]


def test_a_database_still_away_skips_the_turn_with_one_line(slept: list[float]) -> None:
    @beat_job
    def rollup() -> int:
        raise _gone()

    with structlog.testing.capture_logs() as logs:
        assert rollup() is None
    assert len(slept) == 4  # about 6 s in all: 0.4 + 0.8 + 1.6 + 3.2
    assert sum(slept) == pytest.approx(6.0)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [(e["event"], e["job"], e["then"]) for e in errors] == [
        ("cascade.beat.database_unavailable", "rollup", "skipped until its next turn")
    ]
    assert "shutting down" in errors[0]["detail"]
    assert "Traceback" not in repr(errors[0])


def test_other_errors_are_not_swallowed(slept: list[float]) -> None:
    @beat_job
    def backfill(name: str) -> None:
        raise LookupError(f"no configured backfill named {name!r}")

    with pytest.raises(LookupError):
        backfill("nightly")
    assert slept == []

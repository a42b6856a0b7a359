"""The command line's shared pieces: amounts and durations typed by a user, the one-line
database errors, the wait for a restarting database, and the guard that turns whatever
escapes a command into one line and an exit code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from sqlalchemy.exc import OperationalError

from cascade.cli_chaos import parse_duration
from cascade.cliutil import db_unreachable, ensure_schema, guarded, parse_usd, with_db_wait
from common.settings import get_settings


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point the settings at a database URL for one test."""

    def use(url: str) -> None:
        monkeypatch.setenv("CASCADE_DATABASE_URL", url)
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("25.00", 25_000_000_000),
        ("$1.5", 1_500_000_000),  # a leading dollar sign is what people type
        (" 0 ", 0),  # zero is a cap too: nothing may be spent
        ("0.000000001", 1),  # one nano-dollar, exactly
        ("1e2", 100_000_000_000),
    ],
)
def test_parse_usd(text: str, nanos: int) -> None:
    assert parse_usd(text) == nanos


@pytest.mark.parametrize("text", ["abc", "-1", "NaN", "Infinity", "", "$"])
def test_parse_usd_refuses_what_is_not_an_amount(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as caught:
        parse_usd(text)
    assert caught.value.exit_code == 2  # a usage error
    said = capsys.readouterr().err
    assert f"error: {text!r} is not an amount in USD like 25.00" in " ".join(said.split())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), (" 5m ", 300)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0m", "10x", "", "1.5h", "-5m", "m"])
def test_parse_duration_refuses_zero_and_what_is_not_a_duration(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as caught:
        parse_duration(text)
    assert caught.value.exit_code == 2
    assert "is not a duration like 90s, 10m or 2h" in capsys.readouterr().err


def _lost(message: str, sqlstate: str | None = None) -> OperationalError:
    orig = Exception(message)
    orig.sqlstate = sqlstate  # type: ignore[attr-defined]
    return OperationalError("SELECT 1", {}, orig)


def test_unreachable_database_says_where_without_the_password(database: Any) -> None:
    database("postgresql+psycopg://cascade:hunter2@db.internal:5432/cascade")
    line = db_unreachable(_lost("connection refused\nIs the server running on that host?"))
    assert line.startswith("cannot reach the database at db.internal:5432/cascade ")
    assert "(connection refused)" in line  # the first line of the cause only
    assert "hunter2" not in line and "Is the server" not in line
    assert line.endswith("then run the command again")


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_deadlock_or_serialization_failure_is_not_called_unreachable(
    database: Any, sqlstate: str
) -> None:
    database("postgresql+psycopg://postgres@127.0.0.1:5432/cascade")
    line = db_unreachable(_lost("deadlock detected", sqlstate))
    assert "gave up on this command's transaction (deadlock detected)" in line
    assert "what is already written is not written twice" in line
    assert "cannot reach" not in line


def test_unreachable_cause_is_redacted_and_bounded(database: Any) -> None:
    database("sqlite:///x.db")
    secret = "sk-ant-api03-abcdefghijklmnop"
    line = db_unreachable(RuntimeError(f"{secret} " + "x" * 500))
    assert secret not in line and "[redacted]" in line
    assert "at sqlite:///x.db" in line  # no credentials in a file URL: said whole
    assert len(line) < 400


def test_an_empty_cause_is_named_by_its_type(database: Any) -> None:
    database("sqlite:///x.db")
    assert "(TimeoutError)" in db_unreachable(TimeoutError())


def test_with_db_wait_returns_the_answer_and_retries_a_lost_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    failures = iter([_lost("restarting"), _lost("restarting")])

    def call() -> str:
        lost = next(failures, None)
        if lost is not None:
            raise lost
        return "ok"

    assert with_db_wait(call, wait_s=60) == "ok"
    assert slept == [0.25, 0.5]  # doubling from a quarter second


def test_with_db_wait_gives_up_with_one_line_and_exit_1(
    database: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    database("sqlite:///x.db")

    def call() -> None:
        raise _lost("unable to open database file")

    with pytest.raises(typer.Exit) as caught:
        with_db_wait(call, wait_s=0)
    assert caught.value.exit_code == 1
    assert "cannot reach the database" in capsys.readouterr().err


def test_with_db_wait_lets_any_other_error_through() -> None:
    def call() -> None:
        raise KeyError("not a database problem")

    with pytest.raises(KeyError):
        with_db_wait(call, wait_s=60)


def _raises(exc: BaseException) -> Any:
    def run() -> None:
        raise exc

    return run


def test_guarded_turns_ctrl_c_into_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        guarded(_raises(KeyboardInterrupt()))
    assert caught.value.code == 130
    assert "interrupted" in capsys.readouterr().err


def test_guarded_turns_a_lost_database_into_one_line(
    database: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    database("sqlite:///x.db")
    with pytest.raises(SystemExit) as caught:
        guarded(_raises(_lost("disk I/O error")))
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "error: cannot reach the database at sqlite:///x.db (disk I/O error)" in " ".join(
        err.split()
    )
    assert "Traceback" not in err


def test_guarded_turns_a_crash_into_a_redacted_line(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-ant-api03-THIS-MUST-NOT-SHOW"
    with pytest.raises(SystemExit) as caught:
        guarded(_raises(ValueError(f"bad key {secret} " + "y" * 600)))
    assert caught.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ValueError: bad key [redacted] yyy")
    assert err.endswith("(CASCADE_LOG_LEVEL=DEBUG shows where)")
    assert secret not in err and "y" * 400 not in err


def test_guarded_leaves_exits_alone() -> None:
    with pytest.raises(SystemExit) as caught:
        guarded(_raises(SystemExit(3)))
    assert caught.value.code == 3
    guarded(lambda: None)  # a command that ends normally: no exit at all


def test_ensure_schema_migrates_an_embedded_database_itself(database: Any, tmp_path: Path) -> None:
    from migrations import runner

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    database(url)
    assert not runner.is_at_head(url)
    ensure_schema()
    assert runner.is_at_head(url)


def test_ensure_schema_asks_for_migrate_on_a_server_database(
    database: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from migrations import runner

    database("postgresql+psycopg://postgres@127.0.0.1:1/none")
    monkeypatch.setattr(runner, "is_at_head", lambda url: False)
    upgraded: list[str] = []
    monkeypatch.setattr(runner, "upgrade", upgraded.append)
    with pytest.raises(typer.Exit) as caught:
        ensure_schema()
    assert caught.value.exit_code == 2
    assert "run `cascade migrate`" in capsys.readouterr().err
    assert upgraded == []  # a server database is never migrated behind the operator's back


def test_version_option_prints_the_installed_version() -> None:
    from importlib.metadata import version

    from typer.testing import CliRunner

    import cascade.cli  # noqa: F401  (registers the commands)
    from cascade.cliutil import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cascade {version('cascade')}"


def test_help_names_types_as_a_user_types_them() -> None:
    from typer.testing import CliRunner

    import cascade.cli  # noqa: F401  (registers the commands)
    from cascade.cliutil import app

    result = CliRunner().invoke(app, ["submit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "PATH" in result.output and "TEXT" in result.output
    assert "<str>" not in result.output and "BOOLEAN" not in result.output


def test_status_of_a_stored_job_tier_keys() -> None:
    from cascade.progress import tier_names, waiting_by_tier

    the_job = SimpleNamespace(pipeline={"tiers": [{"name": "rules"}, {"name": "small"}]})
    names = tier_names(the_job)
    assert names == ["rules", "small"]
    progress = {"total": 9, "pending:0": 2, "running:1": 3, "fallback:1": 1, "pending:7": 5}
    # a tier index the pipeline does not have (an edited pipeline) is left out
    assert waiting_by_tier(progress, names) == {"rules": 2, "small": 4}
    assert waiting_by_tier({"total": 0}, names) == {"rules": 0, "small": 0}


def test_an_error_message_is_printed_as_written_not_read_as_markup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cascade.cliutil import fail

    exit_ = fail("unknown key [tiers.extra] in [bold]p.toml[/bold]")
    assert exit_.exit_code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == "error: unknown key [tiers.extra] in [bold]p.toml[/bold]"


def test_fleet_lines_say_workers_and_messages_per_queue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tasks.fleet
    from cascade.fleetview import print_fleet

    monkeypatch.setattr(tasks.fleet, "live_workers", lambda timeout_s: {"w1": ["tier.small"]})
    monkeypatch.setattr(tasks.fleet, "queue_depths", lambda qs: {"tier.small": 1, "tier.large": 2})
    print_fleet(["tier.small", "tier.large"])
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        "tier.small 1 workers 1 message waiting",
        "tier.large 0 workers 2 messages waiting start one: cascade worker --queues tier.large",
    ]


def test_fleet_lines_when_the_broker_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tasks.fleet
    from cascade.fleetview import print_fleet

    def down(timeout_s: float) -> dict[str, list[str]]:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.fleet, "live_workers", down)
    print_fleet(["tier.small"])
    assert " ".join(capsys.readouterr().out.split()) == (
        "broker not reachable: Error 111 connecting to 127.0.0.1:6379. Connection refused."
    )

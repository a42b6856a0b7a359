"""`cascade doctor`: each check's verdict, its words, and what it says to do about it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade.doctor import Check, plain_reason, run_checks
from cascade.fakeapi import FakeServer
from common.settings import get_settings
from tasks.runtime import reset_runtime

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "examples" / "support_triage.toml"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A clean environment: an embedded runtime on a fresh SQLite file, no key."""
    import os

    for name in list(os.environ):
        if name.startswith(("CASCADE_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CASCADE_DATABASE_URL", f"sqlite:///{tmp_path / 'doctor.db'}")

    def setenv(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    get_settings.cache_clear()
    yield setenv
    get_settings.cache_clear()
    reset_runtime()


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


class _Driver(Exception):
    pass


class _Wrapped(Exception):
    def __init__(self, orig: BaseException) -> None:
        super().__init__("(psycopg.OperationalError) long SQLAlchemy text")
        self.orig = orig


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        # the driver's first non-blank line: the rest is SQL and links
        (
            _Wrapped(_Driver("\n  connection refused  \nIs the server running?")),
            "connection refused",
        ),
        (_Wrapped(_Driver("")), "_Driver"),  # a driver error with no words: its name
        (ValueError("  bad value  "), "bad value"),
        (ValueError("line one\nline two"), "line one\nline two"),  # not wrapped: whole
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_plain_reason(exc: BaseException, reason: str) -> None:
    assert plain_reason(exc) == reason


def test_an_unmigrated_database_is_a_failure_that_says_to_migrate(env: Any) -> None:
    from migrations import runner

    checks = by_name(run_checks([], "claude-haiku-5-5"))
    db = checks["database"]
    assert not db.ok
    assert db.detail == f"schema at nothing, code expects {runner.head()}"
    assert db.fix.startswith("run `cascade migrate`")


def test_embedded_runtime_checks_no_broker_and_no_workers(env: Any) -> None:
    checks = run_checks([], "claude-haiku-5-5")
    names = [c.name for c in checks]
    assert names == ["settings", "database", "shared state (breakers)", "model API"]
    found = by_name(checks)
    assert found["settings"] == Check("settings", True, "runtime: embedded")
    assert found["shared state (breakers)"].ok
    assert found["shared state (breakers)"].detail == "not used (embedded runtime: in-process)"


def test_a_migrated_database_is_ok(env: Any, tmp_path: Path) -> None:
    from migrations import runner

    runner.upgrade(f"sqlite:///{tmp_path / 'doctor.db'}")
    db = by_name(run_checks([], "claude-haiku-5-5"))["database"]
    assert db.ok and db.detail == f"reachable, schema at {runner.head()}"


def test_an_unreachable_redis_fails_with_what_to_start(env: Any) -> None:
    env("CASCADE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    redis = by_name(run_checks([], "claude-haiku-5-5"))["shared state (breakers)"]
    assert not redis.ok
    assert redis.fix == "start Redis or fix CASCADE_REDIS_URL"
    assert redis.detail  # the driver's words, whatever the platform says


def test_a_settings_file_that_cannot_be_read_is_the_only_check(env: Any, tmp_path: Path) -> None:
    env("ANTHROPIC_API_KEY_FILE", str(tmp_path / "no-such-secret"))
    checks = run_checks([PIPELINE], "claude-haiku-5-5")
    assert len(checks) == 1
    assert checks[0].name == "settings" and not checks[0].ok
    assert checks[0].detail.startswith("ANTHROPIC_API_KEY_FILE: cannot read")
    assert checks[0].fix == "fix the variable named"


def test_no_key_fails_and_offers_offline(env: Any) -> None:
    api = by_name(run_checks([], "claude-haiku-5-5"))["model API"]
    assert not api.ok and api.detail == "ANTHROPIC_API_KEY is not set"
    assert "--offline / CASCADE_OFFLINE=1" in api.fix


def test_offline_needs_no_key(env: Any) -> None:
    env("CASCADE_OFFLINE", "1")
    api = by_name(run_checks([], "claude-haiku-5-5"))["model API"]
    assert api.ok and "offline (CASCADE_OFFLINE)" in api.detail


def test_the_key_is_tried_with_a_free_token_count(env: Any) -> None:
    with FakeServer(latency_ms=0, jitter_ms=0, seed=1) as server:
        url = server.start()
        env("ANTHROPIC_BASE_URL", url)
        env("ANTHROPIC_API_KEY", "sk-ant-api03-doctor-check-0123456789")
        api = by_name(run_checks([], "claude-haiku-5-5"))["model API"]
        assert api.ok
        assert api.detail.startswith(f"key accepted by {url} (token count call: ")
        assert api.detail.endswith(" tokens, nothing billed)")
        assert server.stats()["by_model"] == {}  # no message was sent, nothing billed


def test_a_good_pipeline_is_described_and_its_prompt_cache_checked(env: Any) -> None:
    checks = by_name(run_checks([PIPELINE], "claude-haiku-5-5"))
    pipe = checks[f"pipeline {PIPELINE}"]
    assert pipe.ok and pipe.detail == "support-triage: 3 tiers, 6 labels"
    cache = checks[f"prompt cache {PIPELINE}"]
    assert cache.ok
    # one note per model tier and model: cached, or by how much the prefix falls short
    notes = cache.detail.split("; ")
    assert notes and all(n.startswith(("small/", "large/")) for n in notes)
    assert all(("cached" in n) or ("NOT cached" in n) for n in notes)


def test_a_pipeline_with_cache_off_says_so(env: Any, tmp_path: Path) -> None:
    path = tmp_path / "off.toml"
    path.write_text(
        'name = "p"\nlabels = ["a", "b"]\ninstructions = "x"\n'
        '[[tiers]]\nname = "only"\nkind = "claude"\nmodel = "claude-haiku-5-5"\ncache = "off"\n'
    )
    cache = by_name(run_checks([path], "claude-haiku-5-5"))[f"prompt cache {path}"]
    assert cache.detail == 'only/claude-haiku-5-5: off (cache = "off")'


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('name = "p"\nlabels = ["a"]\n', "tiers"),  # a required key missing
        (
            'name = "p"\nlabels = ["a", "b"]\ninstructions = "x"\n'
            '[[tiers]]\nname = "t"\nkind = "claude"\nmodel = "gpt-unknown"\n',
            "gpt-unknown",  # a model the price table does not know
        ),
        (
            'name = "p"\nlabels = ["a", "b"]\ninstructions = "x"\n'
            '[[tiers]]\nname = "r"\nkind = "rules"\n'
            "[[tiers.rules]]\npattern = 'x'\nlabel = \"a\"\n",
            "the last tier must be a model tier",  # nothing would answer the rest
        ),
    ],
)
def test_a_broken_pipeline_fails_once_without_a_cache_check(
    env: Any, tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    checks = run_checks([path], "claude-haiku-5-5")
    found = by_name(checks)
    assert not found[f"pipeline {path}"].ok
    assert said in found[f"pipeline {path}"].detail
    assert found[f"pipeline {path}"].fix == "fix the problems listed (each has its path)"
    assert f"prompt cache {path}" not in found


def test_a_missing_pipeline_file_is_a_failed_check_not_a_crash(env: Any, tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    check = by_name(run_checks([path], "claude-haiku-5-5"))[f"pipeline {path}"]
    assert not check.ok and check.detail


def test_cli_doctor_exits_1_when_a_check_fails_and_prints_each_fix(env: Any) -> None:
    from cascade import cli_ops  # noqa: F401  (registers the command)
    from cascade.cliutil import app

    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "FAIL" in result.output and "fix: run `cascade migrate`" in result.output
    assert "fix: export ANTHROPIC_API_KEY=..." in result.output


def test_cli_doctor_exits_0_when_all_is_well(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import cascade.doctor
    from cascade import cli_ops  # noqa: F401
    from cascade.cliutil import app

    monkeypatch.setattr(
        cascade.doctor, "run_checks", lambda pipelines, model: [Check("database", True, "fine")]
    )
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0
    assert "ok" in result.output and "FAIL" not in result.output


def test_cli_doctor_prints_details_as_written_not_as_markup(
    env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redacted secret shows as [redacted], and a path in brackets stays whole: the
    details are text from outside (drivers, files), never rich markup."""
    import cascade.doctor
    from cascade import cli_ops  # noqa: F401
    from cascade.cliutil import app

    checks = [
        Check("model API", False, "refused key [redacted]", "check [ANTHROPIC_API_KEY]"),
        Check("pipeline [x].toml", True, "p: 1 tiers, 2 labels"),
    ]
    monkeypatch.setattr(cascade.doctor, "run_checks", lambda pipelines, model: checks)
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "refused key [redacted]" in result.output
    assert "fix: check [ANTHROPIC_API_KEY]" in result.output
    assert "pipeline [x].toml" in result.output

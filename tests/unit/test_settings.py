"""Settings: secrets may come from files (Docker secrets), never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import Settings, SettingsError, secrets_from_files


def test_file_secrets_fill_unset_variables(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-ant-from-a-file\n")
    url = tmp_path / "db"
    url.write_text("postgresql+psycopg://u:p@db/cascade")
    env = {"ANTHROPIC_API_KEY_FILE": str(key), "CASCADE_DATABASE_URL_FILE": str(url)}

    settings = Settings(**secrets_from_files(env))

    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-from-a-file"
    assert settings.database_url == "postgresql+psycopg://u:p@db/cascade"
    # the key never shows in the settings' repr
    assert "sk-ant-from-a-file" not in repr(settings)


def test_a_set_variable_wins_over_its_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("from-file")
    env = {"ANTHROPIC_API_KEY": "from-env", "ANTHROPIC_API_KEY_FILE": str(key)}
    assert secrets_from_files(env) == {}


def test_an_unreadable_secret_file_says_which_variable(tmp_path: Path) -> None:
    env = {"ANTHROPIC_API_KEY_FILE": str(tmp_path / "missing")}
    with pytest.raises(SettingsError, match="ANTHROPIC_API_KEY_FILE: cannot read"):
        secrets_from_files(env)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        # a key must name the provider too, as breakers and limiters do
        ({"claude-haiku-5-5": {"requests_per_min": 60}}, "name limits by provider:model"),
        # a typo in a limit's name is caught, not ignored
        ({"anthropic:m": {"requests_per_minute": 60}}, "unknown limit"),
        # zero would stop all traffic: refuse it
        ({"anthropic:m": {"requests_per_min": 0}}, "must be positive"),
    ],
)
def test_bad_rate_limits_are_refused(limits: dict[str, dict[str, float]], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Settings(rate_limits=limits)


def test_rate_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CASCADE_RATE_LIMITS", '{"anthropic:claude-haiku-5-5": {"requests_per_min": 600}}'
    )
    assert Settings().rate_limits == {"anthropic:claude-haiku-5-5": {"requests_per_min": 600}}

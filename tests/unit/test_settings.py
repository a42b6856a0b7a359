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


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CASCADE_REDIS_URL", "CASCADE_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("broker", "redis", "shared", "embedded"),
    [
        # nothing configured: the embedded runtime, no shared Redis
        ("memory://localhost/", None, None, True),
        # a Redis broker doubles as the fleet's shared Redis
        ("redis://r:6379/0", None, "redis://r:6379/0", False),
        ("rediss://r:6380/0", None, "rediss://r:6380/0", False),
        # a separate Redis wins over the broker's
        ("redis://r:6379/0", "redis://state:6379/2", "redis://state:6379/2", False),
        # a broker that is not Redis gives no shared Redis of its own
        ("amqp://guest@rabbit//", None, None, False),
        ("amqp://guest@rabbit//", "redis://state/1", "redis://state/1", False),
    ],
)
def test_shared_redis_and_embedded_follow_the_urls(
    clean_env: None, broker: str, redis: str | None, shared: str | None, embedded: bool
) -> None:
    settings = Settings(broker_url=broker, redis_url=redis)

    assert settings.shared_redis_url == shared
    assert settings.embedded is embedded


def test_every_file_secret_maps_to_its_setting_stripped(tmp_path: Path, clean_env: None) -> None:
    env: dict[str, str] = {}
    for var, value in [
        ("CASCADE_BROKER_URL", "redis://b:6379/0"),
        ("CASCADE_REDIS_URL", "redis://s:6379/1"),
    ]:
        path = tmp_path / var
        path.write_text(f"  {value}\n\n")
        env[f"{var}_FILE"] = str(path)

    values = secrets_from_files(env)

    assert values == {"broker_url": "redis://b:6379/0", "redis_url": "redis://s:6379/1"}
    assert Settings(**values).shared_redis_url == "redis://s:6379/1"


def test_an_empty_variable_does_not_hide_its_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("from-file")

    values = secrets_from_files({"ANTHROPIC_API_KEY": "", "ANTHROPIC_API_KEY_FILE": str(key)})

    assert values == {"ANTHROPIC_API_KEY": "from-file"}  # the key's alias, as Settings reads it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("breaker_store_down", "maybe"),  # only allow or deny
        ("log_format", "xml"),  # only auto, json or console
        ("batch_size", 0),  # a message must carry at least one id
        ("lease_seconds", 2),  # shorter than a heartbeat could renew
        ("defer_cap_s", 3600),  # must stay well under the broker's visibility timeout
    ],
)
def test_out_of_range_settings_are_refused(field: str, value: object) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_settings_come_from_cascade_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_CONCURRENCY", "8")
    monkeypatch.setenv("CASCADE_BREAKER_STORE_DOWN", "deny")
    monkeypatch.setenv("CONCURRENCY", "999")  # without the prefix: not ours

    settings = Settings()

    assert (settings.concurrency, settings.breaker_store_down) == (8, "deny")

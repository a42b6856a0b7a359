"""Which model API a command talks to: a key that can work, checked before anything is
written, or the built-in fake started for the command (``cascade.offline``); and the
progress bar's arithmetic (``cascade.progress``)."""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from cascade.offline import (
    OFFLINE_KEY,
    KeyProblem,
    check_key,
    fake_api,
    model_api,
    needs_key,
    probe_key,
)
from cascade.progress import JobBar, fmt_duration, rate_and_eta
from common.settings import Settings, get_settings
from workers.pipeline import parse_pipeline

HEAD = {"name": "p", "labels": ["a", "b"], "instructions": "x"}


def pipeline(*tiers: dict[str, Any]) -> Any:
    return parse_pipeline(HEAD | {"tiers": list(tiers)})


def claude(**values: Any) -> dict[str, Any]:
    return {"name": "t", "kind": "claude", "model": "claude-haiku-5-5"} | values


RULES = {"name": "r", "kind": "rules", "rules": [{"pattern": "x", "label": "a"}]}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith(("CASCADE_", "ANTHROPIC_")):
            monkeypatch.delenv(name)

    def setenv(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    get_settings.cache_clear()
    yield setenv
    get_settings.cache_clear()


def settings(key: str | None, base_url: str | None = None) -> Settings:
    values: dict[str, Any] = {"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": base_url}
    return Settings(**{k: v for k, v in values.items() if v is not None})


@pytest.mark.parametrize(
    ("tiers", "needed"),
    [
        ((claude(),), True),
        ((RULES, claude()), True),
        # Bedrock and Vertex take cloud credentials, not this key
        ((claude(provider="bedrock"),), False),
        ((claude(provider="bedrock", fallbacks=["vertex:claude-haiku-5-5"]),), False),
        # a fallback on the Anthropic API needs the key even behind a Bedrock primary
        ((claude(provider="bedrock", fallbacks=["anthropic:claude-haiku-5-5"]),), True),
        # so does a verifier that calls it
        (
            (
                claude(
                    provider="bedrock",
                    accept={"verifier": {"model": "claude-haiku-5-5"}},
                ),
                claude(name="last", provider="bedrock"),
            ),
            True,
        ),
    ],
)
def test_needs_key(clean_env: Any, tiers: tuple[dict[str, Any], ...], needed: bool) -> None:
    assert needs_key(pipeline(*tiers)) is needed


@pytest.mark.parametrize(
    ("key", "base_url", "problem"),
    [
        (None, None, "ANTHROPIC_API_KEY is not set"),
        ("   ", None, "ANTHROPIC_API_KEY is empty"),
        (" sk-ant-api03-abc", None, "malformed"),  # pasted with a space
        ("sk-ant-api03-abc\n", None, "malformed"),  # a line break from a file
        ("sk-ant-api03-ab c", None, "malformed"),
        ("sk-ant-api03-abcé", None, "malformed"),  # no HTTP header carries it
        ("abc123", None, "does not look like an Anthropic API key"),
        ("abc123", "http://127.0.0.1:9", None),  # another endpoint: its own keys
        ("sk-ant-api03-abc", None, None),
    ],
)
def test_check_key(
    clean_env: Any, key: str | None, base_url: str | None, problem: str | None
) -> None:
    s = settings(key, base_url)
    if problem is None:
        check_key(s)
        return
    with pytest.raises(KeyProblem) as caught:
        check_key(s)
    assert problem in str(caught.value)
    if key and key.strip():
        assert key.strip() not in str(caught.value)  # never the key itself


def test_probe_key_says_when_the_api_cannot_be_reached(clean_env: Any) -> None:
    s = settings("sk-ant-api03-abcdefghijkl", "http://127.0.0.1:1")
    with pytest.raises(KeyProblem) as caught:
        probe_key(s, pipeline(claude()))
    assert str(caught.value).startswith("cannot reach http://127.0.0.1:1 (connection error")
    assert "add --offline" in str(caught.value)


def test_probe_key_passes_a_key_the_fake_accepts_and_ignores_other_errors(clean_env: Any) -> None:
    from cascade.fakeapi import FakeServer

    with FakeServer(latency_ms=0, jitter_ms=0, seed=1) as server:
        url = server.start()
        probe_key(settings("sk-ant-api03-abcdefghijkl", url), pipeline(claude()))
        # a model the endpoint does not know is for the job's own calls to report
        probe_key(settings("sk-ant-api03-abcdefghijkl", url), pipeline(claude(model="claude-x-0")))
        assert server.stats()["requests"] == 0  # count_tokens only: no message was sent


def test_model_api_offline_is_for_the_embedded_runtime_only(clean_env: Any) -> None:
    clean_env("CASCADE_BROKER_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(KeyProblem) as caught, model_api(pipeline(claude()), True, Console()):
        pass
    assert "python -m cascade.fakeapi --host 0.0.0.0" in str(caught.value)


def test_model_api_on_workers_leaves_the_key_to_them(clean_env: Any) -> None:
    clean_env("CASCADE_BROKER_URL", "redis://127.0.0.1:1/0")
    entered = False
    with model_api(pipeline(claude()), False, Console()):  # no key, and no complaint
        entered = True
    assert entered


def test_model_api_checks_the_key_before_the_block(clean_env: Any) -> None:
    ran = False
    with (
        pytest.raises(KeyProblem, match="is not set"),
        model_api(pipeline(claude()), False, Console()),
    ):
        ran = True
    assert not ran  # nothing was written with a key that cannot work


def test_model_api_needs_no_key_for_a_pipeline_that_calls_no_anthropic_model(
    clean_env: Any,
) -> None:
    with model_api(pipeline(claude(provider="bedrock")), False, Console()):
        pass


def test_offline_runs_the_fake_for_the_block_and_puts_the_environment_back(
    clean_env: Any,
) -> None:
    clean_env("ANTHROPIC_BASE_URL", "http://example.invalid")
    buf = io.StringIO()
    console = Console(file=buf, width=120, color_system=None)
    with model_api(pipeline(claude()), True, console):
        inside = get_settings()
        assert inside.anthropic_base_url is not None
        assert inside.anthropic_base_url.startswith("http://127.0.0.1:")
        assert inside.anthropic_api_key is not None
        assert inside.anthropic_api_key.get_secret_value() == OFFLINE_KEY
    assert os.environ["ANTHROPIC_BASE_URL"] == "http://example.invalid"
    assert "ANTHROPIC_API_KEY" not in os.environ
    assert get_settings().anthropic_base_url == "http://example.invalid"
    text = buf.getvalue()
    assert "OFFLINE: no real Claude model is called." in text
    assert "fake Messages API served 0 requests" in text


def test_the_fake_is_stopped_even_when_the_block_fails(clean_env: Any) -> None:
    buf = io.StringIO()
    with pytest.raises(RuntimeError), fake_api(Console(file=buf, color_system=None)):
        raise RuntimeError("the command failed")
    assert "ANTHROPIC_BASE_URL" not in os.environ
    assert "served 0 requests" in buf.getvalue()


# --- progress -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0:00"), (59.9, "0:59"), (75, "1:15"), (3600, "1:00:00"), (3725, "1:02:05"), (-3, "0:00")],
)
def test_fmt_duration(seconds: float, shown: str) -> None:
    assert fmt_duration(seconds) == shown


@pytest.mark.parametrize(
    ("samples", "total", "shown"),
    [
        ([], 100, ("", "")),  # nothing to go on
        ([(0.0, 0)], 100, ("", "")),
        ([(0.0, 0), (2.0, 0)], 100, ("", "")),  # a short pause says nothing
        ([(0.0, 5), (6.0, 5)], 100, ("0/s", "")),  # five seconds without progress: 0/s
        ([(0.0, 0), (10.0, 50)], 100, ("5.0/s", "ETA 0:10")),
        ([(0.0, 0), (1.0, 1234)], 10_000, ("1,234/s", "ETA 0:07")),
        ([(0.0, 0), (1.0, 20)], None, ("20/s", "")),  # no total yet: no ETA
        ([(5.0, 0), (5.0, 10)], 100, ("", "")),  # no time has passed
    ],
)
def test_rate_and_eta(
    samples: list[tuple[float, int]], total: int | None, shown: tuple[str, str]
) -> None:
    assert rate_and_eta(deque(samples), total) == shown


def test_job_bar_shows_lines_read_then_items_finished() -> None:
    buf = io.StringIO()
    bar = JobBar(Console(file=buf, width=160, color_system=None, force_terminal=False), "submit")
    bar.intake({"lines_read": 12_345})
    task = bar.progress.tasks[0]
    assert task.description == "reading" and task.fields["count"] == "12,345 lines"
    bar.job(7, 250, 1_000, "small 3")
    task = bar.progress.tasks[0]
    assert task.description == "job 7"
    assert (task.completed, task.total) == (250, 1_000)
    assert task.fields["count"] == "250/1,000" and task.fields["tiers"] == "small 3"
    assert len(bar.samples) == 1
    with bar:
        pass
    assert "job 7" in buf.getvalue()

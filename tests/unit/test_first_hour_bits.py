"""Pure pieces of the first hour: key checks, the progress line's rate and ETA."""

from __future__ import annotations

from collections import deque

import pytest
from pydantic import SecretStr

from cascade.offline import KeyProblem, check_key, needs_key
from cascade.progress import fmt_duration, rate_and_eta
from common.settings import Settings
from tests.e2e.conftest import PIPELINE
from workers.pipeline import PipelineError, load_pipeline


def settings(key: str | None, base_url: str | None = None) -> Settings:
    return Settings(
        anthropic_api_key=None if key is None else SecretStr(key),
        anthropic_base_url=base_url,
    )


@pytest.mark.parametrize(
    ("key", "base_url", "problem"),
    [
        (None, None, "not set"),
        ("", None, "empty"),
        ("sk-ant-abc def", None, "malformed"),
        ("sk-ant-abc\n", None, "malformed"),
        ("sk-ant-ä", None, "malformed"),
        ("not-a-key", None, "does not look like"),  # the real API: its keys start sk-ant-
        ("anything", "http://127.0.0.1:8787", None),  # another endpoint: its own keys
        ("sk-ant-api03-ok", None, None),
    ],
)
def test_check_key(key: str | None, base_url: str | None, problem: str | None) -> None:
    if problem is None:
        check_key(settings(key, base_url))
        return
    with pytest.raises(KeyProblem, match=problem) as info:
        check_key(settings(key, base_url))
    assert key is None or key.strip() == "" or key not in str(info.value)  # never echoed


def test_the_example_pipeline_needs_a_key() -> None:
    assert needs_key(load_pipeline(PIPELINE))


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0:00"), (75, "1:15"), (3725, "1:02:05")])
def test_fmt_duration(seconds: float, shown: str) -> None:
    assert fmt_duration(seconds) == shown


def test_rate_and_eta() -> None:
    samples: deque[tuple[float, int]] = deque([(0.0, 0), (10.0, 1000)])
    assert rate_and_eta(samples, 3000) == ("100/s", "ETA 0:20")
    assert rate_and_eta(deque([(0.0, 5)]), 10) == ("", "")  # one sample: nothing yet
    assert rate_and_eta(deque([(0.0, 5), (6.0, 5)]), 10) == ("0/s", "")  # stalled


def test_an_unknown_key_gets_a_suggestion(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "p.toml"
    path.write_text(PIPELINE.read_text().replace("min_confidence", "min_confidense"))
    with pytest.raises(PipelineError, match="did you mean 'min_confidence'"):
        load_pipeline(path)

"""`cascade doctor` says what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import PIPELINE, SECRET, run

pytestmark = pytest.mark.e2e


def test_doctor_passes_on_a_healthy_setup(env: dict[str, str], fake: FakeServer) -> None:
    assert run(env, "migrate").returncode == 0
    result = run(env | {"COLUMNS": "250"}, "doctor", "--pipeline", str(PIPELINE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "support-triage" in result.stdout
    assert "token count call" in result.stdout
    # one token-count call reached the model API, and no completion
    stats = fake.stats()
    assert stats["requests"] == 0  # count_tokens is not a /v1/messages completion
    assert SECRET not in result.stdout + result.stderr


def test_doctor_names_each_problem_and_its_fix(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nlabels = ["a"]\n')
    # the database is not migrated, the pipeline is invalid, the key is missing
    env = {k: v for k, v in env.items() if k != "ANTHROPIC_API_KEY"}
    result = run(env, "doctor", "--pipeline", str(bad))
    assert result.returncode == 1
    out = result.stdout
    assert out.count("FAIL") == 3
    assert "cascade migrate" in out
    assert "ANTHROPIC_API_KEY is not set" in out
    assert "labels" in out

"""Fixtures for the end-to-end tests: a fake Messages API and a CLI environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer

ROOT = Path(__file__).resolve().parents[2]
CASCADE = str(Path(sys.executable).parent / "cascade")
PIPELINE = ROOT / "examples" / "support_triage.toml"
TICKETS = ROOT / "examples" / "tickets.jsonl"
SECRET = "sk-ant-api03-THIS-KEY-MUST-NEVER-BE-LOGGED-0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer(latency_ms=2, jitter_ms=2, seed=11) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, fake: FakeServer) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
    return base | {
        "CASCADE_DATABASE_URL": f"sqlite:///{tmp_path / 'cascade.db'}",
        "ANTHROPIC_BASE_URL": fake.start(),
        "ANTHROPIC_API_KEY": SECRET,
        "CASCADE_LOG_LEVEL": "DEBUG",
        "CASCADE_LOG_FORMAT": "json",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CASCADE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

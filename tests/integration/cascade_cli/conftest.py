"""Fixtures for running `cascade` commands in-process on the hand-built ledger
(tests/integration/conftest.py): ``cli("report", "--job", "main")`` returns click's Result.

The ledger is built once per test module into a SQLite file and copied for each test, so
each test starts from the same rows and stays fast. (The report queries run on both
dialects in test_analytics.py; the tests using these fixtures are about the commands.)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from migrations.runner import upgrade
from models.db import make_engine
from tests.integration.conftest import build_ledger

MAIN, OTHER = "main", "other"  # job ids 1 and 2
PIPELINE = {
    "name": "moderation",
    "labels": ["spam", "ham"],
    "tiers": [
        {"name": "rules", "kind": "rules"},
        {"name": "small", "kind": "claude", "accept": {"min_confidence": 0.9}},
        {"name": "large", "kind": "claude"},
    ],
}
Invoke = Callable[..., Result]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ledger") / "cascade.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            job_id, other_id, _ = build_ledger(conn)
            conn.execute(text("UPDATE jobs SET pipeline = :p"), {"p": json.dumps(PIPELINE)})
            conn.execute(text("UPDATE jobs SET status = 'done' WHERE id = :id"), {"id": other_id})
            # item g waits for a person: small said spam, not sure enough
            conn.execute(
                text(
                    "UPDATE items SET status = 'review', label = 'spam', confidence = 0.55, "
                    "final_tier = 'small', reason = 'low confidence' "
                    "WHERE job_id = :id AND item_key = 'g'"
                ),
                {"id": job_id},
            )
    finally:
        engine.dispose()
    return path


def _env(monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    from common.settings import get_settings
    from tasks.runtime import reset_runtime

    for name in list(os.environ):
        if name.startswith(("CASCADE_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CASCADE_DATABASE_URL", f"sqlite:///{db}")
    get_settings.cache_clear()
    reset_runtime()


def _runner() -> Invoke:
    from cascade import (  # noqa: F401  (each registers its commands)
        cli,
        cli_backfill,
        cli_chaos,
        cli_jobs,
        cli_ops,
        cli_report,
        cli_review,
        cli_tune,
    )
    from cascade.cliutil import app

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})

    return invoke


@pytest.fixture
def cli(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """`cascade ...` on a fresh copy of the ledger."""
    from common.settings import get_settings
    from tasks.runtime import reset_runtime

    db = tmp_path / "cascade.db"
    shutil.copy(template, db)
    _env(monkeypatch, db)
    yield _runner()
    reset_runtime()
    get_settings.cache_clear()


@pytest.fixture
def empty_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    """`cascade ...` on a database with no jobs at all."""
    from common.settings import get_settings
    from tasks.runtime import reset_runtime

    _env(monkeypatch, tmp_path / "empty.db")
    yield _runner()
    reset_runtime()
    get_settings.cache_clear()


def said(result: Result) -> str:
    """The output with runs of spaces and line breaks made one space."""
    return " ".join(result.output.split())


def refused(result: Result, message: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert f"error: {message}" in said(result)

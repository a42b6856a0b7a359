"""Every test's worker spool (``CASCADE_SPOOL_DIR``) is its own directory: a segment
one test leaves behind is never replayed into another test's database."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_SPOOL_DIR", str(tmp_path / "spool"))

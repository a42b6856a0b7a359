"""`cascade backfill`'s options turned into a spec (the pieces taken out of the command)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import typer

from cascade.cli_backfill import _since, _spec

OPTIONS: dict[str, Any] = {
    "pipeline": Path("p.toml"),
    "source": "items.jsonl",
    "table": None,
    "query": None,
    "id_column": "id",
    "text_column": "text",
    "updated_column": "updated_at",
}


def test_since_is_aware_and_utc_when_it_names_no_zone() -> None:
    assert _since(None) is None
    assert _since("") is None
    assert _since("2026-12-01T10:00") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    plus_two = _since("2026-12-01T10:00+02:00")
    assert plus_two is not None and plus_two.utcoffset() == timedelta(hours=2)
    assert plus_two.tzinfo == timezone(timedelta(hours=2))


def test_since_not_a_time_fails_with_usage_code() -> None:
    with pytest.raises(typer.Exit) as caught:
        _since("yesterday")
    assert caught.value.exit_code == 2


def test_spec_from_the_options() -> None:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    spec = _spec(None, when, "batch", **OPTIONS)
    assert (spec.pipeline, spec.source, spec.mode, spec.since) == (
        Path("p.toml"),
        "items.jsonl",
        "batch",
        when,
    )


@pytest.mark.parametrize("missing", ["pipeline", "source"])
def test_spec_needs_a_pipeline_and_a_source(missing: str) -> None:
    with pytest.raises(typer.Exit) as caught:
        _spec(None, None, None, **(OPTIONS | {missing: None}))
    assert caught.value.exit_code == 2


def test_spec_of_an_unknown_name_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CASCADE_BACKFILLS_FILE", str(tmp_path / "none.toml"))
    with pytest.raises(typer.Exit) as caught:
        _spec("nightly", None, None, **OPTIONS)
    assert caught.value.exit_code == 2

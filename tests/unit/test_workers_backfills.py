"""Configured backfills (workers/backfills.py): reading the TOML file, its errors, the
pipeline path taken relative to the file, names, schedules, and forcing a mode."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from workers.backfills import (
    BACKFILLS_ENV,
    BackfillSpec,
    ScheduledBackfill,
    find_backfill,
    load_backfills,
    with_mode,
)
from workers.pipeline import ClaudeTier, RulesTier, load_pipeline

TRIAGE = Path(__file__).resolve().parents[2] / "examples" / "support_triage.toml"

TWO = """
[[backfill]]
name = "nightly-posts"
pipeline = "pipes/moderation.toml"
source = "/data/posts/*.jsonl"
at = "03:30"
mode = "batch"

[[backfill]]
name = "tickets"
pipeline = "/abs/triage.toml"
source = "postgresql://db/app"
table = "tickets"
since = 2026-01-02T00:00:00Z
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backfills.toml"
    path.write_text(text)
    return path


def test_nothing_configured_is_no_backfills(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKFILLS_ENV, raising=False)

    assert load_backfills() == []


def test_an_empty_variable_is_nothing_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKFILLS_ENV, "")

    assert load_backfills() == []


def test_an_empty_file_has_no_backfills(tmp_path: Path) -> None:
    assert load_backfills(write(tmp_path, "")) == []


def test_a_file_is_read_with_defaults_and_relative_pipelines_beside_it(tmp_path: Path) -> None:
    nightly, tickets = load_backfills(write(tmp_path, TWO))

    assert nightly.name == "nightly-posts"
    assert nightly.pipeline == tmp_path / "pipes" / "moderation.toml"  # relative to the file
    assert (nightly.at, nightly.mode, nightly.table) == ("03:30", "batch", None)
    assert tickets.pipeline == Path("/abs/triage.toml")  # an absolute path stays
    assert tickets.at == "02:00"  # the default time, UTC
    assert tickets.mode is None  # each tier keeps its own mode
    assert (tickets.id_column, tickets.text_column, tickets.updated_column) == (
        "id",
        "text",
        "updated_at",
    )
    assert tickets.since == datetime(2026, 1, 2, tzinfo=UTC)


def test_the_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKFILLS_ENV, str(write(tmp_path, TWO)))

    assert [b.name for b in load_backfills()] == ["nightly-posts", "tickets"]
    assert find_backfill("tickets").table == "tickets"


def test_an_unknown_name_is_a_lookup_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BACKFILLS_ENV, str(write(tmp_path, TWO)))

    with pytest.raises(LookupError) as info:
        find_backfill("weekly")

    assert str(info.value) == f"no configured backfill named 'weekly' (see {BACKFILLS_ENV})"


BASE = 'pipeline = "p.toml"\nsource = "a.jsonl"\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        # not TOML at all
        ("[[backfill]\nname = ", "backfills file"),
        # a misspelt key is an error, not ignored
        (f'[[backfill]]\nname = "a"\n{BASE}tabel = "t"\n', "tabel"),
        # an unknown top-level key
        (f'[[backfills]]\nname = "a"\n{BASE}', "backfills"),
        # a scheduled backfill needs a name
        (f"[[backfill]]\n{BASE}", "name"),
        # names are lowercase identifiers (they name beat entries)
        (f'[[backfill]]\nname = "Nightly Posts"\n{BASE}', "name"),
        # the time is HH:MM on a 24-hour clock
        (f'[[backfill]]\nname = "a"\nat = "24:00"\n{BASE}', "at"),
        (f'[[backfill]]\nname = "a"\nat = "2:00"\n{BASE}', "at"),
        # only batch or realtime
        (f'[[backfill]]\nname = "a"\nmode = "eager"\n{BASE}', "mode"),
        # a source is required
        ('[[backfill]]\nname = "a"\npipeline = "p.toml"\n', "source"),
        # two backfills with one name could not both be scheduled
        (f'[[backfill]]\nname = "a"\n{BASE}[[backfill]]\nname = "a"\n{BASE}', "must be unique"),
    ],
)
def test_a_bad_file_is_a_value_error_naming_the_file(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ValueError) as info:
        load_backfills(path)

    message = str(info.value)
    assert message.startswith(f"backfills file {path}: ")
    assert fragment in message


def test_a_missing_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^backfills file .*nope\.toml: "):
        load_backfills(tmp_path / "nope.toml")


def test_a_one_off_spec_needs_no_name_but_a_scheduled_one_does() -> None:
    one_off = BackfillSpec(pipeline=Path("p.toml"), source="s")

    assert one_off.name is None
    with pytest.raises(ValidationError, match="name"):
        ScheduledBackfill(pipeline=Path("p.toml"), source="s")  # type: ignore[call-arg]


def test_with_mode_sets_every_model_tier_and_leaves_the_rest() -> None:
    pipeline = load_pipeline(TRIAGE)

    batch = with_mode(pipeline, "batch")

    assert isinstance(batch.tiers[0], RulesTier)
    assert batch.tiers[0] == pipeline.tiers[0]
    model_tiers = [t for t in batch.tiers if isinstance(t, ClaudeTier)]
    assert [t.mode for t in model_tiers] == ["batch", "batch"]
    assert [t.model for t in model_tiers] == ["claude-haiku-5-5", "claude-sonnet-5-5"]
    # the original is untouched
    assert {t.mode for t in pipeline.tiers if isinstance(t, ClaudeTier)} == {"realtime"}
    assert with_mode(batch, "realtime").tiers[1].mode == "realtime"  # type: ignore[union-attr]


def test_with_no_mode_the_pipeline_is_returned_as_it_is() -> None:
    pipeline = load_pipeline(TRIAGE)

    assert with_mode(pipeline, None) is pipeline

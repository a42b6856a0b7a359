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


def _batch_report(**values: Any) -> Any:
    from tasks.backfill import BatchReport

    base: dict[str, Any] = {
        "batches": 0,
        "by_status": {},
        "requests": {},
        "batch_calls": 0,
        "cost_nanos": 0,
        "realtime_nanos": 0,
    }
    return BatchReport(**(base | values))


def _printed(report: Any, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The lines printed (each line of the report begins with a known word; the console
    wraps long ones at 80 columns)."""
    from cascade.cli_backfill import print_batch_report

    print_batch_report(report)
    text = " ".join(capsys.readouterr().out.split())
    for start in ("batch calls ", "with prompt caching"):
        text = text.replace(f" {start}", f"\n{start}")
    return text.splitlines()


def test_batch_report_of_a_job_without_batches(capsys: pytest.CaptureFixture[str]) -> None:
    assert _printed(_batch_report(), capsys) == ["batches 0 (none); requests: -"]


def test_batch_report_compares_batch_and_realtime_price(capsys: pytest.CaptureFixture[str]) -> None:
    report = _batch_report(
        batches=2,
        by_status={"ended": 1, "in_progress": 1},
        requests={"succeeded": 9, "errored": 1, "expired": 0},
        batch_calls=10,
        cost_nanos=500_000,
        realtime_nanos=1_000_000,
        uncached_nanos=1_000_000,  # no cache reads: no line about caching
    )
    assert _printed(report, capsys) == [
        # statuses sorted, requests without the zero counts
        "batches 2 (ended 1, in_progress 1); requests: errored 1, succeeded 9",
        "batch calls 10: cost $0.000500 at batch price vs $0.001000 at realtime price "
        "(saved $0.000500, 50.0%)",
    ]


def test_batch_report_says_what_batch_and_cache_saved_together(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = _batch_report(
        batches=1, by_status={"ended": 1}, requests={"succeeded": 4}, batch_calls=4,
        cost_nanos=250_000, realtime_nanos=500_000, uncached_nanos=1_000_000,
    )  # fmt: skip
    lines = _printed(report, capsys)
    assert lines[-1] == (
        "with prompt caching: $0.001000 at realtime price without it "
        "(batch and cache together saved $0.000750, 75.0%)"
    )


def test_batch_report_of_free_calls_has_no_division_by_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = _batch_report(batches=1, by_status={"ended": 1}, batch_calls=3)
    assert _printed(report, capsys)[-1].endswith("(saved $0.000000, 0.0%)")

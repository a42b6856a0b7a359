"""The `cascade` commands in-process on the hand-built ledger (tests/integration/conftest.py):
what each option does, and every refusal with its message and exit code.

The ledger is built once per module into a SQLite file and copied for each test, so
each test starts from the same rows and the file stays fast. (The report queries run on
both dialects in test_analytics.py; here it is the commands around them.)
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

from migrations.runner import head, upgrade
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
            conn.execute(
                text("UPDATE jobs SET pipeline = :p WHERE id = :id"),
                {"p": json.dumps(PIPELINE), "id": job_id},
            )
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
        cli_backfill,
        cli_chaos,
        cli_jobs,
        cli_ops,
        cli_report,
        cli_review,
        cli_tune,
    )
    from cascade.cli import app

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


# --- status, jobs, outcomes -----------------------------------------------------------------


def test_status_counts_each_state_and_the_unfinished_per_tier(cli: Invoke) -> None:
    result = cli("status", MAIN)
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines[0] == "job 1 (main) · moderation · running"
    assert "finished 5 of 7" in lines
    assert {"pending 1", "done 4", "failed 1"} <= set(lines)
    assert "unfinished at rules 1" in lines


def test_jobs_lists_the_latest_first_up_to_the_limit(cli: Invoke) -> None:
    both = cli("jobs")
    assert both.exit_code == 0
    names = [line.split()[1] for line in both.output.splitlines() if line.strip()[:1].isdigit()]
    assert names == [OTHER, MAIN]
    one = cli("jobs", "--limit", "1")
    assert OTHER in one.output and " main " not in one.output


def test_outcomes_refuses_an_unknown_format(cli: Invoke) -> None:
    refused(cli("outcomes", "--job", MAIN, "--format", "xml"), "--format must be jsonl or csv")


def test_outcomes_as_csv_has_a_row_per_item(cli: Invoke) -> None:
    result = cli("outcomes", "--job", MAIN, "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["id"] for r in rows] == list("abcdefg")
    by_id = {r["id"]: r for r in rows}
    assert (by_id["e"]["status"], by_id["e"]["error"]) == ("failed", "malformed output")
    assert by_id["c"]["cost_usd"] == "0.042000010"


def test_outcomes_of_an_unknown_job(cli: Invoke) -> None:
    refused(cli("outcomes", "--job", "nope"), "no job with id or name 'nope' (see `cascade jobs`)")


# --- report -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "--format must be table, json or csv"),
        (["--since", "yesterday"], "--since must be a date, YYYY-MM-DD (got 'yesterday')"),
        (["--until", "2026-13-01"], "--until must be a date, YYYY-MM-DD (got '2026-13-01')"),
        (["--since", "2026-12-02", "--until", "2026-12-01"], "--since is after --until"),
        (["--compare", MAIN, OTHER, "--format", "csv"], "--compare prints a table or json"),
        (["--compare", MAIN, OTHER, "--html", "x.html"], "--compare prints a table or json"),
        (["--job", "nope"], "no job with id or name 'nope'"),
    ],
)
def test_report_refuses(cli: Invoke, args: list[str], message: str) -> None:
    refused(cli("report", *args), message)


def test_report_with_no_jobs_says_how_to_make_one(empty_cli: Invoke) -> None:
    refused(
        empty_cli("report"),
        "there are no jobs yet: run `cascade submit FILE --pipeline P.toml`",
    )


def test_report_without_a_job_is_the_latest_job(cli: Invoke) -> None:
    report = json.loads(cli("report", "--format", "json").output)
    assert (report["job_id"], report["job_name"]) == (2, OTHER)


def test_report_of_a_job_as_json(cli: Invoke) -> None:
    result = cli("report", "--job", MAIN, "--format", "json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert (r["items_total"], r["items_done"], r["items_failed"], r["items_review"]) == (7, 4, 1, 1)
    assert (r["items_unfinished"], r["partial"], r["lines_rejected"]) == (1, True, 2)
    assert r["reviews"] == {"waiting": 1, "reviewed": 0, "tiers": []}
    assert r["offline"] is False
    assert [t["tier"] for t in r["funnel"]] == ["rules", "small", "large"]
    assert r["reliability"]["dead_letters"] == [{"error": "malformed output", "items": 1}]


def test_report_of_a_label_across_jobs_has_no_job_keys(cli: Invoke) -> None:
    r = json.loads(cli("report", "--label", "spam", "--format", "json").output)
    assert r["job_id"] is None and r["job_name"] is None
    assert r["scope_text"] == "label spam"
    assert r["scope"]["label"] == "spam" and r["scope"]["job_ids"] == []
    assert r["items_total"] == 3  # a and c done as spam, g in review as spam
    assert "reviews" not in r  # a review queue belongs to one job


def test_report_of_a_pipeline_and_days_as_csv(cli: Invoke) -> None:
    result = cli("report", "--pipeline", "moderation", "--since", "2000-01-01", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["section", "subject", "metric", "value"]
    summary = {r[2]: r[3] for r in rows if r[0] == "summary"}
    assert summary["job_id"] == ""  # a scope, not a job
    assert summary["items_total"] == "8"  # both jobs run the moderation pipeline


def test_report_of_days_with_no_items_is_empty_not_an_error(cli: Invoke) -> None:
    r = json.loads(
        cli("report", "--since", "1999-01-01", "--until", "1999-01-31", "--format", "json").output
    )
    assert r["items_total"] == 0 and r["funnel"] == []
    assert r["scope_text"] == "1999-01-01 to 1999-01-31"


def test_report_as_tables_shows_every_section_and_the_review_line(cli: Invoke) -> None:
    result = cli("report", "--job", MAIN)
    assert result.exit_code == 0, result.output
    out = said(result)
    for part in ("Job 1 · main · moderation · running", "Funnel", "Cost by label",
                 "Latency (model calls, ms)", "Dead letters (1)",
                 "human review: 1 waiting, 0 reviewed",
                 "partial: over the 6 finished items of 7"):  # fmt: skip
        assert part in out


def test_report_as_an_html_page(cli: Invoke, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = cli("report", "--job", MAIN, "--html", str(page))
    assert result.exit_code == 0, result.output
    assert said(result) == f"wrote {page}"
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<title>Job 1 · main · moderation" in html


def test_report_compare_as_json_and_as_a_table(cli: Invoke) -> None:
    both = json.loads(cli("report", "--compare", MAIN, OTHER, "--format", "json").output)
    assert (both["a"]["job_name"], both["b"]["job_name"]) == (MAIN, OTHER)
    assert both["diff"]["items_total"] == "-6"
    table = cli("report", "--compare", MAIN, OTHER)
    assert table.exit_code == 0
    assert "A: job 1 main" in table.output and "B: job 2 other" in table.output


def test_report_compare_with_an_unknown_job(cli: Invoke) -> None:
    refused(cli("report", "--compare", MAIN, "nope"), "no job with id or name 'nope'")


# --- rejected, cancel ---------------------------------------------------------------------


def test_rejected_as_jsonl(cli: Invoke) -> None:
    result = cli("rejected", "--job", MAIN, "--format", "jsonl")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows == [
        {"source": "main.jsonl", "line": 3, "reason": "invalid JSON", "raw": "raw line 3"},
        {"source": "main.jsonl", "line": 7, "reason": "missing field: text", "raw": "raw line 7"},
    ]


def test_rejected_at_the_limit_says_there_may_be_more(cli: Invoke) -> None:
    result = cli("rejected", "--job", MAIN, "--limit", "1")
    assert "Rejected lines of job 1" in result.output
    assert "invalid JSON" in result.output and "missing field" not in result.output
    assert "the first 1; --limit for more" in said(result)
    whole = cli("rejected", "--job", MAIN)
    assert "missing field: text" in whole.output and "--limit for more" not in whole.output


def test_rejected_refuses_an_unknown_format(cli: Invoke) -> None:
    refused(cli("rejected", "--job", MAIN, "--format", "csv"), "--format must be table or jsonl")


def test_cancel_stops_the_unfinished_items_and_a_done_job_refuses(cli: Invoke) -> None:
    result = cli("cancel", MAIN)
    assert result.exit_code == 0, result.output
    assert said(result).startswith("job 1 cancelled: ")
    assert "unfinished item" in said(result)
    refused(cli("cancel", OTHER), "job 2 is done: nothing to cancel", code=1)


# --- chaos, rollup, purge, sweep, worker, migrate --------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provider", "openai"], "--provider must be one of anthropic, bedrock, vertex"),
        (["--for", "0"], "--for: '0' is not a duration like 90s, 10m or 2h"),
        (["--for", "soon"], "--for: 'soon' is not a duration like 90s, 10m or 2h"),
    ],
)
def test_chaos_disable_refuses(cli: Invoke, args: list[str], message: str) -> None:
    refused(cli("chaos", "disable", "claude-x", *args), message)


def test_chaos_drill_listed_then_cleared_by_model(cli: Invoke) -> None:
    started = cli("chaos", "disable", "claude-x", "--for", "2h", "--reason", "game day")
    assert started.exit_code == 0, started.output
    assert said(started).startswith("drill on anthropic:claude-x until ")
    assert said(started).endswith("UTC: game day")
    listed = cli("chaos", "list")
    assert "game day" in listed.output and "anthropic:claude-x" in listed.output
    assert said(cli("chaos", "clear", "claude-y")) == "cleared 0 drill(s)"  # another model
    assert said(cli("chaos", "clear", "claude-x", "--provider", "bedrock")) == "cleared 0 drill(s)"
    assert said(cli("chaos", "clear", "claude-x")) == "cleared 1 drill(s)"
    assert said(cli("chaos", "clear")) == "cleared 0 drill(s)"


def test_rollup_refuses_a_negative_grace_and_reports_its_watermark(cli: Invoke) -> None:
    refused(cli("rollup", "--grace", "-1"), "--grace must be 0 or more seconds")
    result = cli("rollup", "--grace", "0")
    assert result.exit_code == 0, result.output
    assert said(result).startswith("rollup: watermark 0 -> ")
    assert said(result).endswith("0 newer attempts are aggregated live")


def test_purge_refuses_a_zero_age(cli: Invoke) -> None:
    refused(cli("purge", "--older-than", "0d"), "--for: '0d' is not a duration")


def test_sweep_and_worker_need_a_broker(cli: Invoke) -> None:
    refused(cli("sweep"), "the embedded runtime has no broker that outlives a command")
    refused(cli("worker"), "`cascade worker` needs a broker: set CASCADE_BROKER_URL")


def test_migrate_says_the_revision(empty_cli: Invoke) -> None:
    result = empty_cli("migrate")
    assert result.exit_code == 0, result.output
    assert said(result) == f"database at revision {head()}"


# --- review -------------------------------------------------------------------------------


def test_review_list_shows_what_the_machine_said(cli: Invoke) -> None:
    result = cli("review", "list", "--job", MAIN)
    assert result.exit_code == 0, result.output
    assert "job 1: waiting for review (first 50)" in result.output
    row = [line for line in result.output.splitlines() if " g " in line]
    assert row and all(word in row[0] for word in ("spam", "0.55", "small", "low confidence"))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_review_export_then_import_makes_the_verdict_final(
    cli: Invoke, tmp_path: Path, suffix: str
) -> None:
    exported = tmp_path / f"queue{suffix}"
    result = cli("review", "export", "--job", MAIN, "--out", str(exported))
    assert said(result) == f"job 1: 1 items waiting for review written to {exported}"
    if suffix == ".csv":
        with exported.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        rows = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1
    assert (rows[0]["item_id"], rows[0]["machine_label"], rows[0]["label"]) == ("g", "spam", "")
    rows[0].update(label="ham", note="a newsletter")
    with exported.open("w", encoding="utf-8", newline="") as fh:
        if suffix == ".csv":
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        else:
            fh.write(json.dumps(rows[0]) + "\n")
    imported = cli("review", "import", str(exported), "--job", MAIN, "--reviewer", "ann")
    assert imported.exit_code == 0, imported.output
    assert said(imported) == (
        "job 1: 1 verdicts imported, 0 replaced, 0 rows without a label skipped"
    )
    stats = said(cli("review", "stats", "--job", MAIN))
    assert stats.startswith("job 1: 0 waiting for review, 1 reviewed")
    outcomes = [json.loads(x) for x in cli("outcomes", "--job", MAIN).output.splitlines()]
    g = next(o for o in outcomes if o["id"] == "g")
    assert (g["label"], g["status"]) == ("ham", "done")


def test_review_import_refuses_a_file_with_problems_and_imports_nothing(
    cli: Invoke, tmp_path: Path
) -> None:
    path = tmp_path / "reviewed.jsonl"
    path.write_text(
        json.dumps({"item_id": "g", "label": "eggs", "reviewer": "ann"}) + "\n"
        + json.dumps({"item_id": "g", "label": "ham"}) + "\n"
        + json.dumps({"label": "ham", "reviewer": "ann"}) + "\n"
        + json.dumps({"item_id": "g", "label": ""}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = cli("review", "import", str(path), "--job", MAIN)
    assert result.exit_code == 2
    out = said(result)
    assert "the file has problems, nothing imported:" in out
    assert f"{path}:1: label 'eggs' is not one of spam, ham" in out
    assert f"{path}:2: who reviewed it? (a reviewer field, or --reviewer)" in out
    assert f"{path}:3: no item_id" in out
    assert said(cli("review", "stats", "--job", MAIN)).startswith("job 1: 1 waiting for review")


def test_review_import_counts_unknown_ids_and_blank_rows(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "reviewed.jsonl"
    path.write_text(
        json.dumps({"item_id": "zzz", "label": "ham", "reviewer": "ann"}) + "\n"
        + json.dumps({"item_id": "g", "label": " "}) + "\n"
        + "\n"
        + json.dumps(["not", "a", "row"]) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    result = cli("review", "import", str(path), "--job", MAIN)
    assert result.exit_code == 0, result.output
    assert said(result) == (
        "job 1: 0 verdicts imported, 0 replaced, 2 rows without a label skipped, "
        "1 unknown item ids unknown: zzz"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", ":1: not JSON: "),
        (
            json.dumps({"item_id": "g", "label": "ham", "reviewer": "a", "reviewed_at": "noon"}),
            ":1: reviewed_at 'noon' is not an ISO date-time",
        ),
    ],
)
def test_review_import_refuses_unreadable_rows(
    cli: Invoke, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "reviewed.jsonl"
    path.write_text(content + "\n", encoding="utf-8")
    refused(cli("review", "import", str(path), "--job", MAIN), f"{path}{message}")


def test_review_import_of_a_missing_file(cli: Invoke, tmp_path: Path) -> None:
    missing = tmp_path / "none.jsonl"
    refused(cli("review", "import", str(missing), "--job", MAIN), f"{missing}: no such file")


# --- commands that read a pipeline --------------------------------------------------------


def test_submit_refuses_a_broken_pipeline_and_a_bad_budget(cli: Invoke, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "1", "text": "hello"}\n', encoding="utf-8")
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "p"\n', encoding="utf-8")
    result = cli("submit", str(items), "--pipeline", str(broken))
    assert result.exit_code == 2 and f"invalid pipeline {broken}" in said(result)
    good = Path(__file__).resolve().parents[2] / "examples" / "support_triage.toml"
    refused(
        cli("submit", str(items), "--pipeline", str(good), "--budget", "lots"),
        "'lots' is not an amount in USD like 25.00",
    )


def test_train_local_refuses_an_unknown_source(cli: Invoke, tmp_path: Path) -> None:
    refused(
        cli("train-local", "--pipeline", "p.toml", "--from-job", MAIN, "--source", "guess"),
        "--source must be gold or outcomes",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--target-agreement", "0.9", "--budget-per-item", "0.01"],
            "give one of --target-agreement, --target-accuracy, --budget-per-item",
        ),
        (
            ["--max-error", "0.05", "--target-agreement", "0.9"],
            "--max-error is a target of its own",
        ),
        (["--max-error", "1.5"], "--max-error and --confidence must be within (0, 1)"),
        (
            ["--max-error", "0.05", "--confidence", "1"],
            "--max-error and --confidence must be within (0, 1)",
        ),
        (["--write"], "--write needs --pipeline P.toml (the file to update)"),
        # no item of the ledger has a gold label
        (["--target-accuracy", "0.9"], "--target-accuracy needs gold labels"),
    ],
)
def test_tune_refuses(cli: Invoke, args: list[str], message: str) -> None:
    refused(cli("tune", "--job", MAIN, *args), message)


# --- backfill -----------------------------------------------------------------------------


def test_backfill_list_with_nothing_configured_or_run(cli: Invoke) -> None:
    result = cli("backfill", "--list")
    assert result.exit_code == 0, result.output
    assert said(result) == (
        "no scheduled backfills (CASCADE_BACKFILLS_FILE is not set or lists none) "
        "no backfill has run yet"
    )


def test_backfill_list_shows_each_configured_backfill(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "backfills.toml"
    config.write_text(
        '[[backfill]]\nname = "nightly"\npipeline = "moderation.toml"\nsource = "posts/*.jsonl"\n'
        'at = "03:30"\nmode = "batch"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("CASCADE_BACKFILLS_FILE", str(config))
    result = cli("backfill", "--list")
    assert result.exit_code == 0, result.output
    row = [" ".join(line.split()) for line in result.output.splitlines() if "nightly" in line]
    # the pipeline is read beside the backfills file; never run yet
    assert row == [
        f"│ nightly │ 03:30 │ {tmp_path / 'moderation.toml'} │ posts/*.jsonl │ batch │ never │ │ │"
    ]


def test_backfill_list_of_a_broken_file(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "backfills.toml"
    config.write_text('[[backfill]]\nname = "Bad Name"\n', encoding="utf-8")
    monkeypatch.setenv("CASCADE_BACKFILLS_FILE", str(config))
    refused(cli("backfill", "--list"), f"backfills file {config}:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "fast"], "--mode must be batch or realtime"),
        ([], "--pipeline and --source are required (or --name, or --list)"),
        (["--source", "x.jsonl"], "--pipeline and --source are required"),
        (["--name", "nightly"], "no configured backfill named 'nightly'"),
        (["--since", "last week", "--pipeline", "p.toml", "--source", "x"], "--since: not an ISO"),
        (["--pipeline", "missing.toml", "--source", "x.jsonl"], "invalid pipeline missing.toml"),
    ],
)
def test_backfill_refuses(cli: Invoke, args: list[str], message: str) -> None:
    refused(cli("backfill", *args), message)

"""The operating commands in-process on the hand-built ledger: chaos drills, rollup,
purge/sweep/worker refusals, migrate, the review queue, the argument checks of the
commands that read a pipeline, backfill, and the wait of submit/resume --wait."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import text

from migrations.runner import head
from tests.integration.cascade_cli.conftest import MAIN, Invoke, refused, said

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
    # Attempts of the last second are left to the live view even at --grace 0 (SQLite
    # keeps whole seconds): rolled up and live, every one of the ledger's 17 is counted.
    done = re.fullmatch(
        r"rollup: watermark 0 -> (\d+) \((\d+) batch(?:es)?\); (\d+) newer attempts are "
        r"aggregated live",
        said(result),
    )
    assert done is not None, said(result)
    mark, _, live = (int(g) for g in done.groups())
    assert mark + live == 17


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
    good = Path(__file__).resolve().parents[3] / "examples" / "support_triage.toml"
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


# --- waiting for a job (submit --wait, resume --wait) ---------------------------------------


def _set_job(job_id: int, **values: str) -> None:
    from tasks.runtime import get_runtime

    sets = ", ".join(f"{k} = :{k}" for k in values)
    with get_runtime().sessions.begin() as session:
        session.execute(text(f"UPDATE jobs SET {sets} WHERE id = :id"), values | {"id": job_id})


def test_wait_for_a_finished_job_returns_its_status_at_once(cli: Invoke) -> None:
    from cascade.progress import wait_for_job

    assert wait_for_job(2) == "done"


def test_wait_for_a_paused_job_with_nothing_in_flight_says_why(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade.progress import wait_for_job

    monkeypatch.setattr("cascade.progress.time.sleep", lambda s: None)
    # job 1's pending item is in flight (a paused job still finishes those): finish it,
    # and nothing is left moving (g waits for a person: final for the machine)
    _set_job(1, status="paused", message="spend limit reached")
    from tasks.runtime import get_runtime

    with get_runtime().sessions.begin() as session:
        session.execute(text("UPDATE items SET status = 'done' WHERE status = 'pending'"))
    assert wait_for_job(1) == "paused"
    assert "job 1 paused: spend limit reached" in " ".join(capsys.readouterr().err.split())


def test_wait_calls_on_stall_when_nothing_finishes(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cascade.progress import wait_for_job

    monkeypatch.setenv("CASCADE_STALL_S", "0.000001")
    from common.settings import get_settings

    get_settings.cache_clear()
    from tasks.runtime import reset_runtime

    reset_runtime()
    monkeypatch.setattr("cascade.progress.time.sleep", lambda s: None)
    stalls: list[int] = []

    def on_stall() -> None:  # what submit does: look at the fleet; here, finish the job
        stalls.append(1)
        _set_job(1, status="done")

    assert wait_for_job(1, on_stall=on_stall) == "done"
    assert stalls == [1]


def test_wait_stops_on_a_swallowed_ctrl_c(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    from cascade.progress import STOP, wait_for_job

    monkeypatch.setattr("cascade.progress.time.sleep", lambda s: None)
    STOP.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            wait_for_job(1)  # running, nothing changes: only the flag ends it
    finally:
        STOP.clear()


def test_purge_blanks_old_texts_and_keeps_the_ledger(cli: Invoke) -> None:
    from tasks.runtime import get_runtime

    with get_runtime().sessions.begin() as session:
        session.execute(
            text(
                "UPDATE items SET finished_at = '2000-01-01 00:00:00' "
                "WHERE job_id = 1 AND item_key IN ('a', 'b')"
            )
        )
        session.execute(text("UPDATE rejected_lines SET created_at = '2000-01-01 00:00:00'"))
    before = json.loads(cli("report", "--job", MAIN, "--format", "json").output)
    result = cli("purge", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert said(result).startswith(
        "purged the text of 2 items and 3 rejected lines finished before "
    )
    outcomes = {
        o["id"]: o for o in map(json.loads, cli("outcomes", "--job", MAIN).output.splitlines())
    }
    assert outcomes["a"]["metadata"] == {}  # finished in 2000: purged
    assert outcomes["c"]["metadata"] == {"source_line": 3, "key": "c"}  # not old enough
    assert outcomes["a"]["label"] == "spam"  # the decision stays
    rejected = cli("rejected", "--job", MAIN, "--format", "jsonl").output.splitlines()
    assert [json.loads(r)["raw"] for r in rejected] == ["", ""]
    after = json.loads(cli("report", "--job", MAIN, "--format", "json").output)
    assert after["cost_usd"] == before["cost_usd"] and after["funnel"] == before["funnel"]
    again = cli("purge", "--older-than", "30d")
    assert said(again).startswith("purged the text of 0 items and 0 rejected lines")

"""The reading commands in-process on the hand-built ledger: status, jobs, outcomes,
report (every option and refusal), rejected, cancel."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.integration.cascade_cli.conftest import MAIN, OTHER, Invoke, refused, said

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
    assert r["scope_text"] == "job main"  # not "all jobs"


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
    # f was pending; g waits for a person, which is final for the machine: not cancelled
    assert said(result) == "job 1 cancelled: 1 unfinished item stopped"
    status = said(cli("status", MAIN))
    assert status.startswith("job 1 (main) · moderation · failed cancelled")
    assert "finished 6 of 7" in status
    refused(cli("cancel", OTHER), "job 2 is done: nothing to cancel", code=1)

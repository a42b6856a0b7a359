"""`cascade report`'s terminal output: every analytics section, the notes under the tier
table, the comparison of two jobs, the outcomes export."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from rich.console import Console

from cascade.render import print_report, savings_line, write_outcomes
from cascade.render_text import print_compare, print_sections
from models.reports import OutcomeRow
from tests.unit.cascade_samples import full_report, job, totals


def shown(draw: Any, *args: Any, width: int = 200) -> str:
    buf = io.StringIO()
    draw(Console(file=buf, width=width, color_system=None), *args)
    return buf.getvalue()


def lines_with(text: str, word: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if word in line]


@pytest.fixture
def sections() -> str:
    return shown(print_sections, full_report())


def test_funnel_table_shows_each_tier_with_its_escalation_percentage(sections: str) -> None:
    assert "Funnel" in sections
    # tier, in, accept, escal, fail, dead, escal %
    assert lines_with(sections, "small")[0] == "small 6 3 2 1 1 33.3"
    assert lines_with(sections, "rules")[0] == "rules 10 4 6 0 0 60.0"


def test_a_funnel_warning_is_printed_under_the_table_naming_its_tier() -> None:
    report = full_report()
    report["funnel"][1]["warning"] = "escalates almost nothing"
    text = shown(print_sections, report)
    assert "warning: tier small: escalates almost nothing" in text
    assert "warning" not in shown(print_sections, full_report())


def test_cost_line_says_mean_p95_realtime_batch_and_cache_savings(sections: str) -> None:
    assert (
        "cost per item: mean $0.0005, p95 $0.0020; realtime $0.0030, batch $0.0020; "
        "cache saved $0.0001" in sections
    )


def test_no_p95_cost_is_a_dash_and_no_calibration_spend_no_line() -> None:
    report = full_report()
    report["cost"]["per_item_p95_usd"] = None
    report["cost"]["calibration_usd"] = "0.000000000"
    text = shown(print_sections, report)
    assert "cost per item: mean $0.0005, p95 -;" in text
    assert "calibration spend" not in text


def test_calibration_spend_is_said_apart_from_the_items_cost(sections: str) -> None:
    assert "calibration spend (shadow samples): $0.0003" in sections


def test_cost_by_label_shows_an_item_without_a_label_as_a_dash(sections: str) -> None:
    assert lines_with(sections, "spam")[0] == "spam 6 $0.0040 $0.0120 $0.0080"
    assert "- 1 $0.0000 $0.0020 $0.0020" in lines_with(sections, "$0.0020")


def test_latency_has_one_row_per_model_tier_and_one_end_to_end(sections: str) -> None:
    assert "Latency (model calls, ms)" in sections
    assert lines_with(sections, "end to end") == ["end to end 9 100 1,300 1,300 1,300"]
    assert "large 2 1,000 1,500 1,500 1,500" in lines_with(sections, "large")
    assert not any(line.startswith("rules 0") for line in lines_with(sections, "rules"))
    assert (
        "worst-case full escalation: 2,400 ms (sum of tier p99s), 2,400 ms (sum of tier maxima)"
        in sections
    )


def test_reliability_lists_outcomes_links_openings_drills_and_dead_letters(sections: str) -> None:
    assert "calls 9: ok 8, transient 1" in sections
    for title in (
        "Fallbacks by chain link",
        "Breaker openings",
        "Chaos drills",
        "Dead letters (1)",
    ):
        assert title in sections
    assert "large bedrock:claude-sonnet-5-5 1 1" in lines_with(sections, "bedrock")
    still_open = lines_with(sections, "overloaded")[0]
    assert still_open.endswith("- - overloaded")  # not closed yet: no end, no seconds
    assert "malformed output 1" in lines_with(sections, "malformed output")


def test_empty_reliability_sections_print_no_table() -> None:
    report = full_report()
    rel = report["reliability"]
    rel.update(fallbacks=[], breaker_openings=[], drills=[], dead_letters=[])
    text = shown(print_sections, report)
    for title in ("Fallbacks by chain link", "Breaker openings", "Chaos drills", "Dead letters"):
        assert title not in text
    assert "calls 9: ok 8, transient 1" in text


def test_confidence_grid_puts_answers_in_their_bucket_column(sections: str) -> None:
    assert "Confidence (answers per 0.1 bucket)" in sections
    # columns .0 ... .9: spam's three answers in the last, ham's two in .5
    assert lines_with(sections, "spam")[-1] == "small spam · · · · · · · · · 3"
    assert lines_with(sections, "ham")[-1] == "small ham · · · · · 2 · · · ·"
    assert "small: agreed with the final label on 1 of 2 escalated items (50.0%)" in sections


def test_no_answers_no_confidence_table() -> None:
    report = full_report()
    report["confidence"] = {"histogram": [], "agreement": []}
    text = shown(print_sections, report)
    assert "Confidence" not in text and "agreed with the final label" not in text


def test_per_day_table_and_its_notes(sections: str) -> None:
    assert "Per day" in sections
    assert "2026-12-01 triage small 4 1 0 4 $0.0010 200" in lines_with(sections, "2026-12-01")
    assert "2026-12-02 triage small 2 1 1 3 $0.0010 -" in lines_with(sections, "2026-12-02")
    assert "per day, not in calls: 2 model steps sent no request" in sections
    assert "per day, not in calls: 3 items reused an identical text's decision" in sections


def test_no_days_no_per_day_table() -> None:
    report = full_report()
    report["daily"] = []
    assert "Per day" not in shown(print_sections, report)


@pytest.mark.parametrize(
    ("changes", "said", "not_said"),
    [
        # offline: said loudly that no real model answered
        ({"offline": True}, "offline: these calls went to the built-in fake", None),
        ({"steps_not_sent": 1234}, "1,234 model steps sent no request", None),
        # a budget: the cap, the spend, the capped and the paused items
        (
            {"budget_usd": "25", "spent_usd": "3.5", "items_budget_capped": 2,
             "items_paused_budget": 1},
            "budget $25.0000, spent $3.5000: 2 items capped at a lower tier's answer, "
            "1 waiting for `cascade resume --budget`",
            None,
        ),
        # capped items without a budget left (a budget since removed): still said
        (
            {"items_budget_capped": 3},
            "budget $0.0000, spent $0.0050: 3 items capped",
            None,
        ),
        ({"message": "spend limit reached", "status": "paused"}, "paused: spend limit reached",
         None),
        ({}, "cost $0.0050 vs $0.0200 all on the last tier", "offline"),
    ],
)  # fmt: skip
def test_notes_under_the_tier_table(
    changes: dict[str, Any], said: str, not_said: str | None
) -> None:
    text = shown(print_report, full_report() | changes)
    assert said in " ".join(text.split())
    if not_said is not None:
        assert not_said not in text


def test_report_over_a_scope_is_titled_by_its_scope() -> None:
    report = full_report() | {"job_id": None, "scope_text": "pipeline triage, label spam"}
    assert "Report · pipeline triage, label spam" in shown(print_report, report)
    assert "Job 7 · tickets · triage · done" in shown(print_report, full_report())


def test_a_tier_without_latency_shows_dashes_in_the_tier_table() -> None:
    rules = lines_with(shown(print_report, full_report()), "rules")[0]
    assert rules.endswith("$0.0000 - -")


def test_savings_line_of_a_partial_job_says_what_was_spent_so_far() -> None:
    from cascade.render import job_report
    from tests.unit.cascade_samples import tier_rows

    sums = totals(by_status={"done": 4, "pending": 6}, items_done=4, items_failed=0,
                  cost_nanos=9_000_000, finished_cost_nanos=1_000_000,
                  finished_baseline_nanos=4_000_000)  # fmt: skip
    report = job_report(job(status="running"), sums, tier_rows())
    assert report["partial"] is True and report["items_unfinished"] == 6
    assert report["savings_pct"] == 75.0  # over the finished items only
    line = savings_line(report)
    assert line.startswith("[yellow]partial[/yellow]: over the 4 finished items of 10, cost")
    assert line.endswith("; spent so far $0.0090")


def test_job_report_of_a_job_with_a_budget_and_no_baseline() -> None:
    from cascade.render import job_report
    from tests.unit.cascade_samples import tier_rows

    final = {"done": 8, "budget_capped": 1, "review": 1}
    sums = totals(
        finished_baseline_nanos=0, finished_cost_nanos=0, items_done=8, items_failed=0,
        by_status=final,
    )  # fmt: skip
    report = job_report(job(budget_nanos=25_000_000_000), sums, tier_rows())
    assert report["budget_usd"] == "25.000000000"
    assert report["savings_pct"] == 0.0  # nothing to compare with: no division by zero
    assert (report["items_budget_capped"], report["items_review"]) == (1, 1)
    # capped and in review are final for the machine: nothing is unfinished
    assert (report["items_unfinished"], report["partial"]) == (0, False)


def compare_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    a = full_report()
    b = full_report(the_job=job(id=8, name="tickets-v2"))
    b["cost_usd"] = "0.004000000"
    b["funnel"] = [f for f in b["funnel"] if f["tier"] != "large"]
    return a, b


def test_compare_table_names_both_jobs_and_shows_the_differences() -> None:
    a, b = compare_pair()
    text = shown(print_compare, a, b)
    assert "A: job 7 tickets" in text and "B: job 8 tickets-v2" in text
    assert lines_with(text, "cost_usd")[0] == "cost_usd 0.005000000 0.004000000 -0.001000000"
    # a tier only A has: B's side and the difference are dashes, never a zero
    assert lines_with(text, "large.entered") == ["large.entered 2 - -"]
    assert lines_with(text, "items_total") == ["items_total 10 10 0"]


def test_outcomes_as_jsonl_and_csv() -> None:
    rows = [
        OutcomeRow(1, "a", "spam", "small", 0.91, 1_234_567, 100, "done", {"ch": "é"}, None),
        OutcomeRow(2, "b", None, None, None, 0, 0, "failed", {}, "malformed output"),
    ]
    jsonl = io.StringIO()
    assert write_outcomes(iter(rows), "jsonl", jsonl) == 2
    first, second = (json.loads(line) for line in jsonl.getvalue().splitlines())
    assert first == {
        "id": "a", "label": "spam", "tier": "small", "confidence": 0.91,
        "cost_usd": "0.001234567", "latency_ms": 100, "status": "done", "error": None,
        "metadata": {"ch": "é"},
    }  # fmt: skip
    assert second["error"] == "malformed output" and second["label"] is None
    assert "é" in jsonl.getvalue()  # not escaped to \u00e9
    table = io.StringIO()
    assert write_outcomes(iter(rows), "csv", table) == 2
    read = list(csv.DictReader(io.StringIO(table.getvalue())))
    assert [r["id"] for r in read] == ["a", "b"]
    assert json.loads(read[0]["metadata"]) == {"ch": "é"}  # metadata as a JSON cell
    assert read[1]["label"] == "" and Decimal(read[0]["cost_usd"]) == Decimal("0.001234567")


def test_no_outcomes_write_nothing_at_all() -> None:
    buf = io.StringIO()
    assert write_outcomes(iter([]), "csv", buf) == 0
    assert buf.getvalue() == ""  # not even a header

"""The report in long form (CSV), the comparison of two reports, the prompt-cache and
reuse sections, and the HTML page's headline, charts and tables."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from rich.console import Console

from cascade.render_cache import cache_saved_nanos, cache_sections_html, print_cache_sections
from cascade.render_csv import compare_report, compare_rows, report_rows, write_report_csv
from cascade.report_html import charts, render_html, tiles
from cascade.report_svg import bar_chart, html_table, num_html, usd_html
from models.cache_report import TierCache
from tests.unit.cascade_samples import (
    BATCH_CACHE_SAVED,
    CACHE,
    SMALL_CACHE_SAVED,
    full_report,
    job,
)
from workers.pricing import PriceTable

# --- CSV -------------------------------------------------------------------------------


@pytest.fixture
def rows() -> list[tuple[str, str, str, Any]]:
    return list(report_rows(full_report()))


@pytest.mark.parametrize(
    "row",
    [
        ("summary", "", "job_id", 7),
        ("summary", "", "savings_pct", 75.0),
        ("tiers", "small", "calls", 7),
        ("funnel", "small", "dead_lettered", 1),
        ("cost_by_tier", "large", "share_pct", 60.0),
        ("cost_by_label", "-", "items", 1),  # no label: the subject is a dash
        ("cost_by_model", "someone-elses-model", "cache_savings_usd", None),
        ("latency", "small", "p99_ms", 900),
        ("fallbacks", "bedrock:claude-sonnet-5-5", "ok", 1),
        ("dead_letters", "malformed output", "items", 1),
        ("agreement", "small", "rate", 0.5),
        ("cost", "", "calibration_usd", "0.000300000"),
        ("outcomes", "", "transient", 1),
        ("latency_end_to_end", "", "p95_ms", 1300),
        ("latency", "", "worst_path_p99_ms", 2400),
        ("confidence", "small/spam/0.9-1.0", "answers", 3),
        ("daily", "2026-12-02/triage/small", "reused", 3),
    ],
)
def test_long_form_has_a_row_for_every_figure(
    rows: list[tuple[str, str, str, Any]], row: tuple[str, str, str, Any]
) -> None:
    assert row in rows


def test_long_form_leaves_out_subjects_and_lists(rows: list[tuple[str, str, str, Any]]) -> None:
    # the subject column carries the tier: it is not repeated as a metric
    assert not [r for r in rows if r[0] == "tiers" and r[2] == "tier"]
    # by_tier, by_label and by_model are rows of their own, never one cell
    assert not [r for r in rows if r[0] == "cost" and r[2] in ("by_tier", "by_label", "by_model")]
    assert not [r for r in rows if r[0] == "daily" and r[2] in ("day", "pipeline", "tier")]


def test_a_report_without_sections_is_the_summary_and_the_tiers_alone() -> None:
    report = {k: v for k, v in full_report().items() if k in _HEADLINE}
    sections = {r[0] for r in report_rows(report)}
    assert sections == {"summary", "tiers"}


_HEADLINE = {
    "job_id", "status", "items_total", "items_done", "items_failed", "lines_rejected",
    "model_calls", "input_tokens", "output_tokens", "cost_usd", "baseline_cost_usd",
    "savings_usd", "savings_pct", "tiers",
}  # fmt: skip


def test_csv_file_has_a_header_and_empty_cells_for_none() -> None:
    buf = io.StringIO()
    write_report_csv(full_report(), buf)
    read = list(csv.reader(io.StringIO(buf.getvalue())))
    assert read[0] == ["section", "subject", "metric", "value"]
    assert read[1] == ["summary", "", "job_id", "7"]
    assert ["cost_by_model", "someone-elses-model", "cache_savings_usd", ""] in read
    assert all(len(r) == 4 for r in read)


def test_compare_rows_diff_each_number_and_leave_missing_sides_blank() -> None:
    a = full_report()
    b = full_report(the_job=job(id=8))
    b["items_total"], b["savings_pct"] = 12, 80.5
    b["funnel"] = b["funnel"][:2]  # B never reached the large tier
    b["latency"]["tiers"] = b["latency"]["tiers"][:1]
    got = {m: (va, vb, d) for m, va, vb, d in compare_rows(a, b)}
    assert got["items_total"] == (10, 12, "2")
    assert got["savings_pct"] == (75.0, 80.5, "5.5")
    assert got["small.p50_ms"] == (200, 200, "0")
    assert got["large.entered"] == (2, None, None)
    assert got["large.p99_ms"] == (1500, None, None)
    assert got["large.cost_usd"] == ("0.003000000", "0.003000000", "0.000000000")
    # headline metrics first, then per tier in the order the tiers come
    metrics = [m for m, *_ in compare_rows(a, b)]
    assert metrics.index("savings_pct") < metrics.index("rules.entered")
    assert metrics.index("small.p99_ms") < metrics.index("large.entered")


def test_compare_report_is_both_reports_and_their_diff() -> None:
    a, b = full_report(), full_report(the_job=job(id=8))
    b["model_calls"] = 4
    both = compare_report(a, b)
    assert both["a"] is a and both["b"] is b
    assert both["diff"]["model_calls"] == "-5"
    assert set(both["diff"]) == {m for m, *_ in compare_rows(a, b)}


# --- prompt cache and reuse ----------------------------------------------------------------


def test_cache_saved_is_plain_input_less_writes_and_reads_batch_at_half_price() -> None:
    prices = PriceTable.load()
    assert cache_saved_nanos(prices, CACHE[0]) == 875_000
    assert cache_saved_nanos(prices, CACHE[1]) == 400_000  # 1 h writes, batch discount
    assert cache_saved_nanos(prices, CACHE[2]) is None  # a model the table does not price
    assert cache_saved_nanos(None, CACHE[0]) is None  # no price table at all


def test_cache_section_of_the_report() -> None:
    report = full_report()
    tiers = report["cache"]["tiers"]
    assert [t["saved_usd"] for t in tiers] == [SMALL_CACHE_SAVED, BATCH_CACHE_SAVED, None]
    assert report["cache"]["saved_usd"] == "0.001275000"  # the unpriced one adds nothing
    assert [t["hit_rate"] for t in tiers] == [0.75, None, 0.5]  # no cached call: no rate
    assert report["reuse"] == {"items": 3, "waiting": 1, "saved_usd": "0.000001500"}


def test_cache_section_in_the_terminal() -> None:
    buf = io.StringIO()
    print_cache_sections(Console(file=buf, width=200, color_system=None), full_report())
    text = [" ".join(line.replace("│", " ").split()) for line in buf.getvalue().splitlines()]
    # money as everywhere else in the CLI (cascade.fmt): four places under $100
    assert "small claude-haiku-5-5 7 75.0% 10000 1000 $0.0009" in text
    assert "small (batch) claude-haiku-5-5 5 - 10000 1000 $0.0004" in text
    assert "large someone-elses-model 2 50.0% 0 0 -" in text
    assert (
        "reused decisions: 3 items took an identical text's decision with no model call "
        "(saved $0.0000); 1 still waiting" in " ".join(text)
    )


@pytest.mark.parametrize(
    ("cache", "reuse", "printed"),
    [
        ({"saved_usd": "0", "tiers": []}, {"items": 0, "waiting": 0, "saved_usd": "0"}, False),
        (None, None, False),  # an older report without the sections
        # waiting alone is worth a line
        ({"saved_usd": "0", "tiers": []}, {"items": 0, "waiting": 2, "saved_usd": "0"}, True),
    ],
)
def test_nothing_cached_or_reused_prints_nothing(
    cache: dict[str, Any] | None, reuse: dict[str, Any] | None, printed: bool
) -> None:
    report = {"cache": cache, "reuse": reuse}
    buf = io.StringIO()
    print_cache_sections(Console(file=buf, width=200, color_system=None), report)
    assert bool(buf.getvalue()) is printed
    assert bool(cache_sections_html(report)) is printed
    if printed:
        assert "; 2 still waiting" in buf.getvalue()


def test_cache_sections_in_html_escape_names_and_say_the_savings() -> None:
    report = full_report()
    report["cache"]["tiers"][0]["tier"] = "<small>"
    html = "".join(cache_sections_html(report))
    assert "&lt;small&gt;" in html and "<small>" not in html
    assert "caching saved <b>$0.0013</b>" in html
    assert "<h2>Reused decisions</h2><p>3 items repeated a text" in html
    assert "; 1 still waiting</p>" in html


def test_a_batch_tier_is_marked_in_both_renderings() -> None:
    cache = [TierCache(0, "t", "claude-haiku-5-5", True, 1, 1, 1, 0, 1, 0, 1, 0)]
    report: dict[str, Any] = {"cache": {"saved_usd": "0", "tiers": []}}
    from cascade.render_cache import add_cache_sections
    from models.cache_report import Reuse

    add_cache_sections(report, cache, Reuse(0, 0, 0), None)
    assert report["cache"]["tiers"][0]["saved_usd"] is None  # no prices: unknown, not $0
    assert "t (batch)" in "".join(cache_sections_html(report))


# --- HTML page -----------------------------------------------------------------------------


def test_tiles_are_savings_cost_per_thousand_items_and_first_escalation() -> None:
    html = tiles(full_report())
    values = re.findall(r"<b>(.*?)</b><span>(.*?)</span>", html)
    assert values == [
        ("75.0%", "saved against all on the last tier"),
        ("$0.5000", "cost per 1,000 items"),  # $0.005 over 10 finished items
        ("10", "items"),
        ("60.0%", "escalated past the first tier"),
    ]


def test_tiles_of_a_job_with_nothing_finished_and_no_funnel_are_dashes() -> None:
    report = full_report() | {"items_unfinished": 10, "funnel": []}
    values = re.findall(r"<b>(.*?)</b>", tiles(report))
    assert values[1] == "-" and values[3] == "-"


def test_page_of_a_partial_offline_job() -> None:
    report = full_report() | {"partial": True, "items_unfinished": 4, "offline": True}
    html = render_html(report)
    assert "<b>partial</b>: over the 6 finished items of 10: cost" in html
    assert '<p class="note">Offline: these numbers come from' in html
    assert "<title>Job 7 · tickets · triage · done</title>" in html
    finished = render_html(full_report())
    assert "partial" not in finished and "Offline" not in finished


def test_page_has_every_section_with_its_rows() -> None:
    html = render_html(full_report())
    for heading in (
        "<h2>Funnel</h2>", "<h2>Cost by label</h2>", "<h2>Latency (ms)</h2>",
        "<h2>Reliability</h2>", "<h3>Fallback links used</h3>",
        "<h3>Circuit breaker openings</h3>", "<h3>Dead letters</h3>", "<h2>Confidence</h2>",
        "<h2>Prompt cache</h2>", "<h2>Reused decisions</h2>",
    ):  # fmt: skip
        assert heading in html
    assert "<tr><td>small</td><td>6</td><td>3</td><td>2</td><td>1</td><td>1</td>" in html
    assert "<td>33.3%</td>" in html
    assert "worst-case full escalation: 2,400 ms (sum of tier p99s), 2,400 ms" in html
    assert "<tr><td>small</td><td>1</td><td>2</td><td>50.0%</td></tr>" in html  # agreement
    assert (
        "<td>anthropic:claude-sonnet-5-5</td><td>2026-12-01T09:00:00+00:00</td><td>-</td>" in html
    )
    assert "realtime $0.0030, batch $0.0020, cache saved $0.0001" in html


def test_a_funnel_warning_is_marked_and_escaped() -> None:
    report = full_report()
    report["funnel"][1]["warning"] = "escalates < 2 %"
    assert '<span class="warn">escalates &lt; 2 %</span>' in render_html(report)


def test_two_days_get_a_daily_chart_one_day_a_sentence() -> None:
    html = render_html(full_report())
    assert "Spend and escalation rate per day" in html
    assert "<title>12-02 escalation rate: 50.0%</title>" in html
    one = full_report()
    one["daily"] = one["daily"][:1]
    html = render_html(one)
    assert "<figcaption>Spend per day</figcaption><p>all on 2026-12-01</p>" in html


def test_charts_carry_the_report_numbers() -> None:
    ch = charts(full_report())
    assert set(ch) == {"chart-funnel", "chart-cost", "chart-latency", "chart-confidence",
                       "chart-daily"}  # fmt: skip
    assert "<title>small in: 6</title>" in ch["chart-funnel"]
    assert "<title>baseline all on the last tier: $0.0200</title>" in ch["chart-cost"]
    assert "<title>total cost: $0.0050</title>" in ch["chart-cost"]
    assert "<title>large p99: 1,500</title>" in ch["chart-latency"]
    # answers summed over labels and tiers per bucket, buckets in order
    assert "<title>0.5-0.6 answers: 2</title>" in ch["chart-confidence"]
    assert ch["chart-confidence"].index("0.5-0.6") < ch["chart-confidence"].index("0.9-1.0")


def _axis_top(svg: str) -> str:
    labels: list[str] = re.findall(r'text-anchor="end">([^<]*)</text>', svg)
    return labels[-1]


@pytest.mark.parametrize(
    ("values", "unit", "top"),
    [
        ([7.0], "", "10"),  # up to the next power of ten
        ([1.5], "", "2"),
        ([2.2], "", "2.5"),
        ([230.0], "", "250"),
        ([4_100.0], "", "5,000"),
        ([0.3], "$", "$0.5"),
        ([0.0], "", "1"),  # nothing at all still has an axis
        ([], "", "1"),
    ],
)
def test_the_axis_ends_at_a_round_number_above_the_largest_bar(
    values: list[float], unit: str, top: str
) -> None:
    svg = bar_chart("c", ["g"] if values else [], [("cost", values)], unit=unit)
    assert _axis_top(svg) == top


def test_many_groups_label_only_every_nth_on_the_axis() -> None:
    groups = [f"d{n}" for n in range(24)]
    svg = bar_chart("c", groups, [("cost", [1.0] * 24)])
    shown = re.findall(r'text-anchor="middle">([^<]*)</text>', svg)
    assert len(shown) == 24  # a slot for each
    assert [s for s in shown if s] == [f"d{n}" for n in range(0, 24, 2)]
    assert svg.count('class="bar"') == 24  # every bar is still drawn


def test_a_rate_line_above_one_is_drawn_at_the_top_and_its_tip_says_the_truth() -> None:
    svg = bar_chart("c", ["a"], [("cost", [1.0])], line=("rate", [1.5]))
    assert "<title>a rate: 150.0%</title>" in svg
    assert 'cy="30.0"' in svg  # the top margin: clamped, not drawn off the chart
    assert svg.count("%</text>") == 3  # 0 %, 50 %, 100 % on the right axis


def test_html_helpers() -> None:
    assert html_table(["a"], [], "Empty") == '<h3>Empty</h3><p class="none">none</p>'
    assert html_table(["a<b"], [["<i>x</i>"]]).startswith("<table><thead><tr><th>a&lt;b</th>")
    assert "<td><i>x</i></td>" in html_table(["a"], [["<i>x</i>"]])  # cells come escaped
    assert (usd_html(None), usd_html("1234.5")) == ("-", "$1,234.50")
    assert (num_html(20_000), num_html(None), num_html("<1>")) == ("20,000", "-", "&lt;1&gt;")

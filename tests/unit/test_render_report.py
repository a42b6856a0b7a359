"""Pure pieces of the report: percentiles, warnings, buckets, cache savings, charts."""

from __future__ import annotations

import math
import random

import pytest

from cascade.render_sections import cache_savings_nanos, escalation_warning
from cascade.report_html import bar_chart, render_html
from models.analytics import FunnelTier, bucket_of, nearest_rank
from workers.pricing import PriceTable


@pytest.mark.parametrize("n", [1, 2, 3, 19, 20, 21, 101])
def test_nearest_rank_matches_the_definition(n: int) -> None:
    values = [random.Random(n).randrange(1, 50) for _ in range(n)]
    hist: dict[int, int] = {}
    for v in values:
        hist[v] = hist.get(v, 0) + 1
    for p in (50, 95, 99):
        assert nearest_rank(hist, p) == sorted(values)[math.ceil(p * n / 100) - 1]
    assert nearest_rank({}, 95) is None


def _tier(entered: int, escalated: int, calls: int = 1) -> FunnelTier:
    return FunnelTier(0, "t", entered, entered - escalated, escalated, 0, 0, calls, 0, 0, 0, 0, {})


@pytest.mark.parametrize(
    ("entered", "escalated", "last", "warns"),
    [
        (100, 51, False, "aggressively"),  # more than half
        (100, 50, False, None),  # exactly half: fine
        (100, 2, False, None),  # 2 %: fine
        (100, 1, False, "too loose"),  # under 2 %
        (100, 0, True, None),  # the last tier cannot escalate
        (0, 0, False, None),  # nothing entered: nothing to say
    ],
)
def test_escalation_warning(entered: int, escalated: int, last: bool, warns: str | None) -> None:
    warning = escalation_warning(_tier(entered, escalated), last)
    assert (warning is None) if warns is None else (warns in (warning or ""))


def test_a_free_tier_escalating_most_items_is_not_warned_about() -> None:
    # rules take only what they are sure of: escalating the rest is their job
    assert escalation_warning(_tier(100, 90, calls=0), last=False) is None


@pytest.mark.parametrize(
    ("confidence", "bucket"), [(0.0, 0), (0.3, 3), (0.7, 7), (0.99, 9), (1.0, 9), (0.6, 6)]
)
def test_bucket_of(confidence: float, bucket: int) -> None:
    assert bucket_of(confidence) == bucket


def test_cache_savings() -> None:
    prices = PriceTable.load()
    # Haiku 5.5: input 0.10, cache read 0.01 USD/MTok -> 90 nano-USD a token
    assert cache_savings_nanos(prices, "claude-haiku-5-5", 1000) == 90_000
    assert cache_savings_nanos(prices, "no-such-model", 1000) is None
    assert cache_savings_nanos(None, "claude-haiku-5-5", 1000) is None


def test_bar_chart_is_svg_with_id_and_escaped_labels() -> None:
    svg = bar_chart("chart-x", ["<a>", "b"], [("cost", [1.0, 3.0])], line=("rate", [0.5, 1.0]))
    assert svg.startswith('<svg id="chart-x"') and svg.endswith("</svg>")
    assert svg.count('class="bar"') == 2 and "&lt;a&gt;" in svg
    assert 'class="line"' in svg


def test_render_html_of_an_empty_report_has_all_charts() -> None:
    report = {
        "job_id": None, "scope_text": "all jobs", "items_total": 0, "items_done": 0,
        "items_failed": 0, "items_unfinished": 0, "lines_rejected": 0, "cost_usd": "0",
        "baseline_cost_usd": "0", "savings_usd": "0", "savings_pct": 0.0, "tiers": [],
    }  # fmt: skip
    html = render_html(report)
    for chart in ("chart-funnel", "chart-cost", "chart-latency", "chart-confidence"):
        assert f'<svg id="{chart}"' in html
    assert '<p class="none">none</p></figure>' in html  # no day yet: no chart of nothing


def test_per_day_note_counts_steps_that_were_not_calls() -> None:
    from io import StringIO

    from rich.console import Console

    from cascade.render_text import print_daily_not_calls

    day = {"not_sent": 2, "reused": 3, "reuse_saved_usd": "0.000001500"}
    out = StringIO()
    print_daily_not_calls(Console(file=out, width=100), [day, day | {"reused": 0}])
    text = out.getvalue()
    assert "4 model steps sent no request" in text
    assert "3 items reused an identical text's decision" in text and "saved $" in text
    quiet = StringIO()
    print_daily_not_calls(Console(file=quiet), [{"not_sent": 0, "reused": 0}])
    assert quiet.getvalue() == ""


def test_html_page_counts_items_in_review_as_the_text_report_does() -> None:
    """Issue 20: review is final for the machine; both reports say how many wait for a person."""
    from io import StringIO

    from rich.console import Console

    from cascade.render import print_report

    report = {
        "job_id": None, "scope_text": "all jobs", "items_total": 1200, "items_done": 1000,
        "items_failed": 3, "items_review": 190, "items_unfinished": 7, "lines_rejected": 1,
        "cost_usd": "0", "finished_cost_usd": "0", "baseline_cost_usd": "0",
        "savings_usd": "0", "savings_pct": 0.0, "tiers": [],
    }  # fmt: skip
    said = "items 1,200: done 1,000, failed 3, in review 190, unfinished 7; rejected input lines 1"
    html = render_html(report)
    text = StringIO()
    print_report(Console(file=text, width=200), report)
    assert f"<p>{said}</p>" in html
    assert said in text.getvalue()
    assert "in review" not in render_html(report | {"items_review": 0})

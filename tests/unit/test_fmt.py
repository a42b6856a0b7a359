"""Numbers as the CLI and the HTML page show them, and tables that fit 80 columns."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from rich.console import Console

from cascade.fmt import FitTable, count, money, plural
from cascade.render import print_report


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("8.530429700"), "$8.5304"),  # never nine decimals
        (Decimal("-0.0112"), "-$0.0112"),  # the sign before the dollar
        (Decimal("123.456"), "$123.46"),  # cents from $100 up
        (Decimal("20000"), "$20,000.00"),  # thousands separators
        (Decimal("0"), "$0.0000"),
    ],
)
def test_money(value: Decimal, shown: str) -> None:
    assert money(value) == shown


def test_counts_and_plurals() -> None:
    assert count(20000) == "20,000"
    assert count(None) == "-"
    assert plural(1, "new item") == "1 new item"
    assert plural(2, "line") == "2 lines"


def report(partial: bool = False) -> dict[str, object]:
    tier = {
        "tier": "a-rather-long-tier-name",
        "entered": 200000,
        "accepted": 150000,
        "escalated": 50000,
        "failed": 0,
        "calls": 200000,
        "fallbacks": 12,
        "cost_usd": "1234.567891234",
        "p50_ms": 812,
        "p95_ms": 2400,
    }
    return {
        "job_id": 7,
        "job_name": "tickets-20261207",
        "pipeline": "support-triage",
        "status": "running" if partial else "done",
        "tiers": [tier, tier | {"tier": "large"}],
        "items_total": 200000,
        "items_done": 71275 if partial else 200000,
        "items_failed": 0,
        "items_unfinished": 128725 if partial else 0,
        "partial": partial,
        "lines_rejected": 0,
        "cost_usd": "2469.135782468",
        "finished_cost_usd": "0.87",
        "baseline_cost_usd": "124.43",
        "savings_usd": "123.56",
        "savings_pct": 99.3,
    }


def render(r: dict[str, object], width: int = 80) -> str:
    buf = io.StringIO()
    print_report(Console(file=buf, width=width, color_system=None), r)
    return buf.getvalue()


def test_at_80_columns_money_is_never_cut() -> None:
    text = render(report())
    assert "$1,234.57" in text
    assert "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "not shown at this width" in text  # latencies gave way, and it says so


def test_a_partial_job_says_so_beside_its_savings() -> None:
    text = render(report(partial=True), width=200)
    assert "partial" in text and "71,275 finished items of 200,000" in text


def test_fit_table_keeps_first_column_and_groups_digits() -> None:
    t = FitTable("name", "n", "p95ms")
    t.add_row("a-name-the-user-typed", "20000", "3")
    buf = io.StringIO()
    Console(file=buf, width=34, color_system=None).print(t)
    assert "a-name-the-user-typed" in buf.getvalue()
    assert "20,000" in buf.getvalue()
    assert "not shown at this width: p95ms" in buf.getvalue()

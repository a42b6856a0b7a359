"""`cascade tune` never claims certainty it has not got: no "± 0.0000" on rows where
nothing was judged or where every judged answer agreed."""

from __future__ import annotations

from cascade.cli_tune import _spread


def test_nothing_judged_gives_no_estimate() -> None:
    assert _spread(1.0, 0) == "nothing judged there: no estimate"
    assert _spread(None, 10) == "nothing judged there: no estimate"


def test_all_alike_gives_the_rule_of_three_not_a_zero_error() -> None:
    said = _spread(1.0, 30)
    assert "± 0.0000" not in said
    assert "below 0.1000" in said  # 3 / 30


def test_a_mixed_rate_gives_one_standard_error() -> None:
    assert _spread(0.9, 100) == "± 0.0300 (one standard error)"

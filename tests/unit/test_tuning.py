"""Threshold tuning: the tier curve, the recommendation, the cascade simulation, the TOML edit."""

from __future__ import annotations

import tomllib

import pytest

from workers.tuning import (
    CurvePoint,
    Observation,
    TierAnswer,
    cheapest,
    curve,
    recommend,
    set_min_confidence,
    simulate,
)

# Four answers of a tier: two confident and right, one middling and right, one unsure and wrong.
# Each costs 10 here; escalating one costs 100 more above (where the answer is the reference).
OBS = [
    Observation(0.95, True, 10, None, None),
    Observation(0.90, True, 10, None, None),
    Observation(0.70, True, 10, True, 100),
    Observation(0.40, False, 10, True, 100),
]


@pytest.mark.parametrize(
    ("threshold", "kept", "quality", "cost"),
    [
        (0.0, 1.0, 0.75, 10.0),  # keep all: one wrong of four, nothing escalates
        (0.5, 0.75, 1.0, 35.0),  # the wrong one escalates and gets the reference answer
        (0.8, 0.5, 1.0, 60.0),  # two escalate: 10 + 2 x 100 / 4 more per item
        (0.99, 0.0, 1.0, 110.0),  # nothing kept: every item pays for the tier above
    ],
)
def test_curve_points(threshold: float, kept: float, quality: float, cost: float) -> None:
    (point,) = curve(OBS, [threshold])
    assert point.kept_share == kept
    assert point.quality == pytest.approx(quality)
    assert point.cost_per_item_nanos == pytest.approx(cost)


def test_unjudged_kept_answers_take_the_judged_ones_rate() -> None:
    """Accepted items without a reference count at the kept answers' measured agreement."""
    obs = [Observation(0.9, None, 1), Observation(0.8, True, 1), Observation(0.6, False, 1)]
    (point,) = curve(obs, [0.5])
    assert point.verified == 2
    assert point.quality == pytest.approx(0.5)  # all kept, judged 1 of 2 right


def test_no_pairs_means_no_quality() -> None:
    (point,) = curve([Observation(0.9, None, 1)], [0.5])
    assert point.quality is None


def _p(t: float, q: float | None, cost: float) -> CurvePoint:
    return CurvePoint(t, 0.5, q, 10, cost)


POINTS = [_p(0.5, 0.90, 10), _p(0.7, 0.97, 20), _p(0.9, 0.99, 40), _p(0.95, None, 80)]


@pytest.mark.parametrize(
    ("target", "budget", "expected"),
    [
        (0.95, None, 0.7),  # 0.7 is the cheapest point at or above 0.95
        (0.99, None, 0.9),  # only 0.9 reaches 0.99 (0.95 has no pairs)
        (0.999, None, None),  # nothing reaches it
        (None, 45.0, 0.9),  # the most careful point within 45
        (None, 5.0, None),  # nothing is that cheap
    ],
)
def test_recommend(target: float | None, budget: float | None, expected: float | None) -> None:
    rec = recommend(POINTS, 123, target=target, budget_nanos=budget)
    assert (rec.point.threshold if rec.point else None) == expected
    assert rec.pairs == 123


def test_recommend_needs_exactly_one_goal() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        recommend(POINTS, 1)


# Three tiers: free local, a cheap model (cost 1), the large model (cost 10, always right).
ROWS = [
    [TierAnswer(0.99, True, 0), TierAnswer(0.9, True, 1), TierAnswer(None, True, 10)],
    [TierAnswer(0.60, False, 0), TierAnswer(0.9, True, 1), TierAnswer(None, True, 10)],
    [TierAnswer(0.60, False, 0), TierAnswer(0.5, False, 1), TierAnswer(None, True, 10)],
    [TierAnswer(0.60, True, 0), TierAnswer(None, False, 1), TierAnswer(None, True, 10)],
]


@pytest.mark.parametrize(
    ("thresholds", "accuracy", "cost", "kept"),
    [
        ((0.5, 0.5), 0.5, 0, (4, 0, 0)),  # the local tier keeps all, two are wrong
        ((0.95, 0.8), 1.0, 23, (1, 1, 2)),  # the unsure go up; a malformed answer always does
        ((0.95, 0.0), 0.75, 13, (1, 2, 1)),  # small keeps its wrong 0.5 answer
        ((1.01, 1.01), 1.0, 44, (0, 0, 4)),  # everything reaches the last tier
    ],
)
def test_simulate(
    thresholds: tuple[float, float], accuracy: float, cost: int, kept: tuple[int, ...]
) -> None:
    result = simulate(ROWS, thresholds)
    assert (result.accuracy, result.cost_nanos, result.kept) == (accuracy, cost, kept)


def test_cheapest_meets_the_target_at_least_cost() -> None:
    grid = [(a, b) for a in (0.5, 0.95, 1.01) for b in (0.0, 0.8, 1.01)]
    best = cheapest(ROWS, grid, 1.0)
    assert best is not None and best.thresholds == (0.95, 0.8) and best.cost_nanos == 23
    assert cheapest(ROWS, [(0.5, 0.5)], 0.9) is None


def test_simulate_wants_one_threshold_per_deciding_tier() -> None:
    with pytest.raises(ValueError, match="need 2 thresholds"):
        simulate(ROWS, [0.5])


PIPE = """\
name = "p"  # the name
labels = ["a", "b"]
instructions = "x"

[[tiers]]
name = "rules"
kind = "rules"
rules = [{ pattern = 'x', label = "a" }]

[[tiers]]                      # small model
name = "small"
kind = "claude"
model = "m"
[tiers.accept]
min_confidence = 0.8   # keep this comment
reject_hedging = true

[[tiers]]
name = "mid"
kind = "claude"
model = "m"
accept = { min_confidence = 0.7, reject_hedging = false }

[[tiers]]
name = "large"
kind = "claude"
model = "m"
"""


@pytest.mark.parametrize(
    ("tier", "value", "changed_line"),
    [
        (1, 0.93, "min_confidence = 0.93   # keep this comment\n"),  # in place, comment kept
        (2, 0.5, "accept = { min_confidence = 0.5, reject_hedging = false }\n"),  # inline table
        (3, 0.9, "min_confidence = 0.9\n"),  # no accept table yet: one is added
        (0, 1.0, "min_confidence = 1.0\n"),  # a rules tier gets a table too
    ],
)
def test_set_min_confidence(tier: int, value: float, changed_line: str) -> None:
    out = set_min_confidence(PIPE, tier, value)
    assert tomllib.loads(out)["tiers"][tier]["accept"]["min_confidence"] == value
    assert changed_line in out.splitlines(keepends=True)
    before, after = PIPE.splitlines(), out.splitlines()
    assert len(after) - len(before) in (0, 1, 2)  # only the edited or added lines differ
    assert len([ln for ln in before if ln not in after]) <= 1  # at most the one edited line
    for other in {0, 1, 2, 3} - {tier}:
        assert tomllib.loads(out)["tiers"][other] == tomllib.loads(PIPE)["tiers"][other]


@pytest.mark.parametrize(("tier", "value"), [(4, 0.5), (1, 1.5)])
def test_set_min_confidence_refuses(tier: int, value: float) -> None:
    with pytest.raises(ValueError):
        set_min_confidence(PIPE, tier, value)


def tier_text(body: str, trailing: str = "\n") -> str:
    """One model tier written as ``body``, then a second tier that must stay as it is."""
    return (
        f'[[tiers]]\nname = "small"\nkind = "claude"\nmodel = "m"\n{body}\n'
        f'[[tiers]]\nname = "large"\nkind = "claude"\nmodel = "m"{trailing}'
    )


@pytest.mark.parametrize(
    ("body", "expected_lines"),
    [
        # an accept table without the key: the key goes first in the table, the rest stays
        (
            "[tiers.accept]\nreject_hedging = true\n",
            ["[tiers.accept]", "min_confidence = 0.65", "reject_hedging = true"],
        ),
        # another sub-table before [tiers.accept] is skipped, not edited
        (
            '[tiers.consistency]\nmodels = ["m"]\n[tiers.accept]\nmin_confidence = 0.8\n',
            ["[tiers.consistency]", 'models = ["m"]', "[tiers.accept]", "min_confidence = 0.65"],
        ),
        # a sub-table without accept: a new [tiers.accept] is added after it
        (
            '[tiers.consistency]\nmodels = ["m"]\n',
            ["[tiers.consistency]", 'models = ["m"]', "[tiers.accept]", "min_confidence = 0.65"],
        ),
    ],
)
def test_set_min_confidence_in_other_layouts(body: str, expected_lines: list[str]) -> None:
    text = tier_text(body)

    out = set_min_confidence(text, 0, 0.65)

    small, large = tomllib.loads(out)["tiers"]
    assert small["accept"]["min_confidence"] == 0.65
    assert large == tomllib.loads(text)["tiers"][1]
    lines = out.splitlines()
    start = lines.index(expected_lines[0])
    assert lines[start : start + len(expected_lines)] == expected_lines


def test_set_min_confidence_on_a_last_tier_without_a_final_newline() -> None:
    text = tier_text("", trailing="")  # the file ends on `model = "m"`, no newline

    out = set_min_confidence(text, 1, 0.3)

    assert out.endswith('model = "m"\n[tiers.accept]\nmin_confidence = 0.3\n')
    assert tomllib.loads(out)["tiers"][1]["accept"] == {"min_confidence": 0.3}


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (0.0, "0.0"),  # a whole number keeps one decimal: TOML reads it back as a float
        (1.0, "1.0"),
        (0.5, "0.5"),
        (0.123456, "0.1235"),  # four decimals at most
        (0.9, "0.9"),  # trailing zeros dropped
    ],
)
def test_set_min_confidence_writes_short_numbers(value: float, written: str) -> None:
    out = set_min_confidence(tier_text("[tiers.accept]\nmin_confidence = 0.8\n"), 0, value)

    assert f"min_confidence = {written}\n" in out


@pytest.mark.parametrize(
    "body",
    [
        # a valid inline accept table with no min_confidence to edit
        "accept = { reject_hedging = true }",
        # a dotted key is not a table header either
        "accept.min_confidence = 0.7",
    ],
)
def test_set_min_confidence_refuses_what_it_cannot_edit_in_place(body: str) -> None:
    """Adding a [tiers.accept] table beside these would declare accept twice: the
    function says it cannot, rather than report a TOML error about a line the user's
    file does not have."""
    with pytest.raises(ValueError) as info:
        set_min_confidence(tier_text(body), 0, 0.65)

    assert str(info.value) == "could not set min_confidence without rewriting the file"


def test_set_min_confidence_refuses_a_file_without_tier_tables() -> None:
    text = 'tiers = [{ name = "a", kind = "claude", model = "m" }]\n'

    with pytest.raises(ValueError, match=r"no tiers\[0\] written as a \[\[tiers\]\] table"):
        set_min_confidence(text, 0, 0.5)


def test_simulate_no_rows_is_an_empty_result() -> None:
    result = simulate([], [0.5])

    assert (result.thresholds, result.accuracy, result.cost_nanos, result.kept) == (
        (0.5,),
        0.0,
        0,
        (),
    )


def test_curve_of_no_observations_is_empty() -> None:
    assert curve([], [0.5, 0.9]) == []

"""The replay's guarantee mode: which tiers it leaves out, and its hindsight arithmetic."""

from __future__ import annotations

import numpy as np

from bench.replay.guarantee import dropped
from bench.replay.headroom import Half, accepted, outcome


def test_a_tier_certified_for_no_label_is_dropped_and_one_with_any_label_is_kept() -> None:
    assert dropped({"no": "never", "yes": "never"})
    assert not dropped({"no": 0.9, "yes": "never"})
    assert not dropped({"no": 0.5, "yes": 0.99})


def _half() -> Half:
    # four items: local says yes/yes/no/no with confidences .99/.6/.95/.55
    b = np.array
    return Half(
        yes=b([True, True, False, False]),
        conf=b([0.99, 0.6, 0.95, 0.55]),
        local_ok=b([True, False, True, True]),
        small_valid=b([True, True, True, False]),
        small_yes=b([True, False, False, False]),
        small_conf=b([0.9, 0.97, 0.5, 0.0]),
        small_ok=b([True, True, False, False]),
        large_ok=b([True, True, True, False]),
        gpt4_ok=b([True, True, True, False]),
        small_cost=b([1.0, 1.0, 1.0, 1.0]),
        large_cost=b([10.0, 10.0, 10.0, 10.0]),
        gpt4_cost=40.0,
    )


def test_accepted_follows_the_per_label_thresholds_and_never() -> None:
    h = _half()
    assert accepted(h.yes, h.conf, {True: 0.9, False: 0.5}).tolist() == [True, False, True, True]
    assert accepted(h.yes, h.conf, {True: 0.5, False: None}).tolist() == [True, True, False, False]


def test_outcome_counts_a_small_tier_only_when_it_can_accept() -> None:
    h = _half()
    # local keeps items 0 and 2; the small tier keeps item 1 (no, 0.97); item 3 goes large
    saving, acc, la, sa = outcome(h, {True: 0.9, False: 0.9}, {True: 0.95, False: 0.95})
    assert la.tolist() == [True, False, True, False] and sa.tolist() == [False, True, False, False]
    assert saving == 1 - (2 * 1.0 + 10.0) / 40.0
    assert acc == 0.75  # item 3: large wrong
    # a small tier that accepts nothing is left out: escalations pay for the large tier only
    saving, _, _, sa = outcome(h, {True: 0.9, False: 0.9}, {True: None, False: None})
    assert not sa.any() and saving == 1 - 20.0 / 40.0

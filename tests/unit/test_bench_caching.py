"""bench.caching's verdict on issue 19's targets (the run itself is `make bench`)."""

from __future__ import annotations

from typing import Any

from bench.caching import missed


def _out(**cache: Any) -> dict[str, Any]:
    met = {
        "input_cost_saving_pct": 85.9,
        "cache_writes_per_model_max": 1,
        "hit_rate_after_first_min": 1.0,
    }
    reuse = {"exact": True, "calls_with_repeats_job": 10, "calls_distinct_only_job": 10}
    return {"cache": met | cache, "reuse": reuse}


def test_all_targets_met() -> None:
    assert missed(_out()) == []


def test_each_target_missed_is_named() -> None:
    assert missed(_out(input_cost_saving_pct=79.9))[0].startswith("cache on vs off")
    assert "writes" in missed(_out(cache_writes_per_model_max=2))[0]
    assert "hit rate" in missed(_out(hit_rate_after_first_min=0.985))[0]
    out = _out()
    out["reuse"] = {"exact": False, "calls_with_repeats_job": 12, "calls_distinct_only_job": 10}
    assert missed(out) == [
        "repeats: 12 calls against 10 for the distinct texts alone (target: equal)"
    ]

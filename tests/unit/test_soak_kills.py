"""Double bills sorted by where the first bill stood at the next kill (bench.kills)."""

from __future__ import annotations

from bench.accounting import Call
from bench.kills import twice_by_kill


def call(rid: str, item: str, received: float, ended: float, outcome: str = "ok") -> Call:
    return Call(rid, "claude-haiku-5-5", outcome, 200, item, (10, 1, 0, 0), received, ended, ended)


def test_each_second_bill_is_placed_against_the_next_kill() -> None:
    calls = [
        call("a1", "a", 1.0, 2.5),
        call("a2", "a", 9.0, 9.5),  # in flight at the kill at 2.0
        call("b1", "b", 1.0, 1.9),
        call("b2", "b", 9.0, 9.5),  # out 0.1 s before it
        call("c1", "c", 0.5, 1.0),
        call("c2", "c", 9.0, 9.5),  # out a second before: a defect
        call("d1", "d", 20.0, 20.2),
        call("d2", "d", 21.0, 21.5),  # no kill after 20: a defect
        call("e1", "e", 1.0, 1.5),  # billed once
        call("f1", "f", 1.0, 1.2, "error"),
        call("f2", "f", 3.0, 3.5),  # a retry, not a bill
    ]
    got = twice_by_kill(calls, kills_at=[12.0, 2.0])
    assert {k: got[k] for k in ("in_flight", "just_returned", "returned_before", "no_kill")} == {
        "in_flight": 1,
        "just_returned": 1,
        "returned_before": 1,
        "no_kill": 1,
    }
    assert [s["request_id"] for s in got["suspects"]] == ["c1", "d1"]

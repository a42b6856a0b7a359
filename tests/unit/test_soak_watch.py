"""How the soak tells a dead worker's re-claimed items from a live worker's settled ones."""

from __future__ import annotations

import pytest

from bench.soak import Kill, Watcher, lease_change, spool_recoveries

AT_KILL = ("tok_a", 1, "running")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (("tok_a", 1, "running"), None),  # untouched: the lease is still the old one
        (("tok_b", 1, "running"), "reclaimed"),  # a new lease over the dead one
        ((None, 2, "pending"), "moved"),  # settled and escalated by a live worker
        ((None, 1, "done"), "moved"),  # settled, accepted
        (("tok_b", 2, "running"), "moved"),  # settled, escalated, claimed at the next tier
        (("tok_b", 1, "fallback_running"), "moved"),  # settled to the fallback, claimed there
    ],
)
def test_lease_change(now: tuple[str | None, int, str], expected: str | None) -> None:
    assert lease_change(AT_KILL, now) == expected


def test_a_later_kill_does_not_follow_leases_an_earlier_one_stranded() -> None:
    watcher = Watcher("unused")
    watcher.add_kill(Kill(1.0, 0, {1: AT_KILL, 2: ("tok_b", 1, "running")}))
    watcher.kills[0].moved.add(2)  # item 2 was a live worker's
    # Given item 1 still under its dead lease and item 2 leased anew
    watcher.add_kill(Kill(31.0, 1, {1: AT_KILL, 2: ("tok_c", 1, "running"), 3: AT_KILL}))
    # Then the second kill follows 2 and 3 only
    assert sorted(watcher.kills[1].held) == [2, 3]


def test_spool_replays_are_summed_from_the_workers_json_log() -> None:
    log = "\n".join(
        [
            '{"event": "cascade.spool.recovered", "segments": 2, "replies": 5,'
            ' "replies_filled": 4, "unsent": 1, "unsent_removed": 1, "bad_lines": 0}',
            '{"event": "cascade.batch.settled", "items": 9}',
            "not json cascade.spool.recovered",
            '{"event": "cascade.spool.recovered", "segments": 1, "replies": 3,'
            ' "replies_filled": 3, "unsent": 0, "unsent_removed": 0, "bad_lines": 1}',
        ]
    )
    assert spool_recoveries(log) == {
        "recoveries": 2,
        "segments": 3,
        "replies": 8,
        "replies_filled": 7,
        "unsent": 1,
        "unsent_removed": 1,
        "bad_lines": 1,
    }

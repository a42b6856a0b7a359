"""The soak's accounting (bench/accounting.py) on a hand-built ledger and request log.

No processes, no sleeping: the story of each item is written below as rows, and
every number the soak would print is asserted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from bench import accounting as acc
from cascade.fakeapi.reqlog import item_digest
from tests.integration.conftest import add_attempt, add_item, new_job

T0 = 1_800_000_000.0  # epoch seconds
HAIKU, SONNET = "claude-haiku-5-5", "claude-sonnet-5-5"


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset, UTC)


def served(
    rid: str,
    text: str,
    outcome: str,
    *,
    model: str = HAIKU,
    tokens: tuple[int, int] = (0, 0),
    sent: float | None = None,
) -> dict[str, Any]:
    """One request-log line as the fake writes it."""
    status = {"ok": 200, "error": 429}.get(outcome)
    return {
        "request_id": rid,
        "model": model,
        "item": item_digest(text),
        "status": status,
        "outcome": outcome,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "received": T0 + (sent or 1.0) - 0.8,
        "sent": None if sent is None else T0 + sent,
        "ended": T0 + (sent or 1.0),
    }


# The request log: what the fake served.
LOG = [
    served("req_1", "alpha", "error", sent=5.0),  # a 429, then retried
    served("req_2", "alpha", "ok", tokens=(100, 10), sent=9.0),
    served("req_3", "beta", "dropped"),  # the fake dropped it: the client saw no id
    served("req_4", "beta", "ok", tokens=(50, 5), sent=12.0),  # answered a worker then killed
    served("req_5", "beta", "ok", tokens=(50, 5), sent=18.0),  # the same call again, re-claimed
    served("req_6", "gamma", "cut_off"),  # the worker was killed mid-call
    served("req_7", "delta", "ok", tokens=(20, 2), sent=25.0),
    served("req_8", "delta", "ok", tokens=(20, 2), sent=27.0),  # a lost lease's call, orphaned
    served("req_9", "eps", "ok", tokens=(30, 3), sent=39.5),
    served("req_10", "eps", "ok", model=SONNET, tokens=(7, 1), sent=39.0),
]


def build(engine: Engine) -> int:
    """The ledger the workers wrote for the log above; returns the job id."""
    with engine.begin() as conn:
        job, sub = new_job(conn, "soak")
        other, other_sub = new_job(conn, "other")  # must not leak into the soak's figures
        items = {
            "alpha": add_item(conn, job, sub, "a", text="alpha", meta={}, status="done",
                              finished_at=at(10), updated_at=at(10)),
            "beta": add_item(conn, job, sub, "b", text="beta", meta={}, status="done",
                             finished_at=at(20), updated_at=at(20)),
            "gamma": add_item(conn, job, sub, "c", text="gamma", meta={}, status="running",
                              tier_index=1, updated_at=at(6)),
            "delta": add_item(conn, job, sub, "d", text="delta", meta={}, status="done",
                              finished_at=at(30), updated_at=at(30)),
            "eps": add_item(conn, job, sub, "e", text="eps", meta={}, status="failed",
                            finished_at=at(40), updated_at=at(40)),
            "zeta": add_item(conn, job, sub, "f", text="zeta", meta={}, status="pending"),
        }  # fmt: skip
        other_item = add_item(conn, other, other_sub, "a", text="alpha", meta={}, status="done")
        add_attempt(conn, other, other_item, 1, tier_index=1, tier="small", role="primary",
                    provider="anthropic", model=HAIKU, outcome="ok", request_id="req_2",
                    input_tokens=100, output_tokens=10)  # fmt: skip

        def row(key: str, step: int, outcome: str, rid: str | None, **kw: Any) -> None:
            values = {"tier_index": 1, "tier": "small", "role": "primary",
                      "provider": "anthropic", "model": HAIKU} | kw  # fmt: skip
            add_attempt(conn, job, items[key], step, outcome=outcome, request_id=rid, **values)

        rules = {"tier_index": 0, "tier": "rules", "role": "rules", "model": "rules"}
        row("alpha", 1, "rule_miss", None, decision="escalate", **rules)
        row("alpha", 2, "transient", "req_1", http_status=429)
        row("alpha", 3, "ok", "req_2", decision="accept", input_tokens=100, output_tokens=10)
        row("beta", 1, "transient", None)  # the dropped call: no request id reached the client
        row("beta", 2, "ok", "req_5", decision="accept", input_tokens=50, output_tokens=5)
        row("delta", 1, "ok", "req_7", decision="accept", input_tokens=20, output_tokens=2)
        row("delta", 1_000_000, "ok", "req_8", input_tokens=20, output_tokens=2)
        # recorded with one output token too many
        row("eps", 1, "ok", "req_9", decision="accept", input_tokens=30, output_tokens=4)
        # and decided twice at tier 1, the second time on a call the server never saw
        row("eps", 2, "ok", "req_ghost", decision="accept", input_tokens=1, output_tokens=1)
        row("eps", 3, "ok", "req_10", tier_index=2, tier="large", model=SONNET,
            decision="fail", input_tokens=7, output_tokens=1)  # fmt: skip
        row("eps", 4, "weird_outcome", None)  # an outcome the table does not know
        row("eps", 5, "breaker_open", None, decision=None)  # no call made
        row("eps", 6, "unknown", None, decision=None)  # sent, then a kill: reply never recorded
        return job


@pytest.fixture
def soak(engine: Engine) -> tuple[list[acc.Call], acc.Ledger]:
    job = build(engine)
    return [acc.Call.from_log(e) for e in LOG], acc.load_ledger(engine, job)


def test_calls_and_tokens_server_against_ledger(soak: tuple[list[acc.Call], acc.Ledger]) -> None:
    calls, ledger = soak
    got = acc.compare(calls, ledger.rows)
    assert got["server_calls"] == 10
    assert got["server_calls_by_outcome"] == {"ok": 7, "error": 1, "dropped": 1, "cut_off": 1}
    # rules, the breaker and the outcome nobody knows are not calls; the other 10 rows
    # are, the call a kill cut off among them
    assert got["ledger_calls"] == 10
    assert got["ledger_calls_without_request_id"] == 2  # beta's dropped call, eps' cut-off one
    assert got["cut_off"] == 1
    assert {k: v["sample"] for k, v in got["server_only"].items()} == {
        "dropped": ["req_3"],
        "ok": ["req_4"],
        "cut_off": ["req_6"],
    }
    assert got["server_only_billed_tokens"] == {
        "input": 50,
        "output": 5,
        "cache_write": 0,
        "cache_read": 0,
    }
    assert got["ledger_only"] == {"count": 1, "sample": ["req_ghost"]}
    assert got["tokens"]["server"]["input"] == 100 + 50 + 50 + 20 + 20 + 30 + 7
    assert got["tokens"]["ledger"]["input"] == 100 + 50 + 20 + 20 + 30 + 1 + 7
    assert got["tokens"]["server"]["output"] == 10 + 5 + 5 + 2 + 2 + 3 + 1
    assert got["tokens"]["ledger"]["output"] == 10 + 5 + 2 + 2 + 4 + 1 + 1
    assert got["tokens_equal"] is False
    assert got["token_mismatches"] == {"count": 1, "sample": ["req_9"]}
    assert got["unknown_outcomes"] == {"weird_outcome": 1}


def test_items_billed_twice_at_one_tier(soak: tuple[list[acc.Call], acc.Ledger]) -> None:
    calls, ledger = soak
    got = acc.double_billed(calls, ledger.rows, ledger.items)
    ids = {i.text: i.id for i in ledger.items}
    # server: beta answered twice by haiku (a killed worker's call, then again), delta
    # twice (an orphaned call); alpha's 429 before its answer is a retry, not counted
    assert (got["server_items"], got["server_keys"], got["extra_billed_calls"]) == (2, 2, 2)
    assert {(s["item_id"], s["model"], s["billed"]) for s in got["server_sample"]} == {
        (ids["beta"], HAIKU, 2),
        (ids["delta"], HAIKU, 2),
    }
    # ledger: delta (its orphan row) and eps (two answers at tier 1); beta's first
    # answer never reached the ledger
    assert (got["ledger_items"], got["ledger_keys"]) == (2, 2)
    assert sorted(s[0] for s in got["ledger_sample"]) == sorted([ids["delta"], ids["eps"]])
    assert got["ambiguous_texts"] == 0


def test_duplicates_lost_items_and_settle_lag(soak: tuple[list[acc.Call], acc.Ledger]) -> None:
    calls, ledger = soak
    dup = acc.duplicates(ledger.rows)
    eps = next(i.id for i in ledger.items if i.text == "eps")
    assert (dup["item_steps_count"], dup["request_ids_count"]) == (0, 0)
    assert dup["decisions_count"] == 1
    assert dup["decisions"] == [[eps, 1, "accept"]]

    lost = acc.unfinished(ledger.items)
    assert (lost["count"], lost["by_status"]) == (2, {"running": 1, "pending": 1})

    # finished_at minus the sent time of the item's last recorded call
    lags = sorted(round(x, 3) for x in acc.settle_lag(calls, ledger.rows, ledger.items))
    assert lags == [0.5, 1.0, 2.0, 3.0]


def test_pure_duplicates_of_steps_and_request_ids() -> None:
    """The unique keys the database enforces today, checked anyway: they may change."""
    row = acc.Row(1, 1, 1, "primary", HAIKU, "ok", "accept", (1, 1, 0, 0), "req_1")
    again = acc.Row(1, 1, 1, "primary", HAIKU, "ok", None, (1, 1, 0, 0), "req_1")
    got = acc.duplicates([row, again])
    assert got["item_steps"] == [(1, 1)]
    assert got["request_ids"] == ["req_1"]
    assert got["decisions_count"] == 0


def test_every_known_outcome_is_classified() -> None:
    assert set(acc.COUNTED_AS.values()) == {acc.CALL, acc.NO_CALL}
    assert acc.counted_as(acc.Row(1, 1, 1, "x", "m", "brand_new", None, (0, 0, 0, 0), None)) == (
        "unknown"
    )


def test_steady_state_leaves_out_ramp_and_drain() -> None:
    # 100 calls of 1 s each, 10 in flight from t=0 to t=10 (one ending every 0.1 s)
    calls = [
        acc.Call(f"r{i}", HAIKU, "ok", 200, None, (0, 0, 0, 0), i * 0.1, i * 0.1 + 1, i * 0.1 + 1)
        for i in range(100)
    ]
    got = acc.steady_state(calls)
    assert got["calls_per_s"] == pytest.approx(10, rel=0.02)
    assert got["mean_latency_s"] == pytest.approx(1.0)
    assert got["in_flight_mean"] == pytest.approx(10, rel=0.02)

"""Every report question answered on a hand-built job with known numbers, on SQLite
and Postgres: funnel, cost, latency, reliability, confidence, per day, filters, and
the ``report_daily`` view agreeing with the CLI's query."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, insert, text
from sqlalchemy.orm import Session

from cascade.cli_report import build_report
from cascade.render_csv import compare_report, write_report_csv
from models import analytics as an
from models import rollup
from models.analytics import job_totals
from models.db import make_sessionmaker
from models.reports import tier_rows
from models.tables import Job
from models.tables_resilience import BreakerEvent, Drill
from tests.integration.conftest import Ledger, add_attempt, add_item
from workers.pricing import PriceTable


def _at(day: int, hour: int = 10, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


SMALL = {"tier_index": 0, "tier": "small", "role": "primary", "provider": "anthropic",
         "model": "claude-haiku-5-5"}  # fmt: skip
LARGE = {"tier_index": 1, "tier": "large", "role": "primary", "provider": "anthropic",
         "model": "claude-sonnet-5-5"}  # fmt: skip
FALLBACK = LARGE | {"role": "fallback", "provider": "bedrock"}

# Pipeline "triage", tiers 0 small, 1 large; every baseline is 1000 nano-USD.
# key: (status, tier_index, label, final_tier, confidence, cost, latency, created day, error)
TRIAGE_ITEMS: dict[str, tuple[Any, ...]] = {
    "p": ("done", 1, "billing", "large", 0.95, 1000, 1000, 1, None),
    "q": ("done", 1, "account", "large", 0.99, 1000, 1000, 1, None),
    "r": ("done", 0, "billing", "small", 0.91, 300, 150, 1, None),
    "s": ("failed", 1, None, None, None, 300, 210, 2, "refusal; bedrock: permanent"),
}
# key: [(tier, outcome, decision, label, confidence, cost, latency, at, extra)]
TRIAGE_ATTEMPTS: dict[str, list[tuple[Any, ...]]] = {
    "p": [
        (SMALL, "ok", "escalate", "billing", 0.55, 300, 100, _at(1), {}),
        (
            LARGE,
            "ok",
            "accept",
            "billing",
            0.95,
            700,
            900,
            _at(2, 1),
            {"is_batch": True, "cache_read_tokens": 1000},
        ),
    ],
    "q": [
        (SMALL, "ok", "escalate", "billing", 0.62, 300, 200, _at(1), {}),
        (LARGE, "ok", "accept", "account", 0.99, 700, 800, _at(1, 11), {}),
    ],
    "r": [(SMALL, "ok", "accept", "billing", 0.91, 300, 150, _at(1), {})],
    "s": [
        (SMALL, "ok", "escalate", "other", 0.3, 300, 120, _at(2), {}),
        (LARGE, "refusal", "fallback", None, None, 0, 50, _at(2), {}),
        (FALLBACK, "permanent", "fail", None, None, 0, 40, _at(2), {}),
    ],
}


def build_triage(conn: Connection) -> int:
    """Insert the triage job above, its breaker events and a drill; return its id."""
    job_id = int(
        conn.execute(
            insert(Job).values(name="triage-1", pipeline_name="triage", pipeline={"tiers": 2})
        ).inserted_primary_key[0]  # type: ignore[index]
    )
    from models.tables import Submission

    sub = conn.execute(
        insert(Submission).values(job_id=job_id, source="t.jsonl")
    ).inserted_primary_key[0]  # type: ignore[index]
    for n, (key, (status, ti, label, tier, conf, cost, lat, day, err)) in enumerate(
        TRIAGE_ITEMS.items(), start=1
    ):
        item = add_item(conn, job_id, int(sub), key, line_no=n, meta={}, status=status,
                        tier_index=ti, label=label, final_tier=tier, confidence=conf,
                        cost_nanos=cost, baseline_nanos=1000, latency_ms=lat, error=err,
                        model_calls=len(TRIAGE_ATTEMPTS[key]), created_at=_at(day, 9))  # fmt: skip
        for step, (t, outcome, decision, alabel, aconf, acost, alat, at, extra) in enumerate(
            TRIAGE_ATTEMPTS[key], start=1
        ):
            add_attempt(conn, job_id, item, step, **t, outcome=outcome, decision=decision,
                        label=alabel, confidence=aconf, cost_nanos=acost, latency_ms=alat,
                        input_tokens=100, output_tokens=10, created_at=at, **extra)  # fmt: skip
    events = [
        ("anthropic:claude-sonnet-5-5", "closed", "open", "5 failures", _at(2, 0, 0, 0)),
        ("anthropic:claude-sonnet-5-5", "open", "half_open", "cool-down", _at(2, 0, 0, 30)),
        ("anthropic:claude-sonnet-5-5", "half_open", "open", "probe failed", _at(2, 0, 0, 31)),
        ("anthropic:claude-sonnet-5-5", "open", "half_open", "cool-down", _at(2, 0, 0, 50)),
        ("anthropic:claude-sonnet-5-5", "half_open", "closed", "probes ok", _at(2, 0, 1, 0)),
        ("anthropic:claude-haiku-5-5", "closed", "open", "overloaded", _at(2, 5)),
        ("anthropic:claude-haiku-5-5", "closed", "open", "long ago", _at(1, 1)),
    ]
    for key, frm, to, reason, at in events[:-1]:
        conn.execute(insert(BreakerEvent).values(breaker_key=key, from_state=frm, to_state=to,
                                                 reason=reason, at=at))  # fmt: skip
    conn.execute(
        insert(Drill).values(breaker_key="anthropic:claude-sonnet-5-5", reason="game day",
                             started_at=_at(2, 3), until=_at(2, 4), calls_diverted=7)
    )  # fmt: skip
    return job_id


@pytest.fixture
def triage(ledger: Ledger) -> Iterator[tuple[Ledger, int]]:
    with ledger.engine.begin() as conn:
        job_id = build_triage(conn)
    yield ledger, job_id


def _session(ledger: Ledger) -> Session:
    return Session(ledger.engine)


def test_funnel_and_warnings(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        funnel = an.funnel(s, an.Scope(job_ids=(job,)))
        report = build_report(s, s.get(Job, job), an.Scope(job_ids=(job,)), None)

    got = [(t.tier, t.entered, t.accepted, t.escalated, t.failed, t.dead_lettered) for t in funnel]
    assert got == [("small", 4, 1, 3, 0, 0), ("large", 3, 2, 0, 1, 1)]
    assert [f["escalation_rate"] for f in report["funnel"]] == [0.75, 0.0]
    assert "too aggressively" in report["funnel"][0]["warning"]
    assert report["funnel"][1]["warning"] is None  # the last tier cannot escalate


def test_cost(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        report = build_report(s, s.get(Job, job), an.Scope(job_ids=(job,)), PriceTable.load())
    c = report["cost"]

    assert (c["total_usd"], c["baseline_usd"]) == ("0.000002600", "0.000004000")
    assert (c["savings_usd"], c["savings_pct"]) == ("0.000001400", 35.0)
    assert (c["per_item_mean_usd"], c["per_item_p95_usd"]) == ("0.000000650", "0.000001000")
    assert (c["realtime_usd"], c["batch_usd"]) == ("0.000001900", "0.000000700")
    # 1000 cache-read tokens on Sonnet 5.5: (2.00 - 0.20) USD/MTok = 1800 nano-USD a token
    assert c["cache_savings_usd"] == "0.001800000"
    assert [(t["tier"], t["cost_usd"]) for t in c["by_tier"]] == [
        ("small", "0.000001200"),
        ("large", "0.000001400"),
    ]
    by_label = {x["label"]: (x["items"], x["cost_usd"], x["baseline_usd"]) for x in c["by_label"]}
    assert by_label == {
        "billing": (2, "0.000001300", "0.000002000"),
        "account": (1, "0.000001000", "0.000001000"),
        None: (1, "0.000000300", "0.000001000"),
    }
    # the legacy keys are untouched
    assert report["cost_usd"] == "0.000002600" and report["savings_pct"] == 35.0


def test_latency(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        lat = build_report(s, s.get(Job, job), an.Scope(job_ids=(job,)), None)["latency"]

    # small [100, 120, 150, 200]; large [40, 50, 800, 900]: nearest rank
    assert lat["tiers"] == [
        {"tier_index": 0, "tier": "small", "calls": 4,
         "p50_ms": 120, "p95_ms": 200, "p99_ms": 200, "max_ms": 200},
        {"tier_index": 1, "tier": "large", "calls": 4,
         "p50_ms": 50, "p95_ms": 900, "p99_ms": 900, "max_ms": 900},
    ]  # fmt: skip
    # items' latency [150, 210, 1000, 1000]
    assert lat["end_to_end"] == {
        "items": 4, "p50_ms": 210, "p95_ms": 1000, "p99_ms": 1000, "max_ms": 1000
    }  # fmt: skip
    assert (lat["worst_path_p99_ms"], lat["worst_path_max_ms"]) == (1100, 1100)


def test_reliability(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        rel = build_report(s, s.get(Job, job), an.Scope(job_ids=(job,)), None)["reliability"]
        ranged = an.reliability(s, an.Scope(since=date(2026, 11, 2), until=date(2026, 11, 2)))

    assert rel["calls"] == 8
    assert rel["outcomes"] == {
        "ok": 6, "refusal": 1, "malformed": 0, "transient": 0, "permanent": 1, "context": 0,
        "spend_limit": 0, "retried": 0, "fell_back": 1,
    }  # fmt: skip
    assert rel["fallbacks"] == [
        {"tier": "large", "link": "bedrock:claude-sonnet-5-5", "calls": 1, "ok": 0}
    ]
    assert rel["dead_lettered"] == 1
    assert rel["dead_letters"] == [{"error": "refusal; bedrock: permanent", "items": 1}]
    openings = [(o["breaker_key"], o["seconds"], o["reason"]) for o in rel["breaker_openings"]]
    assert openings == [
        ("anthropic:claude-sonnet-5-5", 60.0, "5 failures"),  # re-opened by a probe: one opening
        ("anthropic:claude-haiku-5-5", None, "overloaded"),  # still open
    ]
    assert [(d["reason"], d["calls_diverted"]) for d in rel["drills"]] == [("game day", 7)]
    assert len(ranged.breaker_openings) == 2 and len(ranged.drills) == 1


def test_confidence_and_agreement(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        conf = build_report(s, s.get(Job, job), an.Scope(job_ids=(job,)), None)["confidence"]

    hist = [(b["tier"], b["label"], b["bucket"], b["answers"]) for b in conf["histogram"]]
    assert hist == [
        ("small", "billing", "0.5-0.6", 1),
        ("small", "billing", "0.6-0.7", 1),
        ("small", "billing", "0.9-1.0", 1),
        ("small", "other", "0.3-0.4", 1),
        ("large", "account", "0.9-1.0", 1),
        ("large", "billing", "0.9-1.0", 1),
    ]
    # p: small said billing, final billing; q: small said billing, final account;
    # s failed (no final label): not a pair
    assert conf["agreement"] == [{"tier": "small", "pairs": 2, "agreed": 1, "rate": 0.5}]


DAILY_DAYS = ["2026-11-01", "2026-11-01", "2026-11-02", "2026-11-02"]
DAILY = [
    # day, tier, items, escalated, failed, calls, cost, baseline, p95
    ("2026-11-01", "small", 3, 2, 0, 3, 900, 1000, 200),
    ("2026-11-01", "large", 1, 0, 0, 1, 700, 1000, 800),
    ("2026-11-02", "small", 1, 1, 0, 1, 300, 0, 120),
    ("2026-11-02", "large", 2, 0, 1, 3, 700, 2000, 900),
]


def test_daily_and_the_view_agree(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        rows = an.daily(s, an.Scope(pipeline="triage"))
        since = an.daily(s, an.Scope(job_ids=(job,), since=date(2026, 11, 2)))
    with ledger.engine.connect() as conn:
        view = conn.execute(
            text("SELECT * FROM report_daily WHERE pipeline = 'triage' ORDER BY day, tier_index")
        ).all()

    got = [(r.day.isoformat(), r.tier, r.items, r.escalated, r.failed, r.calls, r.cost_nanos,
            r.baseline_nanos, r.p95_ms) for r in rows]  # fmt: skip
    assert got == DAILY
    assert [r.day for r in since] == [date(2026, 11, 2)] * 2
    assert list(view[0]._fields)[:10] == [
        "day", "pipeline", "tier", "items", "escalated", "failed", "calls", "cost_usd",
        "baseline_cost_usd", "p95_ms",
    ]  # fmt: skip
    from_view = [(str(v.day), v.tier, v.items, v.escalated, v.failed, v.calls,
                  int(Decimal(str(v.cost_usd)) * 10**9),
                  int(Decimal(str(v.baseline_cost_usd)) * 10**9), v.p95_ms)
                 for v in view]  # fmt: skip
    assert from_view == DAILY


# (since, until) -> the days of the triage job's report_daily rows in that window
WINDOWS: list[tuple[date | None, date | None, list[str]]] = [
    (None, date(2026, 11, 1), ["2026-11-01"] * 2),
    (date(2026, 11, 2), None, ["2026-11-02"] * 2),
    (date(2026, 11, 1), date(2026, 11, 2), DAILY_DAYS),
    (date(2026, 11, 3), None, []),
]


def test_daily_windows_agree_on_the_rollup_and_the_live_path(triage: tuple[Ledger, int]) -> None:
    """A window is served by the rollup and the attempts after its watermark (by pipeline,
    or no filter) or by the live aggregate (by job): both give the same days, before and
    after the triage days are rolled up."""
    ledger, job = triage

    def windows() -> list[tuple[list[an.DailyRow], ...]]:
        with _session(ledger) as s:
            return [
                (
                    an.daily(s, an.Scope(pipeline="triage", since=since, until=until)),
                    an.daily(s, an.Scope(job_ids=(job,), since=since, until=until)),
                    [r for r in an.daily(s, an.Scope(since=since, until=until))
                     if r.pipeline == "triage"],
                )
                for since, until, _ in WINDOWS
            ]  # fmt: skip

    live = windows()
    for (since, until, days), (by_pipeline, by_job, unfiltered) in zip(WINDOWS, live, strict=True):
        assert [r.day.isoformat() for r in by_pipeline] == days, (since, until)
        assert by_pipeline == by_job == unfiltered, (since, until)
    assert rollup.refresh(make_sessionmaker(ledger.engine), grace=timedelta(0)).batches == 1
    assert windows() == live


def test_filters(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        billing = an.totals(s, an.Scope(job_ids=(job,), label="billing"))
        pipeline = an.totals(s, an.Scope(pipeline="triage"))
        late = an.totals(s, an.Scope(since=date(2026, 11, 2), until=date(2026, 11, 2)))
        report = build_report(s, None, an.Scope(pipeline="triage", label="billing"), None)

    assert (billing.items_total, billing.cost_nanos, billing.model_calls) == (2, 1300, 3)
    assert (pipeline.items_total, pipeline.cost_nanos) == (4, 2600)
    assert (late.items_total, late.items_failed) == (1, 1)  # only s was created on the 2nd
    assert report["job_id"] is None and report["items_total"] == 2
    assert [(t["tier"], t["entered"]) for t in report["tiers"]] == [("small", 2), ("large", 1)]


def test_scoped_queries_equal_the_job_report(ledger: Ledger) -> None:
    """On the conftest ledger, the analytics totals and funnel equal models.reports'."""
    with _session(ledger) as s:
        scope = an.Scope(job_ids=(ledger.job_id,))
        assert an.totals(s, scope) == job_totals(s, ledger.job_id)
        assert an.tier_rows(an.funnel(s, scope), ledger.job_id) == tier_rows(s, ledger.job_id)


def test_compare_and_csv(triage: tuple[Ledger, int]) -> None:
    ledger, job = triage
    with _session(ledger) as s:
        a = build_report(s, s.get(Job, ledger.job_id), an.Scope(job_ids=(ledger.job_id,)), None)
        b = build_report(s, s.get(Job, job), an.Scope(job_ids=(job,)), None)
    diff = compare_report(a, b)["diff"]

    assert diff["items_total"] == "-3"  # 4 - 7
    assert diff["cost_usd"] == f"{Decimal('0.000002600') - Decimal('0.082234592'):f}"
    assert diff["small.escalated"] == "1"  # 3 - 2

    import io

    buf = io.StringIO()
    write_report_csv(b, buf)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "section,subject,metric,value"
    assert "funnel,small,escalated,3" in lines
    assert "daily,2026-11-02/triage/large,p95_ms,900" in lines

"""The report counts calls made and compares savings over finished items only
(issues 18 and 21), on SQLite and Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from cascade.render import job_report
from migrations.runner import upgrade
from models import analytics as an
from models import reports
from models.repo import job_by_ref
from tests.integration.conftest import add_attempt, add_item, new_job

SMALL = ("primary", "anthropic", "claude-haiku-5-5")


def _ledger(conn: Any) -> int:
    job_id, sub = new_job(conn, "honest")
    done = [
        add_item(
            conn,
            job_id,
            sub,
            f"d{n}",
            line_no=n,
            text="t",
            meta={},
            status="done",
            tier_index=1,
            cost_nanos=10,
            baseline_nanos=100,
            model_calls=1,
        )
        for n in (1, 2)
    ]
    waiting = add_item(
        conn,
        job_id,
        sub,
        "p",
        line_no=3,
        text="t",
        meta={},
        status="pending",
        tier_index=1,
        cost_nanos=5,
        baseline_nanos=0,
        model_calls=0,
    )
    role, provider, model = SMALL
    common = {
        "tier_index": 1,
        "tier": "small",
        "role": role,
        "provider": provider,
        "model": model,
        "input_tokens": 10,
        "output_tokens": 1,
    }
    for pk in done:
        add_attempt(
            conn,
            job_id,
            pk,
            1,
            outcome="breaker_open",
            decision=None,
            cost_nanos=0,
            latency_ms=0,
            **common,
        )
        add_attempt(
            conn,
            job_id,
            pk,
            2,
            outcome="ok",
            decision="accept",
            cost_nanos=10,
            latency_ms=50,
            **common,
        )
    add_attempt(
        conn,
        job_id,
        waiting,
        1,
        outcome="drill",
        decision=None,
        cost_nanos=0,
        latency_ms=0,
        **common,
    )
    add_attempt(
        conn,
        job_id,
        waiting,
        2,
        outcome="transient",
        decision=None,
        cost_nanos=5,
        latency_ms=40,
        **common,
    )
    return job_id


def test_calls_made_and_savings_over_finished_items(db_url: str) -> None:
    # Given 2 finished items and 1 waiting; 3 steps sent nothing (breaker, drill)
    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        job_id = _ledger(conn)
    with Session(engine) as session:
        totals = an.job_totals(session, job_id)
        tiers = reports.tier_rows(session, job_id)
        report = job_report(job_by_ref(session, job_id), totals, tiers)
    engine.dispose()
    # Then only the 3 requests are calls; the 3 steps that sent nothing are apart
    assert totals.model_calls == 3
    assert totals.steps_not_sent == 3
    assert report["model_calls"] == 3 and report["steps_not_sent"] == 3
    small = next(t for t in report["tiers"] if t["tier"] == "small")
    assert small["calls"] == 3 and small["not_sent"] == 3
    # And savings compare the finished items' cost with their baseline: (200-20)/200
    assert report["partial"] is True
    assert report["baseline_cost_usd"] == "0.000000200"
    assert report["finished_cost_usd"] == "0.000000020"
    assert report["savings_pct"] == 90.0
    assert report["cost_usd"] == "0.000000025"  # what was spent, unfinished included

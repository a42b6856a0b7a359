"""Migrations on SQLite and Postgres: no drift from the models, a clean
downgrade/upgrade cycle, and the reporting views' numbers on a known ledger."""

from __future__ import annotations

import logging
import math
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, pool, text

from migrations import runner
from models.schema import Base
from models.views import REPORT_ITEMS, REPORT_TIERS
from models.views_daily import REPORT_DAILY
from tests.integration.conftest import (
    BASELINE,
    Ledger,
    add_attempt,
    add_item,
    is_postgres,
    new_job,
)

VERSIONS = Path(runner.__file__).parent / "versions"
# Every table the models declare (models.schema gathers them all), and nothing else.
TABLES = set(Base.metadata.tables)


def _schema(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        insp = inspect(engine)
        return set(insp.get_table_names()), set(insp.get_view_names())
    finally:
        engine.dispose()


def _usd(url: str, value: Any, expected: str) -> None:
    """cost_usd is an exact numeric on Postgres, a REAL on SQLite."""
    if is_postgres(url):
        assert isinstance(value, Decimal)
        assert value == Decimal(expected)
    else:
        assert value == pytest.approx(float(expected), abs=1e-12)


def test_upgrade_has_no_drift_and_is_at_head(db_url: str) -> None:
    assert runner.current(db_url) is None
    assert not runner.is_at_head(db_url)

    runner.upgrade(db_url)

    assert runner.check(db_url) == []
    assert runner.is_at_head(db_url)
    assert runner.current(db_url) == runner.head()
    assert runner.head() == sorted(p.name[11:15] for p in VERSIONS.glob("2026_*.py"))[-1]
    tables, views = _schema(db_url)
    assert tables == TABLES | {"alembic_version"}
    assert views == {REPORT_ITEMS, REPORT_TIERS, REPORT_DAILY}


def test_check_reports_drift(db_url: str) -> None:
    runner.upgrade(db_url)
    engine = create_engine(db_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_items_status_lease"))
    finally:
        engine.dispose()

    drift = runner.check(db_url)

    assert len(drift) == 1
    assert "add_index" in drift[0] and "ix_items_status_lease" in drift[0]


def test_downgrade_to_base_then_upgrade_again(db_url: str) -> None:
    runner.upgrade(db_url)
    runner.downgrade(db_url, "base")

    assert runner.current(db_url) is None
    assert _schema(db_url) == ({"alembic_version"}, set())

    runner.upgrade(db_url)

    assert runner.is_at_head(db_url)
    assert runner.check(db_url) == []
    assert _schema(db_url)[1] == {REPORT_ITEMS, REPORT_TIERS, REPORT_DAILY}


def test_runner_works_from_any_cwd(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    runner.upgrade(sqlite_url)

    assert runner.is_at_head(sqlite_url)
    assert list(elsewhere.iterdir()) == []  # nothing written to the cwd (no cascade.db)


def test_upgrade_leaves_application_logging_alone(sqlite_url: str) -> None:
    app_logger = logging.getLogger("cascade.test_migrations")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    runner.upgrade(sqlite_url)

    assert not app_logger.disabled  # fileConfig() would have disabled it
    assert root.handlers == handlers
    assert root.level == level


def test_report_items(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM report_items WHERE job_id = :job ORDER BY item_pk"),
            {"job": ledger.job_id},
        ).all()

    assert list(rows[0]._fields) == [
        "job_id",
        "item_id",
        "status",
        "label",
        "tier",
        "confidence",
        "cost_usd",
        "latency_ms",
        "attempts",
        "fallback_used",
        "item_pk",
        "baseline_usd",
    ]
    got = {r.item_id: r for r in rows}
    assert list(got) == ["a", "b", "c", "d", "e", "f", "g"]
    expected = {
        # key: status, label, tier, confidence, cost_usd, latency, attempts, fallback
        "a": ("done", "spam", "small", 0.91, "0.001234567", 100, 1, False),
        "b": ("done", "ham", "rules", 1.0, "0", 0, 0, False),
        "c": ("done", "spam", "large", 0.88, "0.042000010", 1250, 3, False),
        "d": ("done", "ham", "large", 0.75, "0.038000016", 1900, 4, True),
        "e": ("failed", None, None, None, "0.000999999", 150, 1, False),
        "f": ("pending", None, None, None, "0", 0, 0, False),
        "g": ("running", None, None, None, "0", 0, 0, False),
    }
    for key, (status, label, tier, conf, cost, latency, attempts, fallback) in expected.items():
        row = got[key]
        assert row.job_id == ledger.job_id
        assert row.item_pk == ledger.items[key]
        assert (row.status, row.label, row.tier) == (status, label, tier)
        assert row.confidence == conf
        _usd(ledger.url, row.cost_usd, cost)
        _usd(ledger.url, row.baseline_usd, str(Decimal(BASELINE).scaleb(-9)))  # 0.020000001
        assert (row.latency_ms, row.attempts, bool(row.fallback_used)) == (
            latency,
            attempts,
            fallback,
        )


TIER_COLUMNS = [
    "job_id",
    "tier_index",
    "tier",
    "entered",
    "accepted",
    "escalated",
    "failed",
    "calls",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "p50_ms",
    "p95_ms",
    "fallbacks",
]


def test_report_tiers(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM report_tiers WHERE job_id = :job ORDER BY tier_index"),
            {"job": ledger.job_id},
        ).all()

    assert list(rows[0]._fields) == TIER_COLUMNS
    got = [tuple(r) for r in rows]
    costs = [r[10] for r in got]
    without_cost = [r[:10] + r[11:] for r in got]
    j = ledger.job_id
    assert without_cost == [
        # entered, accepted, escalated, failed, calls, in, out, | p50, p95, fallbacks
        (j, 0, "rules", 6, 1, 5, 0, 0, 0, 0, None, None, 0),
        # small latencies 50,100,150,200,300: p50 = rank 3, p95 = rank 5
        (j, 1, "small", 4, 1, 2, 1, 5, 490, 49, 150, 300, 0),
        # large latencies 400,500,700,1000: p50 = rank 2 (not 600 interpolated), p95 = rank 4
        (j, 2, "large", 2, 2, 0, 0, 4, 1100, 110, 500, 1000, 1),
    ]
    for value, expected in zip(costs, ["0", "0.007234574", "0.075000018"], strict=True):
        _usd(ledger.url, value, expected)

    with ledger.engine.connect() as conn:
        other = conn.execute(
            text("SELECT tier, calls, p50_ms FROM report_tiers WHERE job_id = :job"),
            {"job": ledger.other_job_id},
        ).all()
    assert sorted(tuple(r) for r in other) == [("rules", 0, None), ("small", 1, 5)]


def _nearest_rank(values: list[int], p: int) -> int:
    return sorted(values)[math.ceil(p * len(values) / 100) - 1]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 10, 19, 20, 21, 40, 101])
def test_report_tiers_percentiles_are_nearest_rank(db_url: str, n: int) -> None:
    runner.upgrade(db_url)
    rng = random.Random(n)
    latencies = [rng.randrange(1, 5000) for _ in range(n)]
    engine = create_engine(db_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            job_id, sub_id = new_job(conn, f"p{n}")
            item = add_item(conn, job_id, sub_id, "x", meta={})
            # A rules step with a huge latency must not count: only model calls do.
            add_attempt(conn, job_id, item, 1, tier_index=0, tier="small", role="rules",
                        provider="rules", model="rules", outcome="rule_miss",
                        latency_ms=999_999)  # fmt: skip
            for step, latency in enumerate(latencies, start=2):
                add_attempt(conn, job_id, item, step, tier_index=0, tier="small",
                            role="primary" if step % 3 else "fallback", provider="anthropic",
                            model="m", outcome="ok", latency_ms=latency)  # fmt: skip
            row = conn.execute(
                text("SELECT calls, p50_ms, p95_ms FROM report_tiers WHERE job_id = :j"),
                {"j": job_id},
            ).one()
    finally:
        engine.dispose()

    assert tuple(row) == (n, _nearest_rank(latencies, 50), _nearest_rank(latencies, 95))

"""models.reports on the hand-built ledger (conftest.py), on SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from models import analytics as an
from models import reports
from models.reports import TierRow
from tests.integration.conftest import Ledger


@pytest.fixture
def session(ledger: Ledger) -> Iterator[Session]:
    with Session(ledger.engine) as s:
        yield s


def test_tier_rows(ledger: Ledger, session: Session) -> None:
    rows = reports.tier_rows(session, ledger.job_id)

    j = ledger.job_id
    assert rows == [
        TierRow(j, 0, "rules", 6, 1, 5, 0, 0, 0, 0, Decimal("0E-9"), None, None, 0),
        TierRow(j, 1, "small", 4, 1, 2, 1, 5, 490, 49, Decimal("0.007234574"), 150, 300, 0),
        TierRow(j, 2, "large", 2, 2, 0, 0, 4, 1100, 110, Decimal("0.075000018"), 500, 1000, 1),
    ]
    assert all(r.cost_usd.as_tuple().exponent == -9 for r in rows)
    assert reports.tier_rows(session, 999_999) == []


def test_tier_rows_of_other_job(ledger: Ledger, session: Session) -> None:
    rows = reports.tier_rows(session, ledger.other_job_id)

    assert [(r.tier, r.calls, r.cost_usd, r.p50_ms) for r in rows] == [
        ("rules", 0, Decimal("0"), None),
        ("small", 1, Decimal("0.000000777"), 5),
    ]


def test_job_totals(ledger: Ledger, session: Session) -> None:
    t = an.job_totals(session, ledger.job_id)

    assert t.job_id == ledger.job_id
    assert t.items_total == 7
    assert dict(t.by_status) == {"pending": 1, "running": 1, "fallback": 0, "done": 4, "failed": 1}
    assert (t.items_done, t.items_failed, t.lines_rejected) == (4, 1, 2)
    assert t.cost_nanos == 82_234_592
    assert t.cost_usd == Decimal("0.082234592")
    assert t.baseline_nanos == 7 * 20_000_001
    assert t.baseline_usd == Decimal("0.140000007")
    assert t.model_calls == 9
    assert (t.input_tokens, t.output_tokens) == (1590, 159)


def test_job_totals_of_unknown_job_are_zero(ledger: Ledger, session: Session) -> None:
    t = an.job_totals(session, 999_999)

    assert t.items_total == t.cost_nanos == t.input_tokens == t.lines_rejected == 0
    assert set(t.by_status.values()) == {0}


def _count_item_selects(ledger: Ledger) -> list[str]:
    seen: list[str] = []

    def listener(_conn: Any, _cur: Any, statement: str, *_args: Any) -> None:
        if "FROM items" in statement:
            seen.append(statement)

    event.listen(ledger.engine, "before_cursor_execute", listener)
    return seen


@pytest.mark.parametrize(("batch", "queries"), [(2, 4), (3, 3), (7, 2), (1000, 1)])
def test_iter_outcomes_pages_with_keyset(
    ledger: Ledger, session: Session, batch: int, queries: int
) -> None:
    seen = _count_item_selects(ledger)

    rows = list(reports.iter_outcomes(session, ledger.job_id, batch=batch))

    assert [r.item_id for r in rows] == ["a", "b", "c", "d", "e", "f", "g"]
    assert [r.pk for r in rows] == sorted(ledger.items.values())
    assert len(seen) == queries  # 7 items: ceil(7 / batch) pages, + 1 empty page when exact
    if batch < 7:
        assert all("LIMIT" in s for s in seen)


def test_iter_outcomes_rows(ledger: Ledger, session: Session) -> None:
    rows = {r.item_id: r for r in reports.iter_outcomes(session, ledger.job_id, batch=2)}

    d = rows["d"]
    assert (d.label, d.tier, d.confidence, d.cost_nanos, d.latency_ms, d.status, d.error) == (
        "ham",
        "large",
        0.75,
        38_000_016,
        1900,
        "done",
        None,
    )
    assert d.metadata == {"source_line": 4, "key": "d"}
    e = rows["e"]
    assert (e.status, e.label, e.tier, e.error) == ("failed", None, None, "malformed output")
    other = list(reports.iter_outcomes(session, ledger.other_job_id, batch=2))
    assert [(r.item_id, r.cost_nanos) for r in other] == [("a", 777)]


def test_iter_outcomes_is_lazy(ledger: Ledger, session: Session) -> None:
    seen = _count_item_selects(ledger)
    it = reports.iter_outcomes(session, ledger.job_id, batch=2)

    assert seen == []
    assert next(it).item_id == "a"
    assert next(it).item_id == "b"
    assert len(seen) == 1


def test_iter_outcomes_rejects_bad_batch(ledger: Ledger, session: Session) -> None:
    with pytest.raises(ValueError, match="batch"):
        list(reports.iter_outcomes(session, ledger.job_id, batch=0))


def test_progress(ledger: Ledger, session: Session) -> None:
    seen = _count_item_selects(ledger)

    p = reports.progress(session, ledger.job_id)

    assert p == {
        "pending": 1,
        "running": 1,
        "fallback": 0,
        "done": 4,
        "failed": 1,
        "total": 7,
        "pending:0": 1,
        "running:1": 1,
    }
    assert len(seen) == 1 and "GROUP BY" in seen[0]


def test_rejected(ledger: Ledger, session: Session) -> None:
    rows = reports.rejected(session, ledger.job_id)

    assert [(r.source, r.line_no, r.reason, r.raw) for r in rows] == [
        ("main.jsonl", 3, "invalid JSON", "raw line 3"),
        ("main.jsonl", 7, "missing field: text", "raw line 7"),
    ]
    assert [r.line_no for r in reports.rejected(session, ledger.job_id, limit=1)] == [3]
    assert [r.source for r in reports.rejected(session, ledger.other_job_id)] == ["other.jsonl"]

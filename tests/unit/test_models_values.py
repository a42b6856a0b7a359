"""The ledger's pure values, no database: the columns a tier visit's verdict sets
(models.ledger.settled_values), the shape of an attempt row (models.attempt_rows),
which texts count as repeats (models.reuse hashing), and the dialect guard."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from common.lifecycle import TRANSITIONS, Verdict
from models.attempt_rows import EMPTY, attempt_row
from models.core import dialect_insert
from models.ledger import Settled, settled_values
from models.repo import NewItem
from models.reuse import Hasher, normalise, pipeline_version

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
LEASE_CLEARED = {"lease_token": None, "lease_until": None, "updated_at": NOW}


def visit(decision: Verdict, **values: Any) -> Settled:
    base: dict[str, Any] = {
        "pk": 5, "decision": decision, "tier_index": 1, "tier": "small", "steps": 4,
        "model_calls": 2, "cost_nanos": 900, "latency_ms": 120, "fallback_used": False,
        "baseline_nanos": 5_000, "label": "spam", "confidence": 0.8, "reason": "r",
        "error": "e", "error_kind": "transient",
    }  # fmt: skip
    return Settled(**(base | values))


COUNTERS = {"model_calls": 2, "cost_nanos": 900, "latency_ms": 120, "steps": 4}
FINAL = {
    "label": "spam", "confidence": 0.8, "reason": "r", "final_tier": "small", "error": "e",
    "baseline_nanos": 5_000, "finished_at": NOW, "tier_index": 1, "deferrals": 0,
}  # fmt: skip
KEEPS_ERROR = {"error": "e", "error_kind": "transient", "tier_index": 1}


# The columns each verdict sets beyond the cleared lease and the visit's counters.
BY_VERDICT: dict[Verdict, dict[str, Any]] = {
    Verdict.ACCEPT: {"status": "done", **FINAL},
    Verdict.FAIL: {"status": "failed", **FINAL},
    Verdict.CAPPED: {"status": "budget_capped", **FINAL},
    Verdict.REVIEW: {"status": "review", **FINAL},
    # the next tier, carrying the lower tier's answer in case a budget caps the item
    Verdict.ESCALATE: {"status": "pending", "tier_index": 2, "deferrals": 0, "label": "spam",
                       "confidence": 0.8},
    Verdict.FALLBACK: {"status": "fallback", "deferrals": 0, **KEEPS_ERROR},
    Verdict.DEFER: {"status": "fallback", "deferrals": 1, **KEEPS_ERROR},  # one more deferral
    Verdict.PAUSE: {"status": "paused", "deferrals": 0, **KEEPS_ERROR},
    Verdict.HOLD: {"status": "paused_budget", "deferrals": 0, **KEEPS_ERROR},
}  # fmt: skip


@pytest.mark.parametrize("decision", list(BY_VERDICT))
def test_each_verdict_sets_exactly_its_columns(decision: Verdict) -> None:
    expected = LEASE_CLEARED | COUNTERS | BY_VERDICT[decision]
    assert settled_values(visit(decision), NOW, False) == expected


def test_every_verdict_of_the_lifecycle_is_in_the_table_above() -> None:
    # a verdict added to the lifecycle without its columns being thought about fails here
    assert set(BY_VERDICT) == set(TRANSITIONS) == set(Verdict)


def test_an_escalation_without_an_answer_leaves_the_label_alone() -> None:
    values = settled_values(visit(Verdict.ESCALATE, label=None, confidence=None), NOW, False)

    assert "label" not in values and "confidence" not in values  # an earlier answer stays
    assert values["tier_index"] == 2


@pytest.mark.parametrize("decision", [Verdict.ACCEPT, Verdict.FAIL, Verdict.REVIEW])
def test_drop_text_forgets_the_text_of_a_finished_item_only(decision: Verdict) -> None:
    assert settled_values(visit(decision), NOW, True)["text"] is None
    assert "text" not in settled_values(visit(Verdict.ESCALATE), NOW, True)
    assert "text" not in settled_values(visit(Verdict.DEFER), NOW, True)


def test_unchanged_steps_and_a_fallback_flag_are_set_only_when_given() -> None:
    plain = settled_values(visit(Verdict.ACCEPT, steps=None), NOW, False)
    assert "steps" not in plain and "fallback_used" not in plain  # never unset by a visit

    flagged = settled_values(visit(Verdict.ACCEPT, fallback_used=True), NOW, False)
    assert flagged["fallback_used"] is True


def test_an_attempt_row_is_the_empty_row_with_what_the_writer_gives() -> None:
    head = {
        "job_id": 1, "item_id": 2, "step": 3, "tier_index": 0, "tier": "rules",
        "role": "rules", "provider": "rules", "model": "rules", "outcome": "rule_match",
    }  # fmt: skip
    assert attempt_row(**head) == head | EMPTY
    assert attempt_row(**head, decision="accept", label="spam", reuse_of=9) == (
        head | EMPTY | {"decision": "accept", "label": "spam", "reuse_of": 9}
    )


def test_an_attempt_row_refuses_a_column_the_table_does_not_have() -> None:
    with pytest.raises(TypeError, match=r"^attempts has no column \['costs', 'tokens'\]$"):
        attempt_row(
            job_id=1, item_id=2, step=3, tier_index=0, tier="t", role="primary", provider="p",
            model="m", outcome="ok", tokens=5, costs=1,
        )  # fmt: skip


def test_the_ledger_refuses_a_database_other_than_postgres_or_sqlite() -> None:
    session: Any = SimpleNamespace(
        get_bind=lambda: SimpleNamespace(dialect=SimpleNamespace(name="mysql"))
    )
    with pytest.raises(RuntimeError, match="unsupported database 'mysql': use Postgres or SQLite"):
        dialect_insert(session, None)


# -- repeats of a text -------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("buy now", "  buy   now \n"),  # runs of whitespace, ends trimmed
        ("buy\tnow", "buy\u00a0now"),  # a tab and a no-break space are whitespace too
        ("ＢＵＹ ｎｏｗ", "BUY now"),  # full-width forms (NFKC)
        ("ﬁne", "fine"),  # a ligature (NFKC)
    ],
)
def test_texts_that_differ_only_in_form_are_repeats(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)
    h = Hasher(pipeline_version({"name": "p"}))
    assert h(a) == h(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("BUY NOW", "buy now"),  # case is kept: shouting can be what a policy judges
        ("buy now", "buy now!"),
        ("buynow", "buy now"),
    ],
)
def test_texts_that_differ_in_content_are_not_repeats(a: str, b: str) -> None:
    h = Hasher(pipeline_version({"name": "p"}))
    assert h(a) != h(b)


def test_the_pipeline_version_is_what_shapes_a_decision() -> None:
    base = {"name": "p", "labels": ["a", "b"], "tiers": [{"name": "rules"}]}
    version = pipeline_version(base)

    # key order and the settings that never change an answer leave it as it is
    assert pipeline_version(dict(reversed(list(base.items())))) == version
    extras = {"reuse": False, "reuse_days": 30, "store_text": False, "daily_budget_usd": 5,
              "limits": {"rpm": 50}}  # fmt: skip
    assert pipeline_version(base | extras) == version
    # anything else is another version, and the same text hashes apart under it
    other = pipeline_version(base | {"labels": ["a", "b", "c"]})
    assert other != version
    assert Hasher(version)("same text") != Hasher(other)("same text")


def test_a_text_hash_fits_a_signed_bigint_and_stamps_items() -> None:
    h = Hasher(pipeline_version({"name": "p"}))
    items = [
        NewItem(1, "k1", "hello", {}),
        NewItem(2, "k2", " hello ", {}),
        NewItem(3, "k3", "x", {}),
    ]

    h.stamp(items)

    hashes = [it.text_hash for it in items]
    assert hashes[0] == hashes[1] == h("hello") and hashes[2] != hashes[0]
    assert all(h is not None and -(2**63) <= h < 2**63 for h in hashes)
    assert h("hello") == Hasher(pipeline_version({"name": "p"}))("hello")  # stable

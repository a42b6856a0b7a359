"""Quality end to end on the embedded runtime (SQLite) and the fake Messages API:
shadow samples, a verifier and a consistency check, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import PIPELINE, TICKETS, run
from workers.decision import shadow_sampled

pytestmark = pytest.mark.e2e


def _sample(tmp_path: Path, n: int = 40) -> Path:
    good: list[str] = []
    seen: set[str] = set()
    for line in TICKETS.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("text") and row.get("id") not in seen:
            seen.add(row["id"])
            good.append(line)
    path = tmp_path / "sample.jsonl"
    path.write_text("\n".join(good[:n]) + "\n")
    return path


def _pipeline(tmp_path: Path, name: str, small_accept: str = "", **rates: float) -> Path:
    """support_triage.toml with shadow rates and extra [tiers.accept] lines for small."""
    src = PIPELINE.read_text()
    src = src.replace('name = "support-triage"', f'name = "{name}"')
    # prompt caching off: a later job would read the prefix an earlier one cached, and
    # cost less for a reason that is not the one compared here
    src = src.replace('kind = "claude"\n', 'kind = "claude"\ncache = "off"\n')
    if "rules" in rates:
        src = src.replace('kind = "rules"\n', f'kind = "rules"\nshadow_rate = {rates["rules"]}\n')
    if "small" in rates:
        src = src.replace("max_tokens = 200", f"max_tokens = 200\nshadow_rate = {rates['small']}")
    if small_accept:
        src = src.replace("reject_hedging = true", f"reject_hedging = true\n{small_accept}")
    path = tmp_path / f"{name}.toml"
    path.write_text(src)
    return path


def _submit(env: dict[str, str], data: Path, pipeline: Path, job: str) -> dict[str, Any]:
    done = run(env, "submit", str(data), "--pipeline", str(pipeline), "--wait", "--job-name", job)
    assert done.returncode == 0, done.stderr
    report = run(env, "report", "--job", job, "-f", "json")
    assert report.returncode == 0, report.stderr
    out: dict[str, Any] = json.loads(report.stdout)
    return out


def _rows(env: dict[str, str], sql: str, **params: Any) -> list[Any]:
    engine = create_engine(env["CASCADE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def _items(env: dict[str, str], job: str) -> dict[str, Any]:
    rows = _rows(
        env,
        "SELECT i.item_key, i.id, i.job_id, i.status, i.label, i.final_tier, i.cost_nanos,"
        " i.model_calls, i.baseline_nanos FROM items i JOIN jobs j ON j.id = i.job_id"
        " WHERE j.name = :job",
        job=job,
    )
    return {r.item_key: r for r in rows}


def _attempts(env: dict[str, str], job: str) -> list[Any]:
    return _rows(
        env,
        "SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.name = :job"
        " ORDER BY a.item_id, a.step",
        job=job,
    )


def test_shadow_samples_are_recorded_and_change_no_outcome(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Given the same tickets run without and with shadow sampling
    data = _sample(tmp_path)
    plain = _submit(env, data, _pipeline(tmp_path, "plain"), "plain")
    shadowed = _submit(env, data, _pipeline(tmp_path, "shadowed", rules=1.0, small=0.5), "shadowed")
    before, after = _items(env, "plain"), _items(env, "shadowed")
    attempts = _attempts(env, "shadowed")
    shadows = [a for a in attempts if a.role == "shadow"]

    # Then every item has the same outcome, cost, calls and baseline as without shadows
    assert before.keys() == after.keys()
    for key, b in before.items():
        a = after[key]
        assert (a.status, a.label, a.final_tier, a.cost_nanos, a.model_calls, a.baseline_nanos) == (
            b.status, b.label, b.final_tier, b.cost_nanos, b.model_calls, b.baseline_nanos,
        ), key  # fmt: skip
    # And the shadowed items are exactly the sampled ones of those each tier accepted
    expected: set[tuple[int, int]] = set()
    for it in after.values():
        index = {"rules": 0, "small": 1}.get(it.final_tier)
        rate = 1.0 if index == 0 else 0.5
        if index is not None and shadow_sampled(it.job_id, it.id, index, rate):
            expected.add((it.id, index + 1))
    assert {(s.item_id, s.tier_index) for s in shadows} == expected
    assert {s.tier_index for s in shadows} == {1, 2}  # rules -> small, small -> large
    assert all(s.decision is None for s in shadows)
    assert all(
        s.model == ("claude-haiku-5-5" if s.tier_index == 1 else "claude-sonnet-5-5")
        for s in shadows
    )
    # And each item's cost is its non-shadow attempts' cost
    for it in after.values():
        own = [a for a in attempts if a.item_id == it.id and a.role != "shadow"]
        assert it.cost_nanos == sum(a.cost_nanos for a in own)
    # And report_tiers (the tier table) counts no shadow: same funnel as without them
    strip = ("job_id",)
    assert [
        {k: v for k, v in t.items() if k not in strip and not k.endswith("_ms")}
        for t in shadowed["tiers"]
    ] == [
        {k: v for k, v in t.items() if k not in strip and not k.endswith("_ms")}
        for t in plain["tiers"]
    ]
    assert shadowed["cost_usd"] == plain["cost_usd"]
    # And the calibration spend is the shadows' cost, reported beside the items' cost
    spend = sum(s.cost_nanos for s in shadows)
    assert spend > 0
    assert shadowed["cost"]["calibration_usd"] == f"{spend / 1e9:.9f}"
    assert shadowed["calibration"]["samples"] == len(shadows)
    assert plain["cost"]["calibration_usd"] == "0.000000000"
    table = run(env, "report", "--job", "shadowed")
    assert re.search(r"calibration spend \(shadow samples\): \$0\.\d{4}", table.stdout)


def test_verifier_escalates_what_it_is_unsure_of(env: dict[str, str], tmp_path: Path) -> None:
    # Given small keeps answers from 0.3 up, but a verifier must say "correct" at >= 0.7
    accept = 'min_confidence = 0.3\nverifier = { model = "claude-haiku-4-5", min_confidence = 0.7 }'
    pipe = _pipeline(tmp_path, "verified", small_accept=accept)
    pipe.write_text(pipe.read_text().replace("min_confidence = 0.8", "", 1))
    report = _submit(env, _sample(tmp_path), pipe, "verified")
    items, attempts = _items(env, "verified"), _attempts(env, "verified")
    verdicts = {a.item_id: a for a in attempts if a.role == "verifier"}
    by_pk = {it.id: it for it in items.values()}

    assert report["status"] == "done" and verdicts
    for pk, v in verdicts.items():
        it = by_pk[pk]
        assert (v.tier, v.tier_index, v.decision) == ("small", 1, None)
        accepted = v.label == "correct" and v.confidence >= 0.7
        # Then an item stays at small only with a confident "correct" verdict
        assert (it.final_tier == "small") is accepted
        if not accepted:
            assert v.error.startswith("verifier: ")
            primary = [
                a for a in attempts if a.item_id == pk and a.role == "primary" and a.tier == "small"
            ]
            assert primary[-1].decision == "escalate"
    assert any(
        it.final_tier == "large" for it in (by_pk[pk] for pk in verdicts)
    )  # it rejected some
    assert any(it.final_tier == "small" for it in (by_pk[pk] for pk in verdicts))  # and kept some
    # And the report's confidence sections judge the tier's own answers, not verdicts
    histogram = report["confidence"]["histogram"]
    assert histogram and not {h["label"] for h in histogram} & {"correct", "incorrect"}
    small = next(a for a in report["confidence"]["agreement"] if a["tier"] == "small")
    escalated = [pk for pk in verdicts if by_pk[pk].final_tier == "large"]
    primaries = {a.item_id: a.label for a in attempts if a.tier == "small" and a.role == "primary"}
    assert small["agreed"] == sum(
        1 for it in items.values() if it.final_tier == "large" and primaries.get(it.id) == it.label
    )
    assert small["pairs"] >= len(escalated)
    # And the verifier's cost is part of the item's cost
    for it in items.values():
        assert it.cost_nanos == sum(a.cost_nanos for a in attempts if a.item_id == it.id)


def test_consistency_agreement_accepts_and_disagreement_escalates(
    env: dict[str, str], fake: FakeServer, tmp_path: Path
) -> None:
    accept = 'consistency = { models = ["claude-haiku-4-5"], min_agree = 1.0 }'
    data = _sample(tmp_path, 30)
    # Given a second model that gives the same labels (the fake's brain agrees)
    _submit(env, data, _pipeline(tmp_path, "agree", small_accept=accept), "agree")
    items, attempts = _items(env, "agree"), _attempts(env, "agree")
    checks = {a.item_id: a for a in attempts if a.role == "consistency"}
    # Then every item it checked stays at small, and the check is in its cost
    assert checks
    for pk, check in checks.items():
        it = next(i for i in items.values() if i.id == pk)
        assert it.final_tier == "small" and check.label == it.label
        assert it.cost_nanos == sum(a.cost_nanos for a in attempts if a.item_id == pk)
        assert it.model_calls == 2
    # When that model answers nothing valid
    fake.set_faults("claude-haiku-4-5", malformed_rate=1.0)
    _submit(env, data, _pipeline(tmp_path, "disagree", small_accept=accept), "disagree")
    items, attempts = _items(env, "disagree"), _attempts(env, "disagree")
    checks = {a.item_id: a for a in attempts if a.role == "consistency"}
    # Then no item stays at small: each one checked is escalated with the reason
    assert checks and not any(it.final_tier == "small" for it in items.values())
    for check in checks.values():
        assert check.outcome == "malformed"
        assert check.error.startswith("consistency: 0/1 extra answers agree")

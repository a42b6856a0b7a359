"""Budgets on the distributed runtime (Postgres, Redis, a worker process): a job budget
and a pipeline's daily budget both stop spending at the cap; resume continues."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.integration.harness import PIPELINE, Cluster, write_sample
from tests.integration.test_resilience import broker, cluster, fake  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
CAP_NANOS = 6_000_000  # $0.006: about a third of what 60 tickets cost


def _wait_paused(c: Cluster, job: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = c.progress(job)
        # progress is keyed "status:tier"; every item in flight must have settled
        waiting = ("pending", "running", "fallback", "fallback_running")
        busy = sum(n for key, n in p.items() if key.split(":")[0] in waiting)
        if c.job_status(job) == "paused" and not busy:
            return
        time.sleep(0.3)
    raise AssertionError(f"{job} did not pause: {c.progress(job)}\n{c.logs()}")


def _check_capped(c: Cluster, job: str) -> None:
    spent, cap = c.sql(
        "SELECT spent_nanos, coalesce(budget_nanos, :cap) FROM jobs WHERE name = :job",
        job=job,
        cap=CAP_NANOS,
    )[0]
    cost = c.scalar(
        "SELECT coalesce(sum(a.cost_nanos), 0) FROM attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.name = :job",
        job=job,
    )
    # one worker process: no other batch in flight, so never a nano-dollar over
    assert spent == cost <= cap
    capped = c.sql(
        "SELECT i.label, i.error FROM items i JOIN jobs j ON j.id = i.job_id "
        "WHERE j.name = :job AND i.status = 'budget_capped'",
        job=job,
    )
    waiting = c.scalar(
        "SELECT count(*) FROM items i JOIN jobs j ON j.id = i.job_id "
        "WHERE j.name = :job AND i.status = 'paused_budget'",
        job=job,
    )
    assert capped or waiting
    assert all(label and "budget reached" in error for label, error in capped)


@pytest.mark.timeout(240)
def test_job_budget_then_resume(
    cluster: Cluster,  # noqa: F811 - the imported fixture
    fake: FakeServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    cluster.start_worker("budget", concurrency=1).wait_ready()
    done = cluster.cli(
        "submit",
        str(write_sample(tmp_path, 60)),
        "--pipeline",
        str(PIPELINE),
        "--job-name",
        "capped",
        "--budget",
        f"{CAP_NANOS / 1e9:.3f}",
    )
    assert done.returncode == 0, done.stderr
    _wait_paused(cluster, "capped")
    _check_capped(cluster, "capped")
    report = json.loads(cluster.cli("report", "--job", "capped", "-f", "json").stdout)
    assert report["budget_usd"] == "0.006000000"
    assert report["items_budget_capped"] + report["items_paused_budget"] > 0
    # resume with room: the waiting items finish on the worker
    resumed = cluster.cli("resume", "capped", "--budget", "5")
    assert resumed.returncode == 0, resumed.stderr
    cluster.wait_done("capped", 90)
    assert cluster.scalar("SELECT count(*) FROM items WHERE status = 'paused_budget'") == 0


@pytest.mark.timeout(240)
def test_daily_budget_of_a_pipeline(
    cluster: Cluster,  # noqa: F811 - the imported fixture
    fake: FakeServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    pipeline = tmp_path / "daily.toml"
    pipeline.write_text(
        PIPELINE.read_text().replace(
            "[limits]", f"daily_budget_usd = {CAP_NANOS / 1e9}\n\n[limits]"
        )
    )
    cluster.start_worker("daily", concurrency=1).wait_ready()
    done = cluster.cli(
        "submit",
        str(write_sample(tmp_path, 60)),
        "--pipeline",
        str(pipeline),
        "--job-name",
        "daily",
    )
    assert done.returncode == 0, done.stderr
    _wait_paused(cluster, "daily")
    _check_capped(cluster, "daily")
    day_spend = cluster.scalar("SELECT spent_nanos FROM daily_spend")
    assert day_spend <= CAP_NANOS

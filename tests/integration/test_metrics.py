"""A worker's Prometheus endpoint, scraped during and after a job, agrees with the ledger."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cascade.fakeapi import FakeServer
from tests.integration.test_distributed import (  # the same worker harness
    BIN,
    PIPELINE,
    ROOT,
    _cli,
    _env,
    _sample,
    broker,  # noqa: F401 - fixture
    fake,  # noqa: F401 - fixture
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.fixture
def metrics_worker(
    pg_url: str,
    broker: str,  # noqa: F811 - the imported fixture
    fake: FakeServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> Iterator[tuple[dict[str, str], int]]:
    from migrations.runner import upgrade

    upgrade(pg_url)
    port = _free_port()
    env = _env(pg_url, broker, fake.start()) | {
        "CASCADE_METRICS_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    (tmp_path / "prom").mkdir()
    proc = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "tasks.app",
            "worker",
            "-Q",
            "tier.rules,tier.small,tier.large,cascade.fallback",
            "-c",
            "2",
            "-n",
            "metrics@%h",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield env, port
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize("at_submit", [False, True], ids=["rules_in_worker", "rules_at_submit"])
def test_metrics_match_the_ledger(
    metrics_worker: tuple[dict[str, str], int], pg_url: str, tmp_path: Path, at_submit: bool
) -> None:
    env, port = metrics_worker
    done = _cli(
        env | {"CASCADE_RULES_AT_SUBMIT": str(at_submit).lower()},
        "submit",
        str(_sample(tmp_path, 80)),
        "--pipeline",
        str(PIPELINE),
        "--wait",
        "--job-name",
        "metrics",
    )
    assert done.returncode == 0, done.stderr
    m = _scrape(port)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        calls = dict(
            conn.execute(
                text(
                    "SELECT model, count(*) FROM attempts"
                    " WHERE role NOT IN ('rules', 'reuse') GROUP BY model"
                )
            ).all()
        )
        # with rules at submit, `cascade submit` decides the rules tier: its decisions
        # are in the ledger, not in the workers' metrics
        decisions = dict(
            conn.execute(
                text(
                    "SELECT decision, count(*) FROM attempts WHERE decision IS NOT NULL"
                    " AND role <> 'reuse'"  # repeats took a decision: no tier made one
                    " AND (role <> 'rules' OR NOT :at_submit) GROUP BY decision"
                ),
                {"at_submit": at_submit},
            ).all()
        )
        by_rules = conn.execute(
            text("SELECT count(*) FROM attempts WHERE role = 'rules' AND decision = 'accept'")
        ).scalar_one()
    engine.dispose()
    for model, n in calls.items():
        assert m[f'cascade_calls_total{{model="{model}",outcome="ok"}}'] == n
    accepted = sum(
        v for k, v in m.items() if k.startswith("cascade_items_total") and 'decision="accept"' in k
    )
    assert accepted == decisions["accept"] == (80 - by_rules if at_submit else 80)
    assert by_rules > 0
    assert any('tier="rules"' in k for k in m) is not at_submit
    escalated = sum(v for k, v in m.items() if k.startswith("cascade_escalations_total"))
    assert escalated == decisions["escalate"]
    assert m['cascade_queue_depth{queue="tier.small"}'] == 0

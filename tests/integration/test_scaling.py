"""Scaling out: two worker processes per tier queue, two jobs submitted at once —
nothing lost, nothing counted twice, and each job's report is its own."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.integration.harness import BIN, PIPELINE, QUEUES, ROOT, Cluster, write_sample
from tests.integration.test_resilience import broker, cluster, fake  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.mark.timeout(300)
def test_two_workers_per_queue_and_two_concurrent_jobs(
    cluster: Cluster,  # noqa: F811 - the imported fixture
    fake: FakeServer,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    # Given two worker processes on every tier queue (as on two hosts), small batches
    # (the rules tier's too: at its default of 1,000 each job is one message, and one
    # worker holding a batch and a prefetched one can take both), and the rules tier
    # sent through its queue rather than decided at submit
    cluster.knobs |= {
        "CASCADE_BATCH_SIZE": "10",
        "CASCADE_FREE_BATCH_SIZE": "10",
        "CASCADE_RULES_AT_SUBMIT": "false",
    }
    for queue in QUEUES:
        for host in ("a", "b"):
            cluster.start_worker(f"{queue}-{host}", concurrency=1, queues=[queue])
    for worker in cluster.workers:
        worker.wait_ready()
    files = {
        "first": write_sample(tmp_path, 60, name="first.jsonl"),
        "second": write_sample(tmp_path, 60, skip=60, name="second.jsonl"),
    }
    # When two submitters send a job each, at the same time
    submits = [
        subprocess.Popen(
            [
                str(BIN / "cascade"),
                "submit",
                str(path),
                "--pipeline",
                str(PIPELINE),
                "--job-name",
                job,
                "--wait",
            ],
            cwd=ROOT,
            env=cluster.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job, path in files.items()
    ]
    for proc in submits:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, out + err + cluster.logs()
    # Then every item of both jobs has exactly one outcome and the ledger matches the
    # calls the model API saw and the items' costs
    cluster.check_ledger(120)
    # And each job's report counts only its own items, calls and money
    for job in files:
        report = json.loads(cluster.cli("report", "--job", job, "--format", "json").stdout)
        own = cluster.sql(
            "SELECT count(*), coalesce(sum(a.cost_nanos), 0) FROM attempts a "
            "JOIN jobs j ON j.id = a.job_id WHERE j.name = :job"
            " AND a.role NOT IN ('rules', 'reuse')",
            job=job,
        )[0]
        assert report["status"] == "done"
        assert report["items_total"] == report["items_done"] == 60
        assert report["model_calls"] == own[0]
        assert Decimal(report["cost_usd"]) * 10**9 == own[1]
    # And both hosts of a tier did work (the queue was shared, not owned)
    busy = [w.name for w in cluster.workers if cluster.settled_batches(w)]
    assert {"tier.rules-a", "tier.rules-b", "tier.small-a", "tier.small-b"} <= set(busy)

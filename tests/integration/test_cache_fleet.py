"""Warm before fan-out: a fleet writes a (model, prefix) once, whatever its workers and slots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from migrations.runner import upgrade
from tests.integration.harness import Cluster, flushdb, redis_client, write_sample
from tests.services import require_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[Cluster, FakeServer]]:
    client = redis_client()
    require_service("redis", client.ping)
    client.close()
    flushdb()
    upgrade(pg_url)
    with FakeServer(latency_ms=40, jitter_ms=5, seed=5) as fake:
        c = Cluster(pg_url, tmp_path, [fake])
        try:
            yield c, fake
        finally:
            c.close()
            flushdb()


def test_three_workers_of_four_slots_write_each_prefix_once(
    cluster: tuple[Cluster, FakeServer], tmp_path: Path
) -> None:
    c, fake = cluster
    # Given three worker processes, four slots each (12 calls may start at once)
    workers = [c.start_worker(f"w{n}", concurrency=4, CASCADE_CONCURRENCY="4") for n in range(3)]
    for w in workers:
        w.wait_ready()
    # When a job of 200 tickets runs (the rules tier sends most to the model tiers)
    c.submit(write_sample(tmp_path, 200), "fleet", wait=False)
    c.wait_done("fleet", timeout=180, sweep_when_stalled=10)
    # Then every (model, prefix) was written once, and every other call read it
    cache = fake.stats()["cache"]
    calls = {m: s["calls"] for m, s in fake.stats()["by_model"].items()}
    assert cache, "no prefix was cached"
    for model, seen in cache.items():
        assert seen["prefixes"] == 1, (model, seen)
        assert seen["writes"] == 1, (model, seen)
        assert seen["reads"] == calls[model] - 1, (model, seen, calls)
    # And the ledger agrees with the fake, call by call
    rows = c.sql(
        "SELECT model, SUM(CASE WHEN cache_write_tokens > 0 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN cache_read_tokens > 0 THEN 1 ELSE 0 END) FROM attempts "
        "WHERE role NOT IN ('rules', 'reuse') GROUP BY model"
    )
    assert {m: (int(w), int(r)) for m, w, r in rows} == {
        m: (s["writes"], s["reads"]) for m, s in cache.items()
    }

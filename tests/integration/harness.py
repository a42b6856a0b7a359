"""A small harness for the resilience tests: the distributed runtime for real.

Postgres (a fresh database per test), Redis db 15 as broker and breaker store,
prefork Celery workers in subprocesses (each in its own process group, so a test
can ``kill -9`` exactly what it started), the fake Messages API in-process, and
the ``cascade`` CLI in subprocesses. After a scenario, :meth:`Cluster.check_ledger`
checks the invariants every scenario must keep and returns the figures it saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
from sqlalchemy import Engine, create_engine, pool, text

from cascade.fakeapi import FakeServer
from tests.services import service_redis_url

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PIPELINE = ROOT / "examples" / "support_triage.toml"
TICKETS = ROOT / "examples" / "tickets.jsonl"
REDIS_DB = 15
REDIS_URL = service_redis_url(REDIS_DB)
QUEUES = ("tier.rules", "tier.small", "tier.large", "cascade.fallback")

PRIMARY = "claude-haiku-5-5"  # the small tier's primary
FALLBACK = "claude-haiku-4-5"  # ... and its fallback
PRIMARY_KEY = f"anthropic:{PRIMARY}"
BREAKER_STATE_KEY = f"cascade:breaker:state:{PRIMARY_KEY}"
NO_CALL = ("drill", "breaker_open")  # attempt outcomes for which no HTTP call was made

# Fast knobs shared by every scenario (a scenario overrides what it needs).
BASE_KNOBS: dict[str, str] = {
    "CASCADE_RETRY_BASE_S": "0.01",
    "CASCADE_RETRY_CAP_S": "0.1",
    "CASCADE_MAX_CALL_ATTEMPTS": "3",
    "CASCADE_DEFER_BASE_S": "0.5",
    "CASCADE_DEFER_CAP_S": "2",
    "CASCADE_BREAKER_RECOVERY_S": "1",
    "CASCADE_CALL_TIMEOUT_S": "10",
}


def valid_tickets(n: int, skip: int = 0) -> list[str]:
    """The first ``n`` valid lines of examples/tickets.jsonl (the 3 bad lines left out)."""
    keep: list[str] = []
    seen: set[str] = set()
    for line in TICKETS.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or not row.get("text") or row.get("id") in seen:
            continue
        seen.add(row["id"])
        keep.append(line)
    out = keep[skip : skip + n]
    assert len(out) == n, f"only {len(out)} valid tickets after skipping {skip}"
    return out


def write_sample(directory: Path, n: int, *, skip: int = 0, name: str = "tickets.jsonl") -> Path:
    path = directory / name
    path.write_text("\n".join(valid_tickets(n, skip)) + "\n")
    return path


def flushdb() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            raw = (task / "children").read_text().split()
            found += [int(p) for p in raw]
    except OSError:
        return []
    return found


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        return children_of(self.pid)

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
            if " ready." in self.log() and self.children():
                return
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready in {timeout}s:\n{self.log()[-3000:]}")

    def kill_child(self) -> int:
        """SIGKILL one prefork child (the pool's, not the parent); returns its pid."""
        kids = self.children()
        assert kids, f"worker {self.name} has no child process"
        os.kill(kids[0], signal.SIGKILL)
        return kids[0]

    def kill_all(self) -> None:
        """SIGKILL the whole worker: parent and children (its own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # warm shutdown of the parent; it ends its children
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        # children left behind in the group (a killed parent's orphans): end them too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.log_file.close()


@dataclass
class Ledger:
    """What a scenario left behind, as figures for the report."""

    items: int
    by_status: dict[str, int]
    calls: dict[str, int]  # what the fake server(s) saw, per model
    attempts: dict[str, dict[str, int]]  # model -> outcome -> rows
    fallbacks: int  # items served by a fallback model
    transitions: list[tuple[str, str, str]]  # (from, to, reason) for the primary's breaker
    cost_nanos: int

    def summary(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "status": self.by_status,
            "calls": self.calls,
            "attempts": self.attempts,
            "fallbacks": self.fallbacks,
            "breaker": [f"{a}->{b}" for a, b, _ in self.transitions],
            "cost_nanos": self.cost_nanos,
        }


@dataclass
class Cluster:
    pg_url: str
    tmp: Path
    fakes: list[FakeServer]
    knobs: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    sweeps: int = 0
    resent: int = 0
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = create_engine(self.pg_url, poolclass=pool.NullPool)

    # -- environment and processes ------------------------------------------------
    def env(self, fake: FakeServer | None = None, **extra: str) -> dict[str, str]:
        fake = fake or self.fakes[0]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
        return base | {
            "CASCADE_DATABASE_URL": self.pg_url,
            "CASCADE_BROKER_URL": REDIS_URL,
            "ANTHROPIC_BASE_URL": fake.start(),
            "ANTHROPIC_API_KEY": "sk-ant-test-key-never-logged-0123456789",
            "CASCADE_LOG_FORMAT": "json",
            **BASE_KNOBS,
            **self.knobs,
            **extra,
        }

    def start_worker(
        self,
        name: str,
        *,
        concurrency: int = 2,
        queues: Iterable[str] = QUEUES,
        fake: FakeServer | None = None,
        **extra: str,
    ) -> Worker:
        log_path = self.tmp / f"worker-{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "tasks.app",
                "worker",
                "-Q",
                ",".join(queues),
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env(fake, CASCADE_LOG_LEVEL="INFO", **extra),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches only it
        )
        worker = Worker(name, proc, log_path, log_file)
        self.workers.append(worker)
        return worker

    def cli(
        self, *args: str, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "cascade"), *args],
            cwd=ROOT,
            env=self.env(None, **extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def submit(
        self, path: Path, job: str, *, wait: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        args = ["submit", str(path), "--pipeline", str(PIPELINE), "--job-name", job]
        done = self.cli(*args, *(["--wait"] if wait else []), timeout=timeout)
        assert done.returncode == 0, f"submit failed:\n{done.stdout}\n{done.stderr}\n{self.logs()}"
        return done

    def sweep(self, idle: int = 1) -> int:
        done = self.cli("sweep", "--idle", str(idle), timeout=60)
        assert done.returncode == 0, f"cascade sweep failed:\n{done.stdout}\n{done.stderr[-3000:]}"
        found = re.search(r"re-sent ([\d,]+) items", done.stdout)
        assert found, done.stdout + done.stderr
        return int(found.group(1).replace(",", ""))

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {w.name}\n{w.log()[-tail:]}" for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()
        self.engine.dispose()

    # -- database -------------------------------------------------------------------
    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(query), params).all())

    def scalar(self, query: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).scalar()

    def job_status(self, job: str) -> str | None:
        status = self.scalar("SELECT status FROM jobs WHERE name = :n", n=job)
        return None if status is None else str(status)

    def progress(self, job: str) -> dict[str, int]:
        rows = self.sql(
            "SELECT i.status || ':' || i.tier_index, count(*) FROM items i "
            "JOIN jobs j ON j.id = i.job_id WHERE j.name = :n GROUP BY 1",
            n=job,
        )
        return {k: int(v) for k, v in rows}

    def wait_done(
        self, job: str, timeout: float, *, sweep_when_stalled: float | None = None
    ) -> float:
        """Poll until the job is done. With ``sweep_when_stalled``, run ``cascade sweep
        --idle 1`` whenever its progress has not moved for that many seconds. Returns seconds."""
        t0 = time.monotonic()
        last, moved = self.progress(job), t0
        while time.monotonic() - t0 < timeout:
            if self.job_status(job) == "done":
                return time.monotonic() - t0
            now = self.progress(job)
            if now != last:
                last, moved = now, time.monotonic()
            elif sweep_when_stalled is not None and time.monotonic() - moved >= sweep_when_stalled:
                self.sweeps += 1
                self.resent += self.sweep(1)
                moved = time.monotonic()
            time.sleep(0.2)
        raise AssertionError(
            f"job {job} not done after {timeout}s: {self.progress(job)}\n{self.logs()}"
        )

    def settled_batches(self, worker: Worker) -> list[dict[str, Any]]:
        """The worker's ``cascade.batch.settled`` log records (JSON lines)."""
        out = []
        for line in worker.log().splitlines():
            if '"cascade.batch.settled"' in line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    # -- the invariants ---------------------------------------------------------------
    def fake_calls(self) -> dict[str, int]:
        calls: Counter[str] = Counter()
        for fake in self.fakes:
            for model, s in fake.stats()["by_model"].items():
                calls[model] += s["calls"]
        return {m: n for m, n in calls.items() if n}

    def transitions(self, key: str = PRIMARY_KEY) -> list[tuple[str, str, str]]:
        rows = self.sql(
            "SELECT from_state, to_state, reason FROM breaker_events "
            "WHERE breaker_key = :k ORDER BY at, id",
            k=key,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def check_ledger(self, n_items: int) -> Ledger:
        """Assert the invariants of every scenario; return the figures.

        - every item finished: done with a label, or failed with a recorded reason;
        - per model, attempt rows of real calls == calls the fake server(s) saw (the
          ledger is the bill: a call cut off by a kill is an ``unknown`` row);
        - no row is left ``in_flight``;
        - sum of attempts' cost == sum of items' cost;
        - each done item was decided by exactly one accepted attempt.
        """
        items = self.sql("SELECT status, label, error FROM items")
        assert len(items) == n_items, f"{len(items)} items in the database, {n_items} submitted"
        by_status = Counter(r.status for r in items)
        unfinished = {s: n for s, n in by_status.items() if s not in ("done", "failed")}
        assert not unfinished, f"unfinished items: {unfinished}"
        assert all(r.label for r in items if r.status == "done"), "a done item has no label"
        assert all(r.error for r in items if r.status == "failed"), "a failed item has no reason"
        assert {r[0] for r in self.sql("SELECT status FROM jobs")} == {"done"}

        rows = self.sql(
            "SELECT model, outcome, count(*) FROM attempts WHERE role NOT IN ('rules', 'reuse') "
            "GROUP BY model, outcome"
        )
        attempts: dict[str, dict[str, int]] = {}
        for model, outcome, n in rows:
            attempts.setdefault(model, {})[outcome] = int(n)
        recorded = {
            m: sum(n for o, n in outcomes.items() if o not in NO_CALL)
            for m, outcomes in attempts.items()
        }
        recorded = {m: n for m, n in recorded.items() if n}
        calls = self.fake_calls()
        assert calls == recorded, f"calls seen by the fake {calls} != attempt rows {recorded}"
        assert not any("in_flight" in outcomes for outcomes in attempts.values()), attempts

        cost = self.sql("SELECT (SELECT sum(cost_nanos) FROM attempts), sum(cost_nanos) FROM items")
        assert cost[0][0] == cost[0][1], f"attempts cost {cost[0][0]} != items cost {cost[0][1]}"

        deciders = self.sql(
            "SELECT i.id, count(a.id) FROM items i LEFT JOIN attempts a "
            "ON a.item_id = i.id AND a.decision = 'accept' "
            "WHERE i.status = 'done' GROUP BY i.id HAVING count(a.id) <> 1"
        )
        assert not deciders, f"done items not decided by exactly one accepted attempt: {deciders}"
        dupes = self.sql("SELECT item_id, step FROM attempts GROUP BY 1, 2 HAVING count(*) > 1")
        assert not dupes

        return Ledger(
            items=len(items),
            by_status=dict(by_status),
            calls=calls,
            attempts=attempts,
            fallbacks=int(self.scalar("SELECT count(*) FROM items WHERE fallback_used")),
            transitions=self.transitions(),
            cost_nanos=int(cost[0][1] or 0),
        )


def report(name: str, **figures: Any) -> None:
    """Print a scenario's figures (shown with ``pytest -rP`` or ``-s``)."""
    print(f"FIGURES {name}: {json.dumps(figures, sort_keys=True, default=str)}")

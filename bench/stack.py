"""The distributed stack for the tail scenarios and the soak: fake API, database, Redis, CLI.

Every helper is bounded in time and talks to 127.0.0.1 only. Workers are started
with :func:`bench.procs.start_worker` (the one place that knows how).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.procs import BIN, ROOT, spawn, stop, wait_for_line

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
API_KEY = "sk-ant-bench-0000000000000000"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Fake:
    proc: subprocess.Popen[bytes]
    url: str
    requests: Path  # its request log

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_fake/stats", timeout=10) as r:
            out: dict[str, Any] = json.loads(r.read())
        return out


@contextmanager
def fake_api(work: Path, name: str, args: Sequence[str]) -> Iterator[Fake]:
    """``python -m cascade.fakeapi ARGS --request-log WORK/NAME.requests.jsonl``, stopped after."""
    flog = work / f"{name}.fake.log"
    requests = work / f"{name}.requests.jsonl"
    for p in (flog, requests):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "cascade.fakeapi", "--port", "0", "--request-log", str(requests)]
    proc = spawn([*cmd, *args], dict(os.environ), flog)
    try:
        url = wait_for_line(flog, "listening on").rsplit(" ", 1)[-1]
        yield Fake(proc, url, requests)
    finally:
        stop(proc)


@contextmanager
def database(prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A fresh, migrated Postgres database (SQLAlchemy URL), dropped after unless ``keep``."""
    db = f"cascade_bench_{prefix}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    try:
        from migrations.runner import upgrade

        upgrade(url)
        yield url
    finally:
        if keep:
            log(f"kept database {db}")
        else:
            drop_database(db)


def drop_database(db: str) -> None:
    deadline = time.monotonic() + 60  # Postgres may be restarting (the soak)
    while True:
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def dsn(db_url: str) -> str:
    """A psycopg connection string from a SQLAlchemy URL."""
    return db_url.replace("+psycopg", "")


def env_for(db_url: str, broker: str, fake_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker or CLI command (nothing of the caller's CASCADE_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
    env |= {
        "CASCADE_DATABASE_URL": db_url,
        "CASCADE_BROKER_URL": broker,
        "ANTHROPIC_BASE_URL": fake_url,
        "ANTHROPIC_API_KEY": API_KEY,
        "CASCADE_LOG_FORMAT": "json",
        "CASCADE_LOG_LEVEL": "WARNING",
        **extra,
    }
    return env


def cascade(
    env: dict[str, str], args: Sequence[str], *, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a ``cascade`` command; its output is returned (and kept for the traceback count)."""
    out = subprocess.run(
        [str(BIN / "cascade"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"cascade {' '.join(args)} failed: {(out.stdout + out.stderr)[-2000:]}")
    return out


def job_status(db_url: str, job: str) -> str | None:
    with psycopg.connect(dsn(db_url), autocommit=True, connect_timeout=5) as c:
        row = c.execute("SELECT status FROM jobs WHERE name = %s", (job,)).fetchone()
    return None if row is None else str(row[0])


def wait_done(db_url: str, job: str, timeout: float, poll: float = 0.2) -> bool:
    """Wait until the job is done or failed; False if ``timeout`` passes first.
    Tolerates a database that is away for a while (a restart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError):
            if job_status(db_url, job) in ("done", "failed"):
                return True
        time.sleep(poll)
    return False


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A redis-server of our own on 127.0.0.1:``port``, no persistence: a restart empties it."""

    def __init__(self, port: int, work: Path) -> None:
        self.port = port
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        if port_in_use(self.port):
            # someone else's server: never use (let alone restart) it
            raise RuntimeError(f"127.0.0.1:{self.port} is in use: pick another --redis-port")
        self.proc = spawn(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            dict(os.environ),
            self.work / f"redis-{self.port}.log",
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited at start")
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=10)
            self.proc = None

    def restart(self) -> float:
        """Stop and start again, empty; returns the seconds it was away."""
        t0 = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - t0

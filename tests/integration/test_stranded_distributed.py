"""Nothing stranded on the distributed runtime (issue 21): a re-submit re-queues what
no message carries; `submit --wait` says when no worker takes work; doctor and status
see the fleet."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from migrations.runner import upgrade
from tests.services import require_service, service_redis_url

ROOT = Path(__file__).resolve().parents[2]
CASCADE = str(Path(sys.executable).parent / "cascade")
PIPELINE = ROOT / "examples" / "support_triage.toml"
REDIS_URL = service_redis_url(9)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    require_service("redis", lambda: client.ping())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def env(pg_url: str, broker: redis.Redis) -> dict[str, str]:
    upgrade(pg_url)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
    return base | {
        "CASCADE_DATABASE_URL": pg_url,
        "CASCADE_BROKER_URL": REDIS_URL,
        "CASCADE_LOG_FORMAT": "json",
        "CASCADE_STALL_S": "2",
    }


def cascade(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CASCADE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def tickets(path: Path, n: int) -> Path:
    # no rule matches these: every item goes on to the small tier's queue
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"d{i}", "text": f"question number {i} about my account"}))
            f.write("\n")
    return path


def ids_on_queues(client: redis.Redis) -> set[int]:
    found: set[int] = set()
    for key in client.keys("tier.*"):
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            found.update(args[2])
    return found


def test_a_resubmit_requeues_items_no_message_carries(
    env: dict[str, str], broker: redis.Redis, tmp_path: Path
) -> None:
    # Given a job whose messages were lost (an interrupted submit, a flushed broker)
    data = tickets(tmp_path / "d.jsonl", 1500)
    first = cascade(env, "submit", str(data), "-p", str(PIPELINE), "--job-name", "d")
    assert first.returncode == 0, first.stderr
    assert ids_on_queues(broker)
    broker.flushdb()
    # When the same file is submitted again
    again = cascade(env, "submit", str(data), "-p", str(PIPELINE), "--job-name", "d")
    # Then every waiting item is on a queue again, without a sweep
    assert again.returncode == 0, again.stderr
    assert "1,500 already in the job" in again.stdout
    assert len(ids_on_queues(broker)) == 1500
    assert "sent again" in again.stderr


def test_wait_says_when_no_worker_takes_work(env: dict[str, str], tmp_path: Path) -> None:
    data = tickets(tmp_path / "w.jsonl", 20)
    proc = subprocess.Popen(
        [CASCADE, "submit", str(data), "-p", str(PIPELINE), "--wait"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(12)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert "no worker has taken work" in stderr
    assert "cascade worker --queues tier.rules,tier.small,tier.large,cascade.fallback" in stderr
    assert proc.returncode == 130
    assert "Traceback" not in stderr


def test_doctor_and_status_see_no_worker(env: dict[str, str], tmp_path: Path) -> None:
    doctor = cascade(env, "doctor")
    assert doctor.returncode == 1
    assert "workers" in doctor.stdout and "cascade worker" in doctor.stdout
    data = tickets(tmp_path / "s.jsonl", 5)
    assert cascade(env, "submit", str(data), "-p", str(PIPELINE), "--job-name", "s").returncode == 0
    status = cascade(env, "status", "s")
    assert status.returncode == 0, status.stderr
    assert "tier.small" in status.stdout and "0 workers" in status.stdout
    small = next(x for x in status.stdout.splitlines() if "tier.small" in x)
    assert "1 message waiting" in small

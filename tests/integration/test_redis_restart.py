"""The fleet's breaker store across a Redis restart: while Redis is down a call is told
so quickly (the executor then allows or denies per CASCADE_BREAKER_STORE_DOWN), and
once Redis is back the next command works, on every pooled connection, at once."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.redis_breaker import RedisBreakerStore
from tasks.runtime import shared_redis_client
from tests.services import require_service
from workers.breaker import BreakerPolicy

pytestmark = pytest.mark.redis
POLICY = BreakerPolicy(5, 60.0, 30.0, 2, 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, on a free loopback port."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    def available() -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server is not on PATH")

    require_service("redis", available)
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_the_breaker_store_is_back_as_soon_as_redis_is(private_redis: PrivateRedis) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/0"

    async def main() -> tuple[int, float, int]:
        client = shared_redis_client(url)
        store = RedisBreakerStore(client, POLICY, closed_ttl_s=0)
        try:
            # Given 16 pooled connections in use against a live Redis
            await asyncio.gather(*(store.record("k", time.time(), False, False) for _ in range(16)))
            # When Redis restarts (empty): while it is down, each call fails fast
            private_redis.stop()
            t0 = time.monotonic()
            down = await asyncio.gather(
                *(store.admit("k", time.time()) for _ in range(4)), return_exceptions=True
            )
            down_s = time.monotonic() - t0
            private_redis.start()
            # Then every call after it is back succeeds, on every connection of the pool
            back = await asyncio.gather(
                *(store.admit("k", time.time()) for _ in range(32)), return_exceptions=True
            )
            return (
                sum(isinstance(r, Exception) for r in down),
                down_s,
                sum(isinstance(r, Exception) for r in back),
            )
        finally:
            await client.aclose()

    failed_down, down_s, failed_back = asyncio.run(main())
    assert failed_down == 4
    assert down_s < 5, down_s
    assert failed_back == 0

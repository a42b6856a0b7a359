"""The pool pings a connection only after it has been idle a while (models.db): one
back within PING_BYPASS_S goes out as it is, an older one is pinged, and a dead one
is replaced before the caller sees it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, exc, pool, text

from models import db

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    built = db.make_engine(pg_url)
    yield built
    built.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(engine: Engine, pid: int) -> None:
    """From a connection of its own (the pool would hand out the one to end)."""
    other = create_engine(engine.url, poolclass=pool.NullPool)
    with other.begin() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    other.dispose()


def counting_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return ping(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_back_within_the_window_goes_out_unpinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = counting_pings(engine, monkeypatch)
    first = backend_pid(engine)  # a new connection: no ping either
    assert backend_pid(engine) == first
    assert pings == []


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = counting_pings(engine, monkeypatch)
    monkeypatch.setattr(db, "PING_BYPASS_S", 0.0)  # every connection counts as idle
    first = backend_pid(engine)
    before = len(pings)
    terminate(engine, first)
    # the ping finds it dead; the pool connects again and the caller never knows
    assert backend_pid(engine) != first
    assert len(pings) > before


def test_a_connection_that_died_within_the_window_fails_once_then_is_replaced(
    engine: Engine,
) -> None:
    first = backend_pid(engine)
    terminate(engine, first)
    with pytest.raises(exc.OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert backend_pid(engine) != first  # the pool dropped it

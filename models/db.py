"""Engines and sessions, built per process (after the fork), never at import time."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

DbSession = Session  # for type hints outside models/, which does not import sqlalchemy


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# A connection back in the pool for less than this is handed out without a ping (as
# HikariCP's aliveBypassWindowMs, 500 ms by default): the ping is a round trip on every
# checkout, a third of a one-item submission's. One that died within the window fails
# its first statement; SQLAlchemy then drops it and the pool's older connections, and
# the caller's retry (a task's autoretry, a re-run submit) takes a fresh one.
PING_BYPASS_S = 0.5


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=5, max_overflow=5)
    event.listen(engine, "connect", _returned)  # new: no ping needed
    event.listen(engine, "checkin", _returned)
    event.listen(engine, "checkout", _ping_unless_fresh(engine))
    return engine


def _returned(_dbapi_conn: Any, record: Any) -> None:
    record.info["returned_at"] = time.monotonic()


def _ping_unless_fresh(engine: Engine) -> Any:
    """A checkout hook: ping a connection that has been idle beyond :data:`PING_BYPASS_S`;
    a dead one is replaced (the pool retries the checkout on ``DisconnectionError``)."""
    dialect = engine.dialect

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is not None and time.monotonic() - returned < PING_BYPASS_S:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                raise sa_exc.DisconnectionError(str(exc)) from exc
            raise

    return checkout


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def as_utc(value: datetime) -> datetime:
    """A timestamp read back from the database, timezone-aware (SQLite returns naive UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def database_identity(url: str) -> str:
    """The database a URL names, stable across processes of one host: the URL without
    its password, and for SQLite the file's absolute path (a relative one depends on
    the working directory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        name = parsed.database or ""
        if name and name != ":memory:" and not name.startswith("file:"):
            name = str(Path(name).resolve())
        return f"sqlite:{name}"
    return parsed.render_as_string(hide_password=True)

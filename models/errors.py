"""Database errors that are worth a retry (connection lost, server restarting)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from common.logs import get_logger

DB_TRANSIENT: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
T = TypeVar("T")
log = get_logger("cascade.db")


def with_db_retry(
    write: Callable[[], T],
    *,
    tries: int = 12,
    base_s: float = 0.5,
    cap_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run a database operation, retrying connection-level errors (about a minute in all).

    Anything else, or the last failure, is raised.
    """
    for n in range(tries):
        try:
            return write()
        except DB_TRANSIENT as exc:
            if n == tries - 1:
                raise
            delay = min(cap_s, base_s * 2**n)
            log.warning("cascade.db.retry", attempt=n + 1, delay_s=delay, error=type(exc).__name__)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover

"""Database errors that are worth a retry (connection lost, server restarting)."""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError

DB_TRANSIENT: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

"""The migrations' read-only role sees the report views and nothing else (Postgres)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import ProgrammingError

from migrations.runner import upgrade

pytestmark = pytest.mark.postgres


def test_reader_role_reads_views_only(pg_url: str) -> None:
    upgrade(pg_url)
    engine = create_engine(pg_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET ROLE cascade_reader"))
            for view in ("report_items", "report_tiers", "report_daily"):
                assert conn.execute(text(f"SELECT count(*) FROM {view}")).scalar() == 0
            for table in ("items", "attempts", "jobs"):
                with pytest.raises(ProgrammingError, match="permission denied"):
                    conn.execute(text(f"SELECT count(*) FROM {table}"))
                conn.rollback()
                conn.execute(text("SET ROLE cascade_reader"))
    finally:
        engine.dispose()

"""Alembic environment for the Cascade ledger.

The database URL comes from the Alembic config (``migrations.runner`` sets it),
else from ``CASCADE_DATABASE_URL``, else ``sqlite:///cascade.db``.

``logging.config.fileConfig`` is deliberately never called: running migrations
from inside the application must not reconfigure the application's logging.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, make_url, pool

from models.schema import Base

DEFAULT_URL = "sqlite:///cascade.db"

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    return (
        config.get_main_option("sqlalchemy.url")
        or os.environ.get("CASCADE_DATABASE_URL")
        or DEFAULT_URL
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) without a connection."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=make_url(url).get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: autogenerate batch (copy-and-move) ops.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

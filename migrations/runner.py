"""Run and inspect the ledger migrations programmatically.

The Alembic config is built from this package's own directory, so it works from
any working directory and from an installed wheel. Every function opens its own
short-lived connection (``NullPool``) and closes it before returning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from models.schema import Base

_DIR = Path(__file__).resolve().parent


def _escape(value: str) -> str:
    # Alembic's config is a ConfigParser: a literal % must be written %%.
    return value.replace("%", "%%")


def _config(url: str | None = None) -> Config:
    cfg = Config(str(_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", _escape(str(_DIR)))
    # The package is already importable; don't let Alembic grow sys.path per call.
    cfg.set_main_option("prepend_sys_path", "")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", _escape(url))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the latest)."""
    command.upgrade(_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops everything)."""
    command.downgrade(_config(url), revision)


def head() -> str:
    """The revision id of the newest migration shipped with this package."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"expected exactly one migration head, found {heads!r}")
    return heads[0]


def current(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def is_at_head(url: str) -> bool:
    return current(url) == head()


def check(url: str) -> list[str]:
    """Differences between the migrated database and the models; empty when none.

    Each entry is the repr of one Alembic autogenerate diff directive (e.g.
    ``('add_column', None, 'items', Column(...))``).
    """
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, Base.metadata)
            sqlite = conn.dialect.name == "sqlite"
    finally:
        engine.dispose()
    return [repr(d) for d in diffs if not (sqlite and _kept_on_sqlite(d))]


# Foreign keys the models no longer declare that migration 0008 leaves on SQLite.
SQLITE_ONLY_FKS = frozenset(
    {
        ("items", "job_id"),
        ("items", "submission_id"),
        ("attempts", "item_id"),
        ("attempts", "job_id"),
    }
)


def _kept_on_sqlite(diff: Any) -> bool:
    if not (isinstance(diff, tuple) and diff and diff[0] == "remove_fk"):
        return False
    columns = list(diff[1].column_keys)
    return len(columns) == 1 and (diff[1].table.name, columns[0]) in SQLITE_ONLY_FKS

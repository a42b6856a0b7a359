"""Database fixtures: a fresh SQLite file or a fresh Postgres database per test,
and a small hand-built ledger with known numbers (see ``LedgerIds`` and the
expected values asserted in test_migrations.py / test_reports.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, insert, make_url, pool, text
from sqlalchemy.orm import Session

from common.settings import Settings
from migrations.runner import upgrade
from models.db import make_engine
from models.tables import Attempt, Item, Job, RejectedLine, Submission
from tasks import publish
from tasks.messages import Message
from tasks.runtime import Runtime
from tests.services import require_service

PG_ADMIN_URL = os.environ.get(
    "CASCADE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cascade.db'}"


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A freshly created, empty Postgres database (its URL), dropped on leaving."""
    admin_url = make_url(PG_ADMIN_URL)
    admin = create_engine(
        admin_url,
        isolation_level="AUTOCOMMIT",
        poolclass=pool.NullPool,
        connect_args={"connect_timeout": 3},
    )

    def ping() -> None:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        require_service("postgres", ping)
        name = f"cascade_test_{secrets.token_hex(6)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A freshly created, empty Postgres database, dropped after the test."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over SQLite and Postgres (the latter marked ``postgres``)."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated database of each kind (see ``db_url``)."""
    upgrade(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def migrated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One migrated database of each kind, shared by a test module (see ``db_session``):
    migrating costs a second or two, a module of small tests would spend most of its time
    on it."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'cascade.db'}"
        else:
            url = stack.enter_context(fresh_pg_database())
        upgrade(url)
        eng = make_engine(url)
        stack.callback(eng.dispose)
        yield eng


@pytest.fixture
def db_session(migrated: Engine) -> Iterator[Session]:
    """A session on the module's database (``migrated``) inside one transaction that is
    rolled back after the test: each test starts from the empty, migrated schema."""
    with migrated.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


@dataclass
class Ledger:
    url: str
    engine: Engine
    job_id: int
    other_job_id: int
    items: dict[str, int] = field(default_factory=dict)  # item_key -> items.id (main job)

    @property
    def postgres(self) -> bool:
        return is_postgres(self.url)


def _add(conn: Connection, entity: Any, **values: Any) -> int:
    pk = conn.execute(insert(entity).values(**values)).inserted_primary_key
    assert pk is not None
    return int(pk[0])


# Main job. Tiers: 0 rules, 1 small, 2 large. Every item's baseline is 20_000_001.
# (key, status, tier_index, label, final_tier, confidence, cost, latency, calls, fallback, error)
ITEMS: list[tuple[Any, ...]] = [
    ("a", "done", 1, "spam", "small", 0.91, 1_234_567, 100, 1, False, None),
    ("b", "done", 0, "ham", "rules", 1.0, 0, 0, 0, False, None),
    ("c", "done", 2, "spam", "large", 0.88, 42_000_010, 1250, 3, False, None),
    ("d", "done", 2, "ham", "large", 0.75, 38_000_016, 1900, 4, True, None),
    ("e", "failed", 1, None, None, None, 999_999, 150, 1, False, "malformed output"),
    ("f", "pending", 0, None, None, None, 0, 0, 0, False, None),
    ("g", "running", 1, None, None, None, 0, 0, 0, False, None),
]
BASELINE = 20_000_001
RULES = ("rules", "rules", "rules")  # role, provider, model
SMALL = ("primary", "anthropic", "claude-small")
LARGE = ("primary", "anthropic", "claude-large")
FALLBACK = ("fallback", "bedrock", "claude-large")
# (key, tier_index, tier, (role, provider, model), outcome, decision, in, out, cost, latency)
ATTEMPTS: list[tuple[Any, ...]] = [
    ("a", 0, "rules", RULES, "rule_miss", "escalate", 0, 0, 0, 1),
    ("a", 1, "small", SMALL, "ok", "accept", 100, 10, 1_234_567, 100),
    ("b", 0, "rules", RULES, "rule_match", "accept", 0, 0, 0, 1),
    ("c", 0, "rules", RULES, "rule_miss", "escalate", 0, 0, 0, 1),
    ("c", 1, "small", SMALL, "transient", None, 0, 0, 0, 50),
    ("c", 1, "small", SMALL, "ok", "escalate", 120, 12, 2_000_003, 200),
    ("c", 2, "large", LARGE, "ok", "accept", 500, 50, 40_000_007, 1000),
    ("d", 0, "rules", RULES, "rule_miss", "escalate", 0, 0, 0, 1),
    ("d", 1, "small", SMALL, "ok", "escalate", 130, 13, 3_000_005, 300),
    ("d", 2, "large", LARGE, "transient", None, 0, 0, 0, 400),
    ("d", 2, "large", LARGE, "permanent", "fallback", 0, 0, 0, 500),
    ("d", 2, "large", FALLBACK, "ok", "accept", 600, 60, 35_000_011, 700),
    ("e", 0, "rules", RULES, "rule_miss", "escalate", 0, 0, 0, 1),
    ("e", 1, "small", SMALL, "malformed", "fail", 140, 14, 999_999, 150),
    ("g", 0, "rules", RULES, "rule_miss", "escalate", 0, 0, 0, 1),
]


def new_job(conn: Connection, name: str) -> tuple[int, int]:
    """Insert a job and one submission; return (job_id, submission_id)."""
    job_id = _add(conn, Job, name=name, pipeline_name="moderation", pipeline={"tiers": 3})
    sub_id = _add(conn, Submission, job_id=job_id, source=f"{name}.jsonl")
    return job_id, sub_id


def add_item(conn: Connection, job_id: int, sub_id: int, key: str, **values: Any) -> int:
    line_no = values.pop("line_no", 1)
    return _add(
        conn, Item, job_id=job_id, submission_id=sub_id, item_key=key, line_no=line_no, **values
    )


def add_attempt(conn: Connection, job_id: int, item_id: int, step: int, **values: Any) -> int:
    return _add(conn, Attempt, job_id=job_id, item_id=item_id, step=step, **values)


def build_ledger(conn: Connection) -> tuple[int, int, dict[str, int]]:
    job_id, sub_id = new_job(conn, "main")
    ids: dict[str, int] = {}
    for n, (key, status, tier_index, label, tier, conf, cost, lat, calls, fb, err) in enumerate(
        ITEMS, start=1
    ):
        ids[key] = add_item(
            conn,
            job_id,
            sub_id,
            key,
            line_no=n,
            text=f"text {key}",
            meta={"source_line": n, "key": key},
            status=status,
            tier_index=tier_index,
            label=label,
            final_tier=tier,
            confidence=conf,
            cost_nanos=cost,
            baseline_nanos=BASELINE,
            latency_ms=lat,
            model_calls=calls,
            fallback_used=fb,
            error=err,
        )
    steps: dict[str, int] = {}
    for key, tier_index, tier, (
        role,
        provider,
        model,
    ), outcome, decision, i, o, cost, lat in ATTEMPTS:
        steps[key] = steps.get(key, 0) + 1
        add_attempt(
            conn,
            job_id,
            ids[key],
            steps[key],
            tier_index=tier_index,
            tier=tier,
            role=role,
            provider=provider,
            model=model,
            outcome=outcome,
            decision=decision,
            input_tokens=i,
            output_tokens=o,
            cost_nanos=cost,
            latency_ms=lat,
        )
    for line_no, reason in ((3, "invalid JSON"), (7, "missing field: text")):
        _add(
            conn,
            RejectedLine,
            job_id=job_id,
            submission_id=sub_id,
            source="main.jsonl",
            line_no=line_no,
            reason=reason,
            raw=f"raw line {line_no}",
        )

    # A second job, same item key, to prove every query filters by job.
    other_id, other_sub = new_job(conn, "other")
    item = add_item(
        conn,
        other_id,
        other_sub,
        "a",
        meta={},
        status="done",
        final_tier="small",
        cost_nanos=777,
        baseline_nanos=5,
        latency_ms=5,
        model_calls=1,
    )
    add_attempt(
        conn,
        other_id,
        item,
        1,
        tier_index=0,
        tier="rules",
        role="rules",
        provider="rules",
        model="rules",
        outcome="rule_miss",
        decision="escalate",
        latency_ms=1,
    )
    add_attempt(
        conn,
        other_id,
        item,
        2,
        tier_index=1,
        tier="small",
        role="primary",
        provider="anthropic",
        model="claude-small",
        outcome="ok",
        decision="accept",
        input_tokens=9,
        output_tokens=1,
        cost_nanos=777,
        latency_ms=5,
    )
    _add(
        conn,
        RejectedLine,
        job_id=other_id,
        submission_id=other_sub,
        source="other.jsonl",
        line_no=1,
        reason="invalid JSON",
        raw="{",
    )
    return job_id, other_id, ids


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    """A migrated database holding the hand-built ledger above."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            job_id, other_id, ids = build_ledger(conn)
        yield Ledger(url=db_url, engine=engine, job_id=job_id, other_job_id=other_id, items=ids)
    finally:
        engine.dispose()


def collecting_runtime(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> tuple[Runtime, list[Message]]:
    """A worker process's runtime on the test database whose follow-up messages are
    collected in the list, not sent. The caller closes the runtime."""
    config = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        broker_url="memory://localhost/",
        sweep_every_s=0,
        **settings,
    )
    sent: list[Message] = []
    monkeypatch.setattr(publish, "send", lambda rt, msg: sent.append(msg))
    return Runtime(config), sent

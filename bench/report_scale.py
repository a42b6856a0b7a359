"""Reports at scale: 10,000,000 attempt rows in Postgres, timed.

    .venv/bin/python bench/report_scale.py [--rows 10000000] [--days 90] [--jobs 200]
        [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--keep]

Creates a scratch database, migrates it, fills it with generate_series (items
first, then 7/3 attempts per item on average: a rules step, a small-model call, and for a
third of the items a large-model call; every 50th large call a fallback), ANALYZEs,
then times the first rollup refresh (`cascade rollup`: every attempt older than
the 5-minute grace period; the rest of the last day lies in the future, so it
stays in the live tail, which makes the daily report's timing conservative), then:
the full job report of one job (every section `cascade report --job` prints), and
the 30-day daily report (`report --since D-29 --until D` over all pipelines).
Each is run three times; the best and the worst are printed.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, make_url, pool, text
from sqlalchemy.orm import Session, sessionmaker

from cascade.cli_report import build_report
from migrations.runner import upgrade
from models import analytics as an
from models import rollup
from models.tables import Job

END = date(2026, 11, 27)


def fill(url: str, rows: int, days: int, jobs: int) -> None:
    items = rows * 3 // 7  # 7/3 attempts per item on average: 10M rows -> 4.29M items
    per_job = items // jobs
    engine = create_engine(url, poolclass=pool.NullPool)
    start = END - timedelta(days=days - 1)
    with engine.begin() as c:
        c.execute(
            text("""
            INSERT INTO jobs (id, name, pipeline_name, pipeline, status)
            SELECT g, 'job-' || g, CASE WHEN g % 2 = 0 THEN 'triage' ELSE 'moderation' END,
                   '{"tiers": 3}', 'done'
            FROM generate_series(1, :jobs) g"""),
            {"jobs": jobs},
        )
        c.execute(
            text("""
            INSERT INTO submissions (id, job_id, source, lines_read, items_added, items_existing,
                lines_rejected) SELECT g, g, 'bench.jsonl', 0, 0, 0, 0
            FROM generate_series(1, :jobs) g"""),
            {"jobs": jobs},
        )
    t = time.perf_counter()
    with engine.begin() as c:
        # no FK trigger per row while bulk-filling (the data is consistent by construction)
        c.execute(text("SET LOCAL session_replication_role = replica"))
        # item i belongs to job 1 + (i-1) / per_job; jobs run one after another over the range
        c.execute(text("""
            INSERT INTO items (id, job_id, submission_id, item_key, line_no, meta, status,
                tier_index, label, final_tier, confidence, cost_nanos, baseline_nanos,
                latency_ms, steps, model_calls, fallback_used, deferrals, error, created_at)
            SELECT i, j, j, 'k' || i, i, '{}',
                CASE WHEN i % 97 = 0 THEN 'failed' ELSE 'done' END,
                CASE WHEN i % 3 = 0 THEN 2 WHEN i % 5 = 0 THEN 0 ELSE 1 END,
                CASE WHEN i % 97 = 0 THEN NULL
                     ELSE (ARRAY['billing','account','other'])[1 + i % 3] END,
                CASE WHEN i % 3 = 0 THEN 'large' WHEN i % 5 = 0 THEN 'rules' ELSE 'small' END,
                0.9, 40000 + i % 1000, 400000, 100 + i % 900, 3, 2, i % 50 = 0, 0,
                CASE WHEN i % 97 = 0 THEN 'refusal' END,
                CAST(:start AS timestamptz) + (i::float8 / :items) * (:days * interval '1 day')
            FROM (SELECT i, 1 + (i - 1) / :per_job AS j FROM generate_series(1, :items) i) s
            WHERE j <= :jobs"""),
            {"start": f"{start} 00:00:00+00", "items": items, "days": days,
             "per_job": per_job, "jobs": jobs})  # fmt: skip
        c.execute(text("""
            INSERT INTO attempts (job_id, item_id, step, tier_index, tier, role, provider, model,
                outcome, decision, label, confidence, input_tokens, output_tokens,
                cache_read_tokens, is_batch, cost_nanos, latency_ms, created_at, hedged,
                cache_write_tokens)
            SELECT it.job_id, it.id, s.step, s.tier_index, s.tier,
                CASE WHEN s.tier_index = 0 THEN 'rules' WHEN it.id % 50 = 0 AND s.tier_index = 2
                     THEN 'fallback' ELSE 'primary' END,
                CASE WHEN s.tier_index = 0 THEN 'rules' ELSE 'anthropic' END,
                CASE s.tier_index WHEN 0 THEN 'rules' WHEN 1 THEN 'claude-haiku-5-5'
                     ELSE 'claude-sonnet-5-5' END,
                CASE WHEN s.tier_index = 0 THEN 'rule_miss' ELSE 'ok' END,
                CASE WHEN s.tier_index < it.tier_index THEN 'escalate' ELSE 'accept' END,
                CASE WHEN s.tier_index > 0 THEN it.label END,
                CASE WHEN s.tier_index > 0 THEN 0.5 + (it.id % 50) / 100.0 END,
                100, 10, it.id % 3 * 100, it.id % 4 = 0,
                CASE WHEN s.tier_index = 0 THEN 0 ELSE 20000 * s.tier_index END,
                CASE WHEN s.tier_index = 0 THEN 1 ELSE 50 * s.tier_index + (it.id * 7919) % 800 END,
                it.created_at + s.step * interval '1 second', false, 0
            FROM items it
            JOIN LATERAL (VALUES (1, 0, 'rules'), (2, 1, 'small'), (3, 2, 'large'))
                AS s(step, tier_index, tier)
              ON s.tier_index <= GREATEST(it.tier_index, 1)
            """))  # fmt: skip
    print(f"filled in {time.perf_counter() - t:.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        t = time.perf_counter()
        c.execute(text("VACUUM ANALYZE"))
        n = c.execute(text("SELECT count(*) FROM attempts")).scalar_one()
        per_job_attempts = c.execute(
            text("SELECT count(*) FROM attempts WHERE job_id = :j"), {"j": jobs // 2}
        ).scalar_one()
        print(f"vacuum analyze {time.perf_counter() - t:.1f} s; attempts {n:,}; "
              f"items {items:,}; jobs {jobs}; attempts per job ~{per_job_attempts:,}")  # fmt: skip
    engine.dispose()


def timed(label: str, fn: object, repeat: int = 3) -> None:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        runs.append(time.perf_counter() - t)
    print(f"{label}: best {min(runs):.3f} s, worst {max(runs):.3f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()
    admin_url = make_url(args.admin_url)
    name = f"cascade_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    print(f"database {name}", flush=True)
    try:
        upgrade(url)
        fill(url, args.rows, args.days, args.jobs)
        engine = create_engine(url, poolclass=pool.NullPool)
        t = time.perf_counter()
        done = rollup.refresh(sessionmaker(engine))
        with Session(engine) as s:
            tail = rollup.state(s).tail
        print(f"rollup refresh: {time.perf_counter() - t:.1f} s; watermark {done.after:,} "
              f"in {done.batches} batches; live tail {tail:,} attempts")  # fmt: skip
        job_id = args.jobs // 2
        with Session(engine) as s:
            job = s.get(Job, job_id)

            def job_report() -> None:
                build_report(s, job, an.Scope(job_ids=(job_id,)), None)
                s.rollback()  # one report, one transaction, as in the CLI

            def daily_30() -> None:
                rows = an.daily(s, an.Scope(since=END - timedelta(days=29), until=END))
                s.rollback()
                assert rows

            timed(f"job report (job {job_id}, every section)", job_report)
            timed("30-day daily report (all pipelines)", daily_30)
        with engine.connect() as c:  # an analyst's own session: default settings
            t = time.perf_counter()
            n = c.execute(
                text("SELECT count(*) FROM report_daily WHERE day >= :d"),
                {"d": END - timedelta(days=29)},
            ).scalar_one()
            print(f"analyst: SELECT ... FROM report_daily WHERE day >= D-29 ({n} rows): "
                  f"{time.perf_counter() - t:.3f} s")  # fmt: skip
        # The tail's rows lie in the future; roll them up too (as the beat would once
        # they are past the grace period): an incremental refresh, then the report
        # with an empty tail.
        t = time.perf_counter()
        later = datetime.combine(END + timedelta(days=2), datetime.min.time(), UTC)
        done = rollup.refresh(sessionmaker(engine), now=later)
        print(f"incremental refresh of those {done.after - done.before:,} attempts: "
              f"{time.perf_counter() - t:.2f} s")  # fmt: skip
        with Session(engine) as s:

            def daily_30_no_tail() -> None:
                an.daily(s, an.Scope(since=END - timedelta(days=29), until=END))
                s.rollback()

            timed("30-day daily report, empty tail", daily_30_no_tail)
        engine.dispose()
    finally:
        if not args.keep:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()

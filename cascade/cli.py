"""The `cascade` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cascade.cliutil import (
    JobOpt,
    PipelineOpt,
    app,
    check_format,
    ensure_schema,
    fail,
    job_session,
    out,
    parse_usd,
    setup,
)
from cascade.offline import Offline
from cascade.progress import tier_names, waiting_by_tier
from common.lifecycle import Status
from common.settings import get_settings


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV input (id, text, other fields kept)")],
    pipeline: PipelineOpt,
    wait: Annotated[
        bool, typer.Option(help="show progress and wait until the job is done")
    ] = False,
    job_name: Annotated[str | None, typer.Option(help="job to create or add to")] = None,
    budget: Annotated[
        str | None, typer.Option(help="spend cap for the job in USD, e.g. 25.00")
    ] = None,
    offline: Offline = False,
) -> None:
    """Stream FILE into a job and start the cascade on it (again: finish what is left)."""
    setup()
    from cascade.jobrun import run_submit
    from workers.pipeline import PipelineError, load_pipeline

    try:
        pipe = load_pipeline(pipeline)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    budget_nanos = parse_usd(budget) if budget is not None else None
    name = job_name or f"{file.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_submit(
        file,
        pipe,
        name,
        wait=wait,
        budget_nanos=budget_nanos,
        offline=offline,
        pipe_path=pipeline,
    )


@app.command()
def status(job: Annotated[str, typer.Argument(help="job id or name")]) -> None:
    """Where a job's items are right now."""
    setup()
    from models.reports import progress

    with job_session(job) as (session, j):
        p = progress(session, j.id)
    out.print(f"job {j.id} ({j.name}) · {j.pipeline_name} · [bold]{j.status}[/bold]")
    if j.message:
        out.print(f"[yellow]{j.message}[/yellow]", soft_wrap=True)
    out.print(f"finished {p[Status.DONE] + p[Status.FAILED]:,} of {p['total']:,}")
    for name in (
        Status.PENDING,
        Status.REUSE_WAIT,
        Status.RUNNING,
        Status.FALLBACK,
        Status.FALLBACK_RUNNING,
        Status.DONE,
        Status.FAILED,
    ):
        if p.get(name):
            out.print(f"  {name:<20}{p[name]:>10,}")
    for tier, count in waiting_by_tier(p, tier_names(j)).items():
        out.print(f"  unfinished at {tier:<9}{count:>10,}")
    if not get_settings().embedded:
        from cascade.fleetview import print_fleet

        print_fleet([f"tier.{t}" for t in tier_names(j)] + ["cascade.fallback"])


@app.command()
def jobs(limit: Annotated[int, typer.Option(help="how many")] = 20) -> None:
    """The latest jobs."""
    setup()
    ensure_schema()
    from cascade.fmt import FitTable
    from models.repo import list_jobs
    from tasks.runtime import get_runtime

    table = FitTable("id", "name", "pipeline", "status", "created", "finished", keep=(0, 1, 2, 3))
    for col in table.columns[1:3]:
        col.overflow = "fold"  # a name is what the user types: wrapped, never cut
    with get_runtime().sessions() as session:
        for j in list_jobs(session, limit):
            table.add_row(
                str(j.id),
                j.name,
                j.pipeline_name,
                j.status,
                f"{j.created_at:%m-%d %H:%M}",
                f"{j.finished_at:%H:%M:%S}" if j.finished_at else "",
            )
    out.print(table)


@app.command()
def outcomes(
    job: JobOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | csv")] = "jsonl",
) -> None:
    """One line per item: id, label, tier, confidence, cost, latency, status, metadata."""
    setup()
    check_format(fmt, "jsonl", "csv")
    from cascade.render import write_outcomes
    from models.reports import iter_outcomes

    with job_session(job) as (session, j):
        write_outcomes(iter_outcomes(session, j.id), fmt)


@app.command()
def worker(
    queues: Annotated[
        str | None, typer.Option(help="comma-separated queues (default: CASCADE_QUEUES)")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 2,
    loglevel: Annotated[str, typer.Option(help="log level")] = "INFO",
    beat: Annotated[
        bool, typer.Option(help="also run the beat (sweeper, rollup): on exactly one worker")
    ] = False,
) -> None:
    """Run a Celery worker on the distributed runtime (Redis broker, Postgres)."""
    setup()
    settings = get_settings()
    if settings.embedded:
        raise fail(
            "`cascade worker` needs a broker: set CASCADE_BROKER_URL=redis://HOST:6379/0 "
            "(the embedded runtime runs its worker inside `cascade submit`)"
        )
    from tasks.app import app as celery_app

    qs = queues or settings.queues
    # no gossip or mingle: workers share state through Postgres and Redis, not through
    # each other, and gossip is what printed tracebacks when Redis restarted
    argv = ["worker", "-Q", qs, "--concurrency", str(concurrency), "--loglevel", loglevel, "-E"]
    argv += ["--without-gossip", "--without-mingle"]
    celery_app.worker_main([*argv, *(["-B", "-s", ".celerybeat-schedule"] if beat else [])])


@app.command()
def migrate() -> None:
    """Apply the database migrations (Alembic) up to the current schema."""
    setup()
    from migrations import runner

    url = get_settings().database_url
    runner.upgrade(url)
    out.print(f"database at revision {runner.current(url)}")


@app.command()
def sweep(idle: Annotated[int, typer.Option(help="seconds an item may wait unsent")] = 120) -> None:
    """Re-send items whose message was lost or whose worker died (distributed runtime)."""
    setup()
    ensure_schema()
    if get_settings().embedded:
        raise fail(
            "the embedded runtime has no broker that outlives a command, so there is nothing "
            "to sweep into: `cascade resume JOB` (or the same submit again) finishes a job"
        )
    from tasks.publish import sweep_once
    from tasks.runtime import get_runtime

    out.print(f"re-sent {sweep_once(get_runtime(), idle):,} items")


@app.command()
def demo() -> None:
    """Run the bundled example end to end (offline unless ANTHROPIC_API_KEY is set)."""
    from cascade.demo import run_demo

    run_demo(submit)


def main() -> None:
    # Each module registers its commands on the shared app.
    from cascade import (  # noqa: F401
        cli_backfill,
        cli_chaos,
        cli_jobs,
        cli_ops,
        cli_report,
        cli_review,
        cli_tune,
    )
    from cascade.cliutil import guarded

    guarded(app)

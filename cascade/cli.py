"""The `cascade` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.logs import configure_logging
from common.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {message}")
    return typer.Exit(code)


def _setup() -> None:
    s = get_settings()
    configure_logging(s.log_format, s.log_level or "WARNING")


def _ensure_schema() -> None:
    """The embedded SQLite database migrates itself; a server database must be migrated."""
    from migrations import runner

    url = get_settings().database_url
    if runner.is_at_head(url):
        return
    if url.startswith("sqlite"):
        runner.upgrade(url)
        return
    raise fail("the database is not migrated to the current schema: run `cascade migrate`")


def _job(session: Any, ref: str) -> Any:
    from models.repo import job_by_ref

    job = job_by_ref(session, ref)
    if job is None:
        raise fail(f"no job with id or name {ref!r} (see `cascade jobs`)")
    return job


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV input (id, text, other fields kept)")],
    pipeline: Annotated[Path, typer.Option("--pipeline", "-p", help="pipeline TOML file")],
    wait: Annotated[
        bool, typer.Option(help="show progress and wait until the job is done")
    ] = False,
    job_name: Annotated[str | None, typer.Option(help="job to create or add to")] = None,
) -> None:
    """Stream FILE into a job and start the cascade on it."""
    _setup()
    from tasks.embedded import embedded_worker
    from tasks.runtime import get_runtime
    from tasks.submit import SubmitError
    from tasks.submit import submit as do_submit
    from workers.intake import InputError
    from workers.pipeline import PipelineError, load_pipeline

    try:
        pipe = load_pipeline(pipeline)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    _ensure_schema()
    settings = get_settings()
    name = job_name or f"{file.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    rt = get_runtime()
    queues = [*pipe.queues, "cascade.fallback"]
    if settings.embedded:
        if not wait:
            err.print(
                "[dim]embedded runtime: processing in this process, so waiting for the job[/dim]"
            )
        ctx: Any = embedded_worker(queues)
    else:
        from contextlib import nullcontext

        ctx = nullcontext()
    with ctx:
        try:
            result = do_submit(rt, file, pipe, name)
        except (InputError, SubmitError) as exc:
            raise fail(str(exc)) from None
        c = result.counts
        verb = "created" if result.created else "added to"
        out.print(
            f"job [bold]{result.job_id}[/bold] ({result.job_name}) {verb}: "
            f"{c['items_added']:,} new items, {c['items_existing']:,} already in the job, "
            f"{c['lines_rejected']:,} lines rejected"
        )
        if wait or settings.embedded:
            _wait(result.job_id)
    if wait or settings.embedded:
        _print_report(str(result.job_id), "table")


def _wait(job_id: int) -> None:
    from models.reports import progress
    from tasks.runtime import get_runtime

    rt = get_runtime()
    with Progress(
        TextColumn("[bold]job {task.fields[job]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tiers]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("run", total=None, job=job_id, tiers="")
        while True:
            with rt.sessions() as session:
                p = progress(session, job_id)
                job = _job(session, str(job_id))
                status, names = job.status, _tier_names(job)
            waiting = _waiting_by_tier(p, names)
            tiers = "  ".join(f"{k} {v}" for k, v in waiting.items() if v)
            bar.update(task, total=p["total"], completed=p["done"] + p["failed"], tiers=tiers)
            if status in ("done", "failed"):
                break
            time.sleep(0.25)


def _tier_names(job: Any) -> list[str]:
    return [t["name"] for t in job.pipeline["tiers"]]


def _waiting_by_tier(p: dict[str, int], names: list[str]) -> dict[str, int]:
    """Unfinished items per tier, from progress()'s ``status:tier_index`` keys."""
    out = dict.fromkeys(names, 0)
    for key, count in p.items():
        _, sep, index = key.partition(":")
        if sep and index.isdigit() and int(index) < len(names):
            out[names[int(index)]] += count
    return out


def _print_report(ref: str, fmt: str) -> None:
    from cascade.render import job_report, print_report
    from models.reports import job_totals, tier_rows
    from tasks.runtime import get_runtime

    with get_runtime().sessions() as session:
        job = _job(session, ref)
        report = job_report(job, job_totals(session, job.id), tier_rows(session, job.id))
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_report(out, report)


@app.command()
def report(
    job: Annotated[
        str | None, typer.Option("--job", "-j", help="job id or name (default: latest)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json")] = "table",
) -> None:
    """The job's cost, savings and per-tier funnel."""
    _setup()
    if fmt not in ("table", "json"):
        raise fail("--format must be table or json")
    _ensure_schema()
    if job is None:
        from models.repo import list_jobs
        from tasks.runtime import get_runtime

        with get_runtime().sessions() as session:
            latest = list_jobs(session, limit=1)
        if not latest:
            raise fail("there are no jobs yet: run `cascade submit FILE --pipeline P.toml`")
        job = str(latest[0].id)
    _print_report(job, fmt)


@app.command()
def status(job: Annotated[str, typer.Argument(help="job id or name")]) -> None:
    """Where a job's items are right now."""
    _setup()
    _ensure_schema()
    from models.reports import progress
    from tasks.runtime import get_runtime

    with get_runtime().sessions() as session:
        j = _job(session, job)
        p = progress(session, j.id)
    out.print(f"job {j.id} ({j.name}) · {j.pipeline_name} · [bold]{j.status}[/bold]")
    out.print(f"finished {p['done'] + p['failed']:,} of {p['total']:,}")
    for name in ("pending", "running", "fallback", "fallback_running", "done", "failed"):
        if p.get(name):
            out.print(f"  {name:<20}{p[name]:>10,}")
    for tier, count in _waiting_by_tier(p, _tier_names(j)).items():
        out.print(f"  unfinished at {tier:<9}{count:>10,}")


@app.command()
def jobs(limit: Annotated[int, typer.Option(help="how many")] = 20) -> None:
    """The latest jobs."""
    _setup()
    _ensure_schema()
    from rich.table import Table

    from models.repo import list_jobs
    from tasks.runtime import get_runtime

    table = Table("id", "name", "pipeline", "status", "created", "finished")
    with get_runtime().sessions() as session:
        for j in list_jobs(session, limit):
            table.add_row(
                str(j.id),
                j.name,
                j.pipeline_name,
                j.status,
                f"{j.created_at:%Y-%m-%d %H:%M}",
                f"{j.finished_at:%H:%M:%S}" if j.finished_at else "",
            )
    out.print(table)


@app.command()
def outcomes(
    job: Annotated[str, typer.Option("--job", "-j", help="job id or name")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl | csv")] = "jsonl",
) -> None:
    """One line per item: id, label, tier, confidence, cost, latency, status, metadata."""
    _setup()
    if fmt not in ("jsonl", "csv"):
        raise fail("--format must be jsonl or csv")
    _ensure_schema()
    from cascade.render import write_outcomes
    from models.reports import iter_outcomes
    from tasks.runtime import get_runtime

    with get_runtime().sessions() as session:
        j = _job(session, job)
        write_outcomes(iter_outcomes(session, j.id), fmt)


@app.command()
def worker(
    queues: Annotated[
        str | None, typer.Option(help="comma-separated queues (default: CASCADE_QUEUES)")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 2,
    loglevel: Annotated[str, typer.Option(help="log level")] = "INFO",
) -> None:
    """Run a Celery worker on the distributed runtime (Redis broker, Postgres)."""
    _setup()
    settings = get_settings()
    if settings.embedded:
        raise fail(
            "`cascade worker` needs a broker: set CASCADE_BROKER_URL=redis://HOST:6379/0 "
            "(the embedded runtime runs its worker inside `cascade submit`)"
        )
    from tasks.app import app as celery_app

    qs = queues or settings.queues
    celery_app.worker_main(
        ["worker", "-Q", qs, "--concurrency", str(concurrency), "--loglevel", loglevel]
    )


@app.command()
def migrate() -> None:
    """Apply the database migrations (Alembic) up to the current schema."""
    _setup()
    from migrations import runner

    url = get_settings().database_url
    runner.upgrade(url)
    out.print(f"database at revision {runner.current(url)}")


@app.command()
def sweep(idle: Annotated[int, typer.Option(help="seconds an item may wait unsent")] = 120) -> None:
    """Re-send items whose message was lost or whose worker died."""
    _setup()
    _ensure_schema()
    from tasks.jobs import sweep_once
    from tasks.runtime import get_runtime

    out.print(f"re-sent {sweep_once(get_runtime(), idle):,} items")


@app.command()
def demo() -> None:
    """Run the bundled example end to end (offline unless ANTHROPIC_API_KEY is set)."""
    from cascade.demo import run_demo

    run_demo(submit)


def main() -> None:
    app()

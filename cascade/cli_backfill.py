"""`cascade backfill`: nightly moderation backfills (Message Batches)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cascade.cliutil import app, ensure_schema, err, fail, out, setup
from cascade.offline import Offline
from common.lifecycle import JobStatus, RunStatus, Status
from common.settings import get_settings

if TYPE_CHECKING:
    from tasks.backfill import BatchReport
    from workers.backfills import BackfillSpec


def _usd(nanos: int) -> str:
    return f"${nanos / 1e9:,.6f}"


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"


def print_batch_report(report: BatchReport) -> None:
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.by_status.items()))
    requests = ", ".join(f"{k} {v}" for k, v in sorted(report.requests.items()) if v)
    out.print(f"batches {report.batches} ({statuses or 'none'}); requests: {requests or '-'}")
    if report.batch_calls:
        saved = report.realtime_nanos - report.cost_nanos
        pct = 100 * saved / report.realtime_nanos if report.realtime_nanos else 0.0
        out.print(
            f"batch calls {report.batch_calls}: cost {_usd(report.cost_nanos)} at batch price "
            f"vs {_usd(report.realtime_nanos)} at realtime price "
            f"(saved {_usd(saved)}, {pct:.1f}%)"
        )
        if report.uncached_nanos > report.realtime_nanos:  # the prompt cache served them too
            both = report.uncached_nanos - report.cost_nanos
            out.print(
                f"with prompt caching: {_usd(report.uncached_nanos)} at realtime price without "
                f"it (batch and cache together saved {_usd(both)}, "
                f"{100 * both / report.uncached_nanos:.1f}%)"
            )


def _list() -> None:
    from rich.table import Table

    from models.batches_repo import last_runs
    from tasks.runtime import get_runtime
    from workers.backfills import BACKFILLS_ENV, load_backfills

    try:
        configured = load_backfills()
    except ValueError as exc:
        raise fail(str(exc)) from None
    with get_runtime().sessions() as session:
        runs = last_runs(session, 200)
    last: dict[str, Any] = {}
    for run in runs:
        last.setdefault(run.name or "", run)
    table = Table("name", "at (UTC)", "pipeline", "source", "mode", "last run", "status", "items")
    for b in configured:
        r = last.get(b.name)
        table.add_row(
            b.name,
            b.at,
            str(b.pipeline),
            b.source + (f" ({b.table or 'query'})" if b.table or b.query else ""),
            b.mode or "pipeline",
            _when(r.started_at) if r else "never",
            r.status if r else "",
            str(r.items_added) if r else "",
        )
    if configured:
        out.print(table)
    else:
        out.print(f"no scheduled backfills ({BACKFILLS_ENV} is not set or lists none)")
    recent = Table("run", "name", "pipeline", "source", "mode", "started", "since", "until")
    recent.add_column("status")
    recent.add_column("items")
    recent.add_column("job")
    for r in runs[:20]:
        recent.add_row(
            str(r.id),
            r.name or "",
            r.pipeline,
            r.source,
            r.mode,
            _when(r.started_at),
            _when(r.since),
            _when(r.until),
            r.status,
            str(r.items_added),
            str(r.job_id or ""),
        )
    out.print(recent if runs else "no backfill has run yet")


def _wait(job_id: int) -> None:
    from models.batches_repo import open_batch_count
    from models.repo import job_by_ref
    from models.reports import progress
    from tasks.runtime import get_runtime

    rt = get_runtime()
    shown = ""
    while True:
        with rt.sessions() as session:
            p = progress(session, job_id)
            job = job_by_ref(session, job_id)
            batches = open_batch_count(session, job_id)
        assert job is not None
        finished = p[Status.DONE] + p[Status.FAILED]
        line = f"job {job_id}: {finished}/{p['total']} finished, {batches} open batches"
        if line != shown:
            err.print(f"[dim]{line}[/dim]")
            shown = line
        if job.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.PAUSED):
            return
        time.sleep(0.5)


@app.command()
def backfill(
    pipeline: Annotated[
        Path | None, typer.Option("--pipeline", "-p", help="pipeline TOML file")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="JSONL/CSV file, a glob of them, or a database URL"),
    ] = None,
    table: Annotated[str | None, typer.Option(help="database source: the table")] = None,
    query: Annotated[str | None, typer.Option(help="database source: a SELECT instead")] = None,
    id_column: Annotated[str, typer.Option(help="database source: id column")] = "id",
    text_column: Annotated[str, typer.Option(help="database source: text column")] = "text",
    updated_column: Annotated[
        str, typer.Option(help="database source: updated-at column (the watermark)")
    ] = "updated_at",
    since: Annotated[
        str | None, typer.Option(help="ISO time: read from here instead of the watermark")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="batch | realtime (default: as the pipeline says)")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="run the configured backfill of this name now")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait until the job is done, then report")] = False,
    list_: Annotated[
        bool, typer.Option("--list", help="the scheduled backfills and the last runs")
    ] = False,
    offline: Offline = False,
) -> None:
    """Classify what is new in SOURCE since the last run (a watermark per pipeline and source)."""
    setup()
    ensure_schema()
    if list_:
        _list()
        return
    if mode not in (None, "batch", "realtime"):
        raise fail("--mode must be batch or realtime")
    spec = _spec(
        name,
        _since(since),
        mode,
        pipeline=pipeline,
        source=source,
        table=table,
        query=query,
        id_column=id_column,
        text_column=text_column,
        updated_column=updated_column,
    )
    from cascade.jobrun import models_for
    from workers.pipeline import PipelineError, load_pipeline

    try:
        pipe = load_pipeline(spec.pipeline)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    with models_for(pipe, offline):
        _run(spec, pipe, wait)


def _since(since: str | None) -> datetime | None:
    """``--since`` as an aware time (UTC when it names no zone)."""
    try:
        when = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise fail(f"--since: not an ISO time: {since!r}") from None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _spec(name: str | None, when: datetime | None, mode: str | None, **source: Any) -> BackfillSpec:
    """The configured backfill ``name`` (``--since`` and ``--mode`` over its own), or
    the one the options describe."""
    from pydantic import ValidationError

    from workers.backfills import BackfillSpec, find_backfill

    try:
        if name is not None:
            spec = find_backfill(name)
            return spec.model_copy(update={"since": when or spec.since, "mode": mode or spec.mode})
        if source["pipeline"] is None or source["source"] is None:
            raise fail("--pipeline and --source are required (or --name, or --list)")
        return BackfillSpec(**source, mode=mode, since=when)
    except (LookupError, ValueError, ValidationError) as exc:
        raise fail(str(exc)) from None


def _run(spec: Any, pipe: Any, wait: bool) -> None:
    from tasks.backfill import batch_report, run_backfill
    from tasks.runtime import get_runtime
    from tasks.submit import SubmitError
    from workers.intake import InputError
    from workers.pipeline import PipelineError

    settings = get_settings()
    rt = get_runtime()
    ctx: Any
    if settings.embedded:
        from tasks.embedded import embedded_worker

        ctx = embedded_worker([*pipe.queues, "cascade.fallback"])
    else:
        from contextlib import nullcontext

        ctx = nullcontext()
    with ctx:
        try:
            result = run_backfill(rt, spec)
        except (PipelineError, InputError, SubmitError, ValueError) as exc:
            raise fail(str(exc)) from None
        if result.status == RunStatus.EMPTY or result.job_id is None:
            out.print(
                f"backfill run {result.run_id}: nothing new in {result.source} since "
                f"{_when(result.since)}"
            )
            return
        out.print(
            f"backfill run {result.run_id}: job [bold]{result.job_id}[/bold] ({result.job_name}): "
            f"{result.items_added:,} new items, {result.items_existing:,} already in the job, "
            f"{result.lines_rejected:,} rejected; "
            f"read {_when(result.since)} -> {_when(result.until)}"
        )
        if wait or settings.embedded:
            _wait(result.job_id)
    if wait or settings.embedded:
        from cascade.cli_report import print_job_report

        print_job_report(str(result.job_id), "table")
        print_batch_report(batch_report(rt, result.job_id))

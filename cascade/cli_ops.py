"""Operations commands: resume a paused job, purge old texts, doctor, refresh the rollup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cascade.cliutil import app, ensure_schema, fail, out, parse_usd, setup
from cascade.offline import Offline


@app.command()
def resume(
    job: Annotated[str, typer.Argument(help="job id or name")],
    budget: Annotated[str | None, typer.Option(help="new spend cap for the job, USD")] = None,
    wait: Annotated[bool, typer.Option(help="wait until the job is done")] = False,
    offline: Offline = False,
) -> None:
    """Finish a job: paused (spend limit, budget), stopped on its API key, or interrupted."""
    setup()
    from cascade.jobrun import run_resume

    budget_nanos = parse_usd(budget) if budget is not None else None
    run_resume(job, budget_nanos, wait=wait, offline=offline)


@app.command()
def purge(
    older_than: Annotated[str, typer.Option(help="age, e.g. 30d, 12h")] = "30d",
) -> None:
    """Remove item texts and metadata older than a given age; keep the ledger for reports."""
    setup()
    from datetime import UTC, datetime, timedelta

    from cascade.cli_chaos import parse_duration
    from models.retention import purge as do_purge
    from tasks.runtime import get_runtime

    seconds = parse_duration(older_than)
    ensure_schema()
    before = datetime.now(UTC) - timedelta(seconds=seconds)
    with get_runtime().sessions.begin() as session:
        items, lines = do_purge(session, before)
    out.print(
        f"purged the text of {items:,} items and {lines:,} rejected lines "
        f"finished before {before:%Y-%m-%d %H:%M} UTC"
    )


@app.command()
def doctor(
    pipeline: Annotated[
        list[Path] | None, typer.Option("--pipeline", "-p", help="pipeline files to check")
    ] = None,
    model: Annotated[str, typer.Option(help="model for the API key check")] = "claude-haiku-5-5",
) -> None:
    """Check the database, broker, Redis, pipeline files and API key; say how to fix each."""
    setup()
    from cascade.doctor import run_checks

    results = run_checks(pipeline or [], model)
    table = Table("check", "", "detail")
    for r in results:
        mark = "[green]ok[/green]" if r.ok else "[red]FAIL[/red]"
        detail = (
            escape(r.detail)
            if r.ok
            else f"{escape(r.detail)}\n[yellow]fix:[/yellow] {escape(r.fix)}"
        )
        table.add_row(escape(r.name), mark, detail)
    out.print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def rollup(
    grace: Annotated[
        int, typer.Option(help="leave attempts younger than this many seconds to the live tail")
    ] = 300,
) -> None:
    """Add the attempts after the rollup's watermark to the report_daily rollup.

    The beat runs this every five minutes (task cascade.rollup); report_daily is
    exact either way, the rollup only keeps it fast.
    """
    setup()
    if grace < 0:
        raise fail("--grace must be 0 or more seconds")
    ensure_schema()
    from datetime import timedelta

    from models import rollup as ru
    from tasks.runtime import get_runtime

    rt = get_runtime()
    done = ru.refresh(rt.sessions, grace=timedelta(seconds=grace))
    with rt.sessions() as session:
        st = ru.state(session)
    out.print(
        f"rollup: watermark {done.before:,} -> {done.after:,} "
        f"({done.batches} batch{'es' if done.batches != 1 else ''}); "
        f"{st.tail:,} newer attempts are aggregated live"
    )

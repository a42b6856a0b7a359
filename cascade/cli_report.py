"""`cascade report`: the job's cost, savings and per-tier funnel."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cascade.cliutil import app, ensure_schema, fail, find_job, out, setup


def print_job_report(ref: str, fmt: str) -> None:
    from cascade.render import job_report, print_report
    from models.reports import job_totals, tier_rows
    from tasks.runtime import get_runtime

    with get_runtime().sessions() as session:
        job = find_job(session, ref)
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
    setup()
    if fmt not in ("table", "json"):
        raise fail("--format must be table or json")
    ensure_schema()
    if job is None:
        from models.repo import list_jobs
        from tasks.runtime import get_runtime

        with get_runtime().sessions() as session:
            latest = list_jobs(session, limit=1)
        if not latest:
            raise fail("there are no jobs yet: run `cascade submit FILE --pipeline P.toml`")
        job = str(latest[0].id)
    print_job_report(job, fmt)

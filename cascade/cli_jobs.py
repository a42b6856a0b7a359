"""`cascade cancel` and `cascade rejected`: stop a job for good; see the lines it refused."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from cascade.cliutil import JobOpt, app, check_format, fail, job_session, out, setup
from common.lifecycle import JobStatus


@app.command()
def cancel(job: Annotated[str, typer.Argument(help="job id or name")]) -> None:
    """Stop a job for good: its unfinished items fail as cancelled, no more calls are made."""
    setup()
    from models import jobctl

    with job_session(job, write=True) as (session, j):
        if j.status == JobStatus.DONE:
            raise fail(f"job {j.id} is done: nothing to cancel", code=1)
        job_id = int(j.id)
        n = jobctl.cancel_job(session, job_id)
    out.print(f"job {job_id} cancelled: {n:,} unfinished item{'' if n == 1 else 's'} stopped")


@app.command()
def rejected(
    job: JobOpt,
    limit: Annotated[int, typer.Option(help="at most this many lines")] = 50,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | jsonl")] = "table",
) -> None:
    """The input lines a job refused: line number, reason, the start of the line."""
    setup()
    check_format(fmt, "table", "jsonl")
    from models.reports import rejected as rejected_rows

    with job_session(job) as (session, j):
        rows = rejected_rows(session, int(j.id), limit=limit)
    if fmt == "jsonl":
        for r in rows:
            record = {"source": r.source, "line": r.line_no, "reason": r.reason, "raw": r.raw}
            sys.stdout.write(json.dumps(record) + "\n")
        return
    if not rows:
        out.print(f"job {j.id}: no rejected lines")
        return
    table = Table("line", "reason", "text", title=f"Rejected lines of job {j.id}")
    table.columns[0].justify = "right"
    table.columns[0].no_wrap = True
    table.columns[1].overflow = "fold"
    table.columns[2].overflow = "ellipsis"
    table.columns[2].no_wrap = True
    for r in rows:
        table.add_row(f"{r.line_no:,}", r.reason, (r.raw or "")[:200])
    out.print(table)
    if len(rows) == limit:
        out.print(f"[dim]the first {limit:,}; --limit for more[/dim]")

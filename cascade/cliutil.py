"""Shared pieces of the command line: the app, consoles, errors, setup, job lookup."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from common.logs import configure_logging
from common.settings import get_settings

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Cascade: LLM cascades with a ledger."
)
out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {message}")
    return typer.Exit(code)


def parse_usd(text: str) -> int:
    """``"25.00"`` -> nano-USD, exactly."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise fail(f"{text!r} is not an amount in USD like 25.00") from None
    if not value.is_finite() or value < 0:
        raise fail(f"{text!r} is not an amount in USD like 25.00")
    return int(value * 1_000_000_000)


def setup() -> None:
    s = get_settings()
    configure_logging(s.log_format, s.log_level or "WARNING")


def ensure_schema() -> None:
    """The embedded SQLite database migrates itself; a server database must be migrated."""
    from migrations import runner

    url = get_settings().database_url
    if runner.is_at_head(url):
        return
    if url.startswith("sqlite"):
        runner.upgrade(url)
        return
    raise fail("the database is not migrated to the current schema: run `cascade migrate`")


def find_job(session: Any, ref: str) -> Any:
    from models.repo import job_by_ref

    job = job_by_ref(session, ref)
    if job is None:
        raise fail(f"no job with id or name {ref!r} (see `cascade jobs`)")
    return job

"""Shared pieces of the command line: the app, consoles, errors, setup, job lookup."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from common.logs import configure_logging
from common.settings import get_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Cascade: LLM cascades with a ledger.",
    context_settings={"help_option_names": ["-h", "--help"]},
    options_metavar="[OPTIONS]",
)
out = Console()
err = Console(stderr=True)
DB_WAIT_S = 6.0  # how long a command waits for an unreachable database before it gives up

# options that several commands take, spelt once
JobOpt = Annotated[str, typer.Option("--job", "-j", help="job id or name")]
PipelineOpt = Annotated[Path, typer.Option("--pipeline", "-p", help="pipeline TOML file")]
ProviderOpt = Annotated[str, typer.Option(help="anthropic | bedrock | vertex")]


_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "Path": "PATH"}


def _plain_types() -> None:
    """Help shows what to type (TEXT, INTEGER, PATH), as click does, not Python's
    ``<str>``/``<bool>``; a flag shows none. Typer has no setting for it, so its two
    display methods are replaced, once, here."""
    from typer.core import TyperArgument, TyperOption

    def display(self: Any, ctx: Any) -> str | None:
        if self.metavar is not None:
            return str(self.metavar)
        shown = str(self.display_type(ctx))
        bare = shown.strip("<>")
        if bare == "bool":
            return None
        return _TYPE_NAMES.get(bare, bare.upper())

    TyperOption.display_type_rich = display  # type: ignore[method-assign]
    TyperArgument.display_type_rich = display  # type: ignore[method-assign]


_plain_types()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("cascade")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        out.print(f"cascade {found}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="print the version"
    ),
) -> None:
    """Cascade: LLM cascades with a ledger."""


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def check_format(fmt: str, *allowed: str) -> None:
    """Stop the command unless ``fmt`` is one of ``allowed`` ("--format must be a, b or c")."""
    if fmt not in allowed:
        raise fail(f"--format must be {', '.join(allowed[:-1])} or {allowed[-1]}")


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
    """The embedded SQLite database migrates itself; a server database must be migrated.

    An unreachable database is waited for a few seconds (a restart), then the command
    stops with one line (:func:`db_unreachable`)."""
    from migrations import runner

    url = get_settings().database_url
    if with_db_wait(lambda: runner.is_at_head(url)):
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


@contextmanager
def job_session(ref: str, *, write: bool = False) -> Iterator[tuple[Any, Any]]:
    """The schema checked (:func:`ensure_schema`), a session and the job ``ref`` names in
    it (the command stops if there is none); ``write``: one transaction, committed at the end."""
    ensure_schema()
    from tasks.runtime import get_runtime

    sessions = get_runtime().sessions
    with sessions.begin() if write else sessions() as session:
        yield session, find_job(session, ref)


# deadlock detected, serialization failure: the transaction may simply run again
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def db_unreachable(exc: BaseException) -> str:
    """One line for a database that does not answer: where, why, what to do."""
    from common.logs import redact_text

    url = get_settings().database_url
    where = url.split("@")[-1] if "@" in url else url
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    why = redact_text(cause[0] if cause else type(exc).__name__)[:200]
    if getattr(getattr(exc, "orig", None), "sqlstate", None) in RETRYABLE_SQLSTATES:
        # the database answered: two writers crossed, nothing is wrong with it
        return (
            f"the database at {where} gave up on this command's transaction ({why}); "
            "run the command again: what is already written is not written twice"
        )
    return (
        f"cannot reach the database at {where} ({why}): start it, or fix CASCADE_DATABASE_URL; "
        "then run the command again"
    )


def with_db_wait(call: Any, wait_s: float = DB_WAIT_S) -> Any:
    """``call()``, retried on connection errors for about ``wait_s`` seconds in all."""
    import time

    from models.errors import DB_TRANSIENT

    deadline = time.monotonic() + wait_s
    delay = 0.25
    while True:
        try:
            return call()
        except DB_TRANSIENT as exc:
            if time.monotonic() + delay > deadline:
                raise fail(db_unreachable(exc), code=1) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def guarded(run: Any) -> None:
    """Run the CLI; what escapes a command becomes one line, never a traceback: a lost
    database, or (with the detail in the log at DEBUG) anything else. Usage errors,
    ``--help`` and exits are typer's own."""
    import sys

    from models.errors import DB_TRANSIENT

    try:
        run()
    except KeyboardInterrupt:
        err.print("\n[yellow]interrupted[/yellow]")
        sys.exit(130)
    except DB_TRANSIENT as exc:
        err.print(f"[bold red]error:[/bold red] {escape(db_unreachable(exc))}", soft_wrap=True)
        sys.exit(1)
    except Exception as exc:
        from common.logs import get_logger, redact_text

        get_logger("cascade.cli").debug("cascade.cli.crashed", exc_info=True)
        said = escape(redact_text(f"{type(exc).__name__}: {exc}")[:300])
        err.print(
            f"[bold red]error:[/bold red] {said} (CASCADE_LOG_LEVEL=DEBUG shows where)",
            soft_wrap=True,
        )
        sys.exit(1)

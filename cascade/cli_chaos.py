"""`cascade chaos`: fleet-wide chaos drills on a model.

A drill makes every worker treat a model as failing — no call is made, each
diverted call is recorded as a drill — until its time is up or it is cleared,
so operators can prove in production that the fallback carries the traffic.
Drills live in the database, so every worker on every machine sees them.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.table import Table

from cascade.cliutil import ProviderOpt, app, ensure_schema, fail, out, setup

chaos = typer.Typer(no_args_is_help=True, help="Chaos drills: disable a model fleet-wide.")

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise fail(f"--for: {text!r} is not a duration like 90s, 10m or 2h")
    return int(match.group(1)) * _UNIT[match.group(2)]


@chaos.command("disable")
def disable(
    model: Annotated[str, typer.Argument(help="model id, e.g. claude-haiku-5-5")],
    provider: ProviderOpt = "anthropic",
    for_: Annotated[str, typer.Option("--for", help="how long: 90s, 10m, 2h")] = "10m",
    reason: Annotated[str, typer.Option(help="why, for the report")] = "chaos drill",
) -> None:
    """Make every worker treat MODEL as failing for a while."""
    setup()
    from workers.pipeline import PROVIDERS

    if provider not in PROVIDERS:
        raise fail(f"--provider must be one of {', '.join(PROVIDERS)}")
    seconds = parse_duration(for_)
    ensure_schema()
    from models.resilience import start_drill
    from tasks.runtime import get_runtime

    key = f"{provider}:{model}"
    with get_runtime().sessions.begin() as session:
        drill = start_drill(session, key, seconds, reason)
        until = drill.until
    out.print(f"drill on [bold]{key}[/bold] until {until:%Y-%m-%d %H:%M:%S} UTC: {reason}")


@chaos.command("clear")
def clear(
    model: Annotated[str | None, typer.Argument(help="model id (default: every drill)")] = None,
    provider: ProviderOpt = "anthropic",
) -> None:
    """End drills now."""
    setup()
    ensure_schema()
    from models.resilience import clear_drills
    from tasks.runtime import get_runtime

    with get_runtime().sessions.begin() as session:
        n = clear_drills(session, f"{provider}:{model}" if model else None)
    out.print(f"cleared {n} drill(s)")


@chaos.command("list")
def list_() -> None:
    """Recent drills."""
    setup()
    ensure_schema()
    from models.resilience import list_drills
    from tasks.runtime import get_runtime

    table = Table("id", "reason", "started", "until", "cleared")
    table.add_column("model", no_wrap=True)
    with get_runtime().sessions() as session:
        for d in list_drills(session):
            table.add_row(
                str(d.id),
                d.reason,
                f"{d.started_at:%m-%d %H:%M}",
                f"{d.until:%m-%d %H:%M}",
                f"{d.cleared_at:%m-%d %H:%M}" if d.cleared_at else "",
                d.breaker_key,
            )
    out.print(table)


app.add_typer(chaos, name="chaos")

"""`make demo`: the bundled support-triage example through rules → small → large.

Offline unless ANTHROPIC_API_KEY is set: the project's fake Messages API is
started on 127.0.0.1 and every model call goes there, which the demo says loudly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from common.settings import get_settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_DB = "cascade-demo.db"


def run_demo(submit: Callable[..., Any]) -> None:
    console = Console(stderr=True)
    examples = EXAMPLES if EXAMPLES.is_dir() else Path.cwd() / "examples"
    if not os.environ.get("CASCADE_DATABASE_URL"):
        # the demo's jobs go in a database of their own, never in the user's cascade.db
        os.environ["CASCADE_DATABASE_URL"] = f"sqlite:///{DEMO_DB}"
        console.print(
            f"[dim]demo jobs go to {DEMO_DB} (your cascade.db is left alone); look again with "
            f"CASCADE_DATABASE_URL=sqlite:///{DEMO_DB} cascade report[/dim]",
            soft_wrap=True,
        )
    server = None
    if not os.environ.get("ANTHROPIC_API_KEY"):
        from cascade.fakeapi import FakeServer

        server = FakeServer(latency_ms=40, jitter_ms=20, seed=7)
        url = server.start()
        os.environ["ANTHROPIC_BASE_URL"] = url
        os.environ["ANTHROPIC_API_KEY"] = "offline-demo-key"
        console.print(
            Panel.fit(
                "[bold yellow]OFFLINE DEMO[/bold yellow] — no real Claude model is called.\n"
                f"Model calls go to Cascade's built-in fake Messages API at {url}\n"
                "(deterministic keyword answers, fake latency, real wire format).\n"
                "Set ANTHROPIC_API_KEY to run the same demo against the real API.",
                border_style="yellow",
            )
        )
    else:
        console.print(Panel.fit("[bold]LIVE[/bold]: calls go to the Anthropic API and cost money."))
    get_settings.cache_clear()
    try:
        submit(
            file=examples / "tickets.jsonl",
            pipeline=examples / "support_triage.toml",
            wait=True,
            job_name=None,
        )
    finally:
        if server is not None:
            stats = server.stats()
            console.print(f"[dim]fake Messages API served {stats['requests']:,} requests[/dim]")
            server.stop()

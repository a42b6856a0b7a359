"""Which model API a command talks to: the real one (with a key that can work) or,
offline, the project's own fake Messages API started inside the command.

`cascade submit`, `backfill`, `resume` and `demo` call :func:`model_api` before they
write anything: a missing or malformed key stops them with one line saying what to
set, instead of a job that retries an error no wait can cure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel

from common.settings import Settings, get_settings

Offline = Annotated[
    bool,
    typer.Option(
        "--offline",
        envvar="CASCADE_OFFLINE",
        help="no real model: start the built-in fake Messages API for this command",
    ),
]
OFFLINE_KEY = "offline-fake-key"
SET_KEY = "export ANTHROPIC_API_KEY=sk-ant-... , or add --offline to use the built-in fake API"


class KeyProblem(ValueError):
    """The key cannot work; the message says what to set (never the key)."""


def needs_key(pipeline: Any) -> bool:
    """True when some tier calls a model through the Anthropic API (Bedrock and Vertex
    take cloud credentials, not this key)."""
    from workers.pipeline import ClaudeTier

    links = [
        link
        for tier in pipeline.tiers
        if isinstance(tier, ClaudeTier)
        for link in [*tier.chain, *_check_links(tier)]
    ]
    return any(link.provider == "anthropic" for link in links)


def _check_links(tier: Any) -> list[Any]:
    found = []
    if tier.accept.consistency:
        found += list(tier.accept.consistency.models)
    if tier.accept.verifier:
        found.append(tier.accept.verifier.ref)
    return found


def check_key(settings: Settings) -> None:
    """Raise :class:`KeyProblem` for a key that cannot work: missing, blank, with spaces
    or characters no HTTP header carries, or (for the real API) not an Anthropic key."""
    key = settings.anthropic_api_key
    if key is None:
        raise KeyProblem(f"ANTHROPIC_API_KEY is not set: {SET_KEY}")
    value = key.get_secret_value()
    if not value.strip():
        raise KeyProblem(f"ANTHROPIC_API_KEY is empty: {SET_KEY}")
    if value != value.strip() or not (value.isascii() and value.isprintable()) or " " in value:
        raise KeyProblem(
            "ANTHROPIC_API_KEY is malformed (spaces, a line break or non-ASCII characters): "
            "set it to the key alone"
        )
    if settings.anthropic_base_url is None and not value.startswith("sk-ant-"):
        raise KeyProblem(
            "ANTHROPIC_API_KEY does not look like an Anthropic API key (sk-ant-...): "
            "check it, or set ANTHROPIC_BASE_URL for another endpoint"
        )


def probe_key(settings: Settings, pipeline: Any) -> None:
    """One free token-count call with the key: a refusal (401/403), or an API that
    cannot be reached at all, raises :class:`KeyProblem` before anything is written.
    A slow or busy API is left to the job's own calls and their retry policy."""
    import asyncio

    from workers.pipeline import ClaudeTier
    from workers.providers.anthropic import AnthropicProvider
    from workers.providers.base import AuthError, ProviderError

    link = next(
        link
        for tier in pipeline.tiers
        if isinstance(tier, ClaudeTier)
        for link in tier.chain
        if link.provider == "anthropic"
    )
    key = settings.anthropic_api_key

    async def count() -> None:
        provider = AnthropicProvider(
            "anthropic",
            key.get_secret_value() if key else None,
            settings.anthropic_base_url,
            timeout_s=10,
        )
        try:
            await provider.count_tokens(link.model, "Cascade key check.")
        finally:
            await provider.aclose()

    try:
        asyncio.run(count())
    except AuthError as exc:
        raise KeyProblem(
            f"the API refused ANTHROPIC_API_KEY ({exc.message}): set a valid key, or add "
            "--offline to use the built-in fake API"
        ) from None
    except ProviderError as exc:
        if exc.message.startswith("connection error"):  # no route, no DNS, refused
            where = settings.anthropic_base_url or "the Anthropic API"
            raise KeyProblem(
                f"cannot reach {where} ({exc.message}): check the network or "
                "ANTHROPIC_BASE_URL, or add --offline to use the built-in fake API"
            ) from None
        return  # busy or slow: the job's own calls retry


@contextmanager
def model_api(pipeline: Any, offline: bool, console: Console) -> Iterator[None]:
    """Offline: the fake Messages API runs for the block, announced loudly. Otherwise, on
    the embedded runtime (where this process makes the calls), the key must be usable.
    Raises :class:`KeyProblem`. Call before the runtime is built: it reads the settings."""
    settings = get_settings()
    if not offline:
        if settings.embedded and needs_key(pipeline):
            check_key(settings)
            probe_key(settings, pipeline)
        yield
        return
    if not settings.embedded:
        raise KeyProblem(
            "--offline runs the fake inside this command, so it serves the embedded runtime "
            "only: for workers, run `python -m cascade.fakeapi --host 0.0.0.0` and set their "
            "ANTHROPIC_BASE_URL (docker compose --profile offline does both)"
        )
    with fake_api(console):
        yield


@contextmanager
def fake_api(console: Console) -> Iterator[None]:
    """The fake Messages API on 127.0.0.1 for the block; every model call goes there."""
    from cascade.fakeapi import FakeServer

    saved = {k: os.environ.get(k) for k in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")}
    server = FakeServer(latency_ms=40, jitter_ms=20, seed=7)
    url = server.start()
    os.environ["ANTHROPIC_BASE_URL"] = url
    os.environ["ANTHROPIC_API_KEY"] = OFFLINE_KEY
    get_settings.cache_clear()
    console.print(
        Panel.fit(
            "[bold yellow]OFFLINE[/bold yellow]: no real Claude model is called.\n"
            f"Model calls go to Cascade's built-in fake Messages API at {url}\n"
            "(deterministic keyword answers, fake latency, real wire format).\n"
            "Set ANTHROPIC_API_KEY and leave out --offline to use the real API.",
            border_style="yellow",
        )
    )
    try:
        yield
    finally:
        requests = server.stats()["requests"]
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
        console.print(f"[dim]fake Messages API served {requests:,} requests[/dim]")

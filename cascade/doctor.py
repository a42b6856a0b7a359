"""`cascade doctor`: every dependency checked, each failure with what to do about it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.settings import Settings, SettingsError, get_settings


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _safe(name: str, fix: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except Exception as exc:
        from common.logs import redact_text

        return Check(name, False, redact_text(plain_reason(exc))[:300], fix)


def plain_reason(exc: BaseException) -> str:
    """What went wrong in words, not a class name: a driver's message (its first line:
    the rest is SQL and links), or the exception's own message whole."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if isinstance(orig, BaseException):
        lines = [x for x in str(orig).strip().splitlines() if x.strip()]
        return lines[0].strip() if lines else type(orig).__name__
    return str(exc).strip() or type(exc).__name__


def _database(settings: Settings) -> Check:
    from migrations import runner

    def probe() -> str:
        current, head = runner.current(settings.database_url), runner.head()
        if current != head:
            raise RuntimeError(f"schema at {current or 'nothing'}, code expects {head}")
        return f"reachable, schema at {head}"

    return _safe("database", "run `cascade migrate` (and check CASCADE_DATABASE_URL)", probe)


def _redis(name: str, url: str | None, fix: str) -> Check:
    if url is None:
        return Check(name, True, "not used (embedded runtime: in-process)")

    def probe() -> str:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
        return "reachable"

    return _safe(name, fix, probe)


def _workers(settings: Settings) -> Check:
    """Live workers (Celery's remote control) and what waits on each queue."""
    queues = [q for q in settings.queues.split(",") if q]

    def probe() -> str:
        from tasks.fleet import live_workers, queue_depths, serving

        workers = live_workers(timeout_s=1.5)
        depths = queue_depths(queues)
        served = serving(workers, queues)
        waiting = ", ".join(f"{q} {depths[q]:,} waiting" for q in queues)
        missing = [q for q in queues if not served[q]]
        if missing:
            raise RuntimeError(
                f"{len(workers)} live worker(s); nothing consumes {', '.join(missing)} ({waiting})"
            )
        return f"{len(workers)} live worker(s); {waiting}"

    fix = f"start one: cascade worker --queues {','.join(queues)} (one of them with --beat)"
    return _safe("workers", fix, probe)


def _pipeline(path: Path, settings: Settings) -> Check:
    from tasks.submit import check_models_priced
    from workers.pipeline import load_pipeline
    from workers.pricing import PriceTable

    def probe() -> str:
        pipe = load_pipeline(path)
        problems = check_models_priced(pipe, PriceTable.load(settings.prices_file))
        if problems:
            raise ValueError("; ".join(problems))
        return f"{pipe.name}: {len(pipe.tiers)} tiers, {len(pipe.labels)} labels"

    return _safe(f"pipeline {path}", "fix the problems listed (each has its path)", probe)


def _prompt_cache(path: Path, settings: Settings) -> Check:
    """Per model tier and model: is the stable prefix long enough to be cached, or by how
    much it falls short (advice, not a failure: a short prefix is simply not cached)."""
    from workers.caching import CachePlan
    from workers.pipeline import ClaudeTier, load_pipeline
    from workers.pricing import PriceTable
    from workers.prompt import system_prompt

    def probe() -> str:
        pipe = load_pipeline(path)
        prices = PriceTable.load(settings.prices_file)
        plan = CachePlan(
            lambda m: system_prompt(pipe, m), tuple(pipe.labels), prices.cache_min_tokens
        )
        notes = []
        for tier in pipe.tiers:
            if not isinstance(tier, ClaudeTier):
                continue
            for link in tier.chain:
                mech = tier.structured if tier.structured != "auto" else "tool"
                if tier.structured == "auto" and prices.knows(link.model):
                    mech = prices.structured(link.model)
                c = plan.check(link.model, mech)
                where = f"{tier.name}/{link.model}"
                if tier.cache == "off":
                    notes.append(f'{where}: off (cache = "off")')
                elif c.cacheable:
                    notes.append(f"{where}: cached, {tier.ttl} (~{c.tokens} tokens)")
                else:
                    notes.append(
                        f"{where}: NOT cached, prefix ~{c.tokens} tokens is {c.short_by} short "
                        f"of the {c.min_tokens} this model caches"
                    )
        return "; ".join(notes) or "no model tiers"

    return _safe(f"prompt cache {path}", "fix the pipeline first", probe)


def _api_key(settings: Settings, model: str) -> Check:
    if settings.offline:
        return Check("model API", True, "offline (CASCADE_OFFLINE): the built-in fake, no key")
    key = settings.anthropic_api_key
    if key is None:
        return Check(
            "model API",
            False,
            "ANTHROPIC_API_KEY is not set",
            "export ANTHROPIC_API_KEY=... (or ANTHROPIC_API_KEY_FILE=/run/secrets/...), "
            "or run without a model: --offline / CASCADE_OFFLINE=1",
        )

    def probe() -> str:
        import asyncio

        from workers.providers.anthropic import AnthropicProvider

        async def count() -> int:
            provider = AnthropicProvider(
                provider="anthropic",
                api_key=key.get_secret_value(),
                base_url=settings.anthropic_base_url,
                timeout_s=15,
            )
            try:
                return await provider.count_tokens(model, "Cascade doctor check.")
            finally:
                await provider.aclose()

        tokens = asyncio.run(count())
        where = settings.anthropic_base_url or "the Anthropic API"
        return f"key accepted by {where} (token count call: {tokens} tokens, nothing billed)"

    return _safe("model API", "check ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL", probe)


def run_checks(pipelines: list[Path], model: str) -> list[Check]:
    try:
        settings = get_settings()
    except SettingsError as exc:
        return [Check("settings", False, str(exc), "fix the variable named")]
    checks = [
        Check("settings", True, "runtime: " + ("embedded" if settings.embedded else "distributed")),
        _database(settings),
    ]
    if not settings.embedded:
        checks.append(
            _redis("broker", settings.broker_url, "start Redis or fix CASCADE_BROKER_URL")
        )
    checks.append(
        _redis(
            "shared state (breakers)",
            settings.shared_redis_url,
            "start Redis or fix CASCADE_REDIS_URL",
        )
    )
    if not settings.embedded:
        checks.append(_workers(settings))
    for path in pipelines:
        checks.append(_pipeline(path, settings))
        if checks[-1].ok:  # a broken pipeline is reported once, above
            checks.append(_prompt_cache(path, settings))
    checks.append(_api_key(settings, model))
    return checks

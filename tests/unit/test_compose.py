"""docker-compose.yml describes the distributed deployment of the example pipeline."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from workers.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PIPELINE_FILE = ROOT / "examples" / "support_triage.toml"
FALLBACK_QUEUE = "cascade.fallback"

WORKERS = ["worker-rules", "worker-small", "worker-large", "worker-fallback"]
APP_SERVICES = ["migrate", *WORKERS, "beat", "flower"]
REQUIRED = ["postgres", "redis", *APP_SERVICES]
SECRET_NAME = re.compile(r"API_KEY|TOKEN|SECRET", re.IGNORECASE)
# A value taken from the caller's environment: ${NAME}, ${NAME:?message}, ${NAME:-default}.
INTERPOLATED = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[?-][^}]*)?\}$")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data["services"]


def argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.partition("=")[::2] for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def worker_queues(args: list[str]) -> list[str] | None:
    """The queues a `celery ... worker` command consumes (None when it is not a worker)."""
    if "celery" not in args[:1] or "worker" not in args:
        return None
    queues: list[str] = []
    for i, arg in enumerate(args):
        if arg in ("-Q", "--queues") and i + 1 < len(args):
            queues += args[i + 1].split(",")
        elif arg.startswith("--queues="):
            queues += arg.removeprefix("--queues=").split(",")
        elif arg.startswith("-Q") and len(arg) > 2:
            queues += arg[2:].split(",")
    return [q.strip() for q in queues if q.strip()]


def consumers(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Queue -> the worker services that consume it."""
    out: dict[str, list[str]] = {}
    for name, service in services.items():
        for queue in worker_queues(argv(service)) or []:
            out.setdefault(queue, []).append(name)
    return out


def test_the_deployment_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name in REQUIRED if name not in services]
    assert not missing, f"docker-compose.yml lacks services {missing}"


def test_parsing_a_worker_command() -> None:
    assert worker_queues(shlex.split("celery -A tasks.app worker -Q a,b -n x@%h")) == ["a", "b"]
    assert worker_queues(["celery", "-A", "tasks.app", "worker", "--queues=c"]) == ["c"]
    assert worker_queues(["celery", "-A", "tasks.app", "beat"]) is None


def test_every_tier_queue_has_exactly_one_worker_service(
    services: dict[str, dict[str, Any]],
) -> None:
    queues = load_pipeline(PIPELINE_FILE).queues
    assert queues == ["tier.rules", "tier.small", "tier.large"]
    by_queue = consumers(services)
    for queue in queues:
        assert len(by_queue.get(queue, [])) == 1, f"{queue} consumed by {by_queue.get(queue)}"


def test_a_worker_consumes_the_fallback_queue(services: dict[str, dict[str, Any]]) -> None:
    assert consumers(services).get(FALLBACK_QUEUE) == ["worker-fallback"]


def test_workers_consume_only_known_queues(services: dict[str, dict[str, Any]]) -> None:
    known = {*load_pipeline(PIPELINE_FILE).queues, FALLBACK_QUEUE}
    for name in WORKERS:
        args = argv(services[name])
        queues = worker_queues(args)
        assert queues, f"{name} is not a celery worker with -Q: {args}"
        assert set(queues) <= known, f"{name} consumes unknown queues {set(queues) - known}"
        assert args[args.index("-A") + 1] == "tasks.app", name


def test_app_services_get_the_cascade_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        values = env(services[name])
        db = values.get("CASCADE_DATABASE_URL", "")
        assert db.startswith("postgresql+psycopg://") and "@postgres:" in db, (name, db)
        assert values.get("CASCADE_BROKER_URL", "").startswith("redis://redis:"), name
        assert values.get("CASCADE_REDIS_URL", "").startswith("redis://redis:"), name


def test_only_workers_get_the_api_key(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        has_key = "ANTHROPIC_API_KEY" in env(service)
        assert has_key == (name in WORKERS), f"{name}: ANTHROPIC_API_KEY present={has_key}"


def test_no_service_hard_codes_a_secret(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in env(service).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATED.match(value), f"{name}.{key} must come from ${{...}}"
    assert "sk-ant-" not in COMPOSE_FILE.read_text(encoding="utf-8")


def test_migrate_runs_first(services: dict[str, dict[str, Any]]) -> None:
    assert argv(services["migrate"])[:2] == ["cascade", "migrate"]
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    assert "healthcheck" in services["postgres"]
    for name in APP_SERVICES:
        if name != "migrate":
            assert depends_on(services[name]).get("migrate") == (
                "service_completed_successfully"
            ), name


def test_beat_and_flower(services: dict[str, dict[str, Any]]) -> None:
    beat = argv(services["beat"])
    assert beat[:4] == ["celery", "-A", "tasks.app", "beat"]
    flower = argv(services["flower"])
    assert flower[:4] == ["celery", "-A", "tasks.app", "flower"]
    assert "--port=5555" in flower
    assert any(str(port).startswith("5555:") for port in services["flower"].get("ports", []))

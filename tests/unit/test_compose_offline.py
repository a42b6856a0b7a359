"""docker-compose.yml works as described (issue 21), checked without a Docker engine:
task events on, Prometheus discovering every replica, an offline profile with the fake
API, a volume for input files, healthchecks, the image pinned by constraints.txt."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from cascade.fakeapi.__main__ import parse_args
from common.settings import Settings
from tests.unit.test_compose import COMPOSE_FILE, ROOT, WORKERS, argv, env

TEXT = COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(TEXT)["services"])


def test_workers_send_task_events_for_flower(services: dict[str, dict[str, Any]]) -> None:
    for name in WORKERS:
        assert "-E" in argv(services[name]) or "--task-events" in argv(services[name]), name


def test_workers_beat_and_flower_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in [*WORKERS, "beat", "flower", "fakeapi"]:
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
    for name in WORKERS:
        args = argv(services[name])
        node = args[args.index("-n") + 1].split("@")[0]
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"inspect ping -d {node}@$$HOSTNAME" in test, name  # pings itself


def test_prometheus_discovers_every_replica() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    sd = config["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["type"] == "A" and sd["port"] == 9808
    assert set(sd["names"]) == set(WORKERS)


def test_the_stack_starts_without_a_key(services: dict[str, dict[str, Any]]) -> None:
    assert ":?" not in TEXT  # nothing makes compose refuse to start
    for name in WORKERS:
        assert env(services[name])["ANTHROPIC_API_KEY"] == "${ANTHROPIC_API_KEY:-}"


def test_an_offline_profile_runs_the_fake_api(services: dict[str, dict[str, Any]]) -> None:
    fake = services["fakeapi"]
    assert fake["profiles"] == ["offline"]
    args = argv(fake)
    assert args[:3] == ["python", "-m", "cascade.fakeapi"]
    parsed = parse_args(args[3:])  # the command is one the fake accepts
    assert parsed.host == "0.0.0.0"
    # the URL the header tells users to set points at it
    assert f"ANTHROPIC_BASE_URL=http://fakeapi:{parsed.port}" in TEXT
    for name in WORKERS:
        assert env(services[name])["ANTHROPIC_BASE_URL"].startswith("${ANTHROPIC_BASE_URL:-")


def test_input_files_have_a_volume(services: dict[str, dict[str, Any]]) -> None:
    assert "./data:/app/data:ro" in services["migrate"]["volumes"]
    assert (ROOT / "data").is_dir()


def test_every_cascade_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    fields = {f"CASCADE_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        for key in env(service):
            if key.startswith("CASCADE_"):
                assert key in fields, f"{name}: {key} is not a setting the code reads"


def test_the_image_installs_with_the_constraints() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r"COPY [^\n]*constraints\.txt", docker)
    assert re.search(r"pip install -c constraints\.txt \.", docker)

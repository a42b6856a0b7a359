"""The monitoring files match the code: every dashboard query names a metric the workers
export, and Prometheus scrapes every worker service of docker-compose.yml."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = set(re.findall(r'"(cascade_[a-z_]+)"', (ROOT / "tasks" / "metrics.py").read_text()))


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/cascade.json").read_text())
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"cascade_[a-z_]+", target["expr"])
    }
    assert used, "the dashboard has queries"
    assert used <= EXPORTED, f"unknown metrics: {used - EXPORTED}"


def test_prometheus_scrapes_every_worker() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    workers = {
        name
        for name, svc in compose["services"].items()
        if "worker" in (svc.get("command") or [])
        and svc.get("environment", {}).get("CASCADE_METRICS_PORT")
    }
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    # DNS discovery: a service name resolves to every replica (--scale)
    targets = {
        name
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert "static_configs" not in config["scrape_configs"][0]
    assert workers == targets == {"worker-rules", "worker-small", "worker-large", "worker-fallback"}

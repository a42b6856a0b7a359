"""`cascade report` end to end in a subprocess: JSON/CSV/compare, and the HTML page
rendered by headless Chromium (skips locally without chromium, fails under CI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from migrations.runner import upgrade
from models.db import make_engine
from tests.e2e.conftest import run
from tests.integration.conftest import build_ledger
from tests.integration.test_analytics import build_triage
from tests.services import require_service

CHART_IDS = ("chart-funnel", "chart-cost", "chart-latency", "chart-daily")
LEGACY_KEYS = (
    "job_id", "status", "items_total", "items_done", "items_failed", "lines_rejected",
    "model_calls", "input_tokens", "output_tokens", "cost_usd", "baseline_cost_usd",
    "savings_usd", "savings_pct", "tiers",
)  # fmt: skip


@pytest.fixture
def report_env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'cascade.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            build_ledger(conn)
            build_triage(conn)
    finally:
        engine.dispose()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
    return base | {"CASCADE_DATABASE_URL": url, "CASCADE_LOG_LEVEL": "WARNING"}


def test_report_json_csv_compare_and_filters(report_env: dict[str, str]) -> None:
    r = json.loads(run(report_env, "report", "--job", "triage-1", "--format", "json").stdout)
    assert all(k in r for k in LEGACY_KEYS)
    assert (r["items_total"], r["cost_usd"], r["savings_pct"]) == (4, "0.000002600", 35.0)
    for section in ("funnel", "cost", "latency", "reliability", "confidence", "daily"):
        assert r[section], section

    scoped = run(report_env, "report", "--pipeline", "triage", "--label", "billing",
                 "--since", "2026-11-01", "--until", "2026-11-30", "--format", "json")  # fmt: skip
    assert json.loads(scoped.stdout)["items_total"] == 2

    csv = run(report_env, "report", "--job", "triage-1", "--format", "csv").stdout
    assert "funnel,small,escalated,3" in csv.splitlines()

    cmp = json.loads(
        run(report_env, "report", "--compare", "main", "triage-1", "--format", "json").stdout
    )
    assert cmp["a"]["job_name"] == "main" and cmp["b"]["job_name"] == "triage-1"
    assert cmp["diff"]["items_total"] == "-3"
    table = run(report_env, "report", "--compare", "main", "triage-1")
    assert table.returncode == 0 and "small.escalated" in table.stdout

    full = run(report_env, "report", "--job", "triage-1")
    assert full.returncode == 0
    assert "cascading too aggressively" in full.stdout
    assert "Breaker openings" in full.stdout

    bad = run(report_env, "report", "--since", "yesterday")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
    return path


def test_html_report_renders_in_headless_chromium(
    report_env: dict[str, str], tmp_path: Path
) -> None:
    require_service("chromium", _chromium)
    page = tmp_path / "report.html"
    result = run(report_env, "report", "--job", "triage-1", "--html", str(page))
    assert result.returncode == 0, result.stderr
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://', "")
    assert "https://" not in html

    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1280,2000", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90,
        check=False,
    )  # fmt: skip
    shot = tmp_path / "report.png"
    png = subprocess.run(
        [*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
        timeout=90, check=False,
    )  # fmt: skip

    assert dom.returncode == 0, dom.stderr[-2000:]
    for chart in CHART_IDS:
        assert f'<svg id="{chart}"' in dom.stdout, chart
    assert dom.stdout.count('class="bar"') >= 10
    for log in (dom.stderr, png.stderr):
        assert "Uncaught" not in log
        assert "CONSOLE" not in log.upper().replace("DBUS", "")
    assert shot.exists() and shot.stat().st_size > 20_000

"""The HTML report as a page people want to read (issue 21), looked at in headless
Chromium; the screenshot is kept as a CI artefact (CASCADE_ARTIFACTS, else tmp)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import PIPELINE, TICKETS, run
from tests.services import require_service

pytestmark = pytest.mark.e2e


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
    return path


def test_the_html_report_reads_well(env: dict[str, str], tmp_path: Path) -> None:
    # Given the example run offline and its report written as HTML
    key_free = {k: v for k, v in env.items() if not k.startswith("ANTHROPIC_")}
    done = run(key_free, "submit", str(TICKETS), "-p", str(PIPELINE), "--offline")
    assert done.returncode == 0, done.stderr
    page = tmp_path / "report.html"
    assert run(env, "report", "--html", str(page)).returncode == 0
    html = page.read_text(encoding="utf-8")
    # Then money has sensible precision and counts their separators
    assert not re.search(r"\$\d[\d,]*\.\d{5,}", html), "money with more than 4 decimals"
    # And the headline tiles, the offline note, the confidence histogram are there
    for tile in ("saved against all on the last tier", "cost per 1,000 items", "items"):
        assert tile in html
    assert "fake Messages API" in html
    assert '<svg id="chart-confidence"' in html
    # And legends are words, empty sections say none
    assert ">p50_ms<" not in html and ">p50<" in html
    assert 'class="none">none<' in html
    # And a one-day run is a sentence, not a chart of one bar
    assert '<svg id="chart-daily"' not in html and "all on " in html

    require_service("chromium", _chromium)
    shots = Path(os.environ.get("CASCADE_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "report-page.png"
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]  # fmt: skip
    png = subprocess.run(
        [*flags, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert png.returncode == 0, png.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000

"""Logging (common/logs.py): one line shape for structlog and stdlib loggers, secrets
redacted whatever path they take, levels, and configuration done once.

configure_logging changes process-wide state (the root logger, structlog's config), so
each case runs it in a fresh interpreter and reads what it wrote to stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common.logs import redact_text

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-ant-api03-abcdefghijklmnop_QRST-uvwx"

SCRIPT = """
import logging
from common.logs import configure_logging, get_logger

configure_logging({fmt!r}, {level!r})
configure_logging("console" if {fmt!r} == "json" else "json", "debug")  # no effect: done once
log = get_logger("cascade.test")
log.info("cascade.test.event", note="key {key} here", api_key=123, auth_token=None,
         count=3, header="Authorization: Bearer abcdefghijklmnopqrstuvwx")
log.debug("cascade.test.debug_only")
logging.getLogger("celery.worker").warning("stdlib says %s", "{key}")
logging.getLogger("httpx").info("a noisy library's info line")
logging.getLogger("anthropic").warning("a noisy library's warning")
"""


def run_logging(fmt: str, level: str) -> str:
    code = SCRIPT.format(fmt=fmt, level=level, key=KEY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == ""  # logs go to stderr only
    return done.stderr


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key={KEY}", "key=[redacted]"),
        # too short to be a key: left alone
        ("sk-ant-abc", "sk-ant-abc"),
        ("Authorization: bearer abcdefghijklmnop1234", "Authorization: [redacted]"),
        ("BEARER abcdefghijklmnop1234", "[redacted]"),
        # a short bearer value is no token
        ("bearer short", "bearer short"),
        (f"{KEY} and {KEY}", "[redacted] and [redacted]"),
        ("nothing secret", "nothing secret"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_json_lines_have_one_shape_and_no_secret() -> None:
    stderr = run_logging("json", "info")

    assert KEY not in stderr and "abcdefghijklmnopqrstuvwx" not in stderr
    event, stdlib, noisy = json_lines(stderr)
    assert event["event"] == "cascade.test.event"
    assert (event["level"], event["logger"]) == ("info", "cascade.test")
    assert event["note"] == "key [redacted] here"
    assert event["api_key"] == "[redacted]"  # a secret-named field, whatever its type
    assert event["auth_token"] is None  # nothing to hide
    assert event["count"] == 3
    assert event["header"] == "Authorization: [redacted]"
    assert event["timestamp"].endswith("Z")  # ISO, UTC
    # a stdlib logger (Celery's) goes through the same processors
    assert stdlib["event"] == "stdlib says [redacted]"
    assert (stdlib["level"], stdlib["logger"]) == ("warning", "celery.worker")
    assert "timestamp" in stdlib
    # the SDK's and HTTP libraries' loggers are kept to warnings
    assert (noisy["logger"], noisy["level"]) == ("anthropic", "warning")


def test_debug_lines_appear_only_at_debug_level() -> None:
    events = [e["event"] for e in json_lines(run_logging("json", "debug"))]

    assert "cascade.test.debug_only" in events
    assert "a noisy library's info line" not in events  # still kept to warnings


def test_console_lines_are_not_json_and_are_redacted_too() -> None:
    stderr = run_logging("console", "info")

    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 3
    assert "cascade.test.event" in lines[0]
    assert not lines[0].lstrip().startswith("{")
    assert KEY not in stderr and "[redacted]" in lines[0]
    assert "stdlib says [redacted]" in lines[1]

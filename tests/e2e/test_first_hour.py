"""A new user's first hour (issue 21): keys that cannot work, offline runs, interrupted
jobs, cancelling, rejected lines, and nothing but one line when something is wrong."""

from __future__ import annotations

import http.server
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cascade.fakeapi import FakeServer
from tests.e2e.conftest import CASCADE, PIPELINE, ROOT, TICKETS, run

pytestmark = pytest.mark.e2e
MODELS = ("claude-haiku-5-5", "claude-sonnet-5-5")


def no_key(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("ANTHROPIC_")}


def db(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(env["CASCADE_DATABASE_URL"].removeprefix("sqlite:///"))


def write_tickets(path: Path, n: int) -> Path:
    words = ["refund", "password", "crash", "invoice", "login", "slow", "charge", "thanks"]
    with path.open("w") as f:
        for i in range(n):
            text = " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(6)) + f" #{i}"
            f.write(json.dumps({"id": f"t{i}", "text": text}) + "\n")
    return path


def test_submit_without_a_key_stops_at_once_with_one_line(env: dict[str, str]) -> None:
    # Given no ANTHROPIC_API_KEY (the README's own "Using it" line)
    started = time.monotonic()
    done = run(no_key(env), "submit", str(TICKETS), "--pipeline", str(PIPELINE))
    # Then it stops before doing any work (about 1 s on an idle machine: the bound only
    # catches a hang or a wait for retries, and leaves room for a loaded host), with one
    # line saying what to set, and writes nothing
    assert time.monotonic() - started < 60
    assert done.returncode != 0
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, done.stderr
    assert "ANTHROPIC_API_KEY" in lines[0] and "--offline" in lines[0]
    assert "Traceback" not in done.stderr
    assert not Path(env["CASCADE_DATABASE_URL"].removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("key", ["  ", "sk-ant-with a space", "sk-ant-é"])
def test_a_malformed_key_stops_submit(env: dict[str, str], key: str) -> None:
    done = run(env | {"ANTHROPIC_API_KEY": key}, "submit", str(TICKETS), "-p", str(PIPELINE))
    assert done.returncode != 0
    assert "ANTHROPIC_API_KEY" in done.stderr and "Traceback" not in done.stderr


def test_a_rejected_key_fails_the_job_with_the_reason(
    env: dict[str, str], fake: FakeServer
) -> None:
    # Given an API that refuses the key (401) on every model
    for model in MODELS:
        fake.set_faults(model, error_status=401, error_type="authentication_error")
    started = time.monotonic()
    done = run(env, "submit", str(TICKETS), "-p", str(PIPELINE), "--job-name", "nokey")
    # Then the job ends failed with the reason, quickly, not deferred and retried
    assert time.monotonic() - started < 60
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(run(env, "report", "--job", "nokey", "--format", "json").stdout)
    assert report["status"] == "failed"
    assert "refused the credentials" in report["message"]
    # no retries of a call that cannot pass: at most one call per item that reached a model
    assert fake.stats()["requests"] <= report["items_total"]
    with db(env) as conn:
        kinds = {k for (k,) in conn.execute("SELECT DISTINCT outcome FROM attempts")}
    assert "transient" not in kinds and "breaker_open" not in kinds


def test_offline_switch_runs_submit_without_a_key(env: dict[str, str]) -> None:
    done = run(no_key(env), "submit", str(TICKETS), "-p", str(PIPELINE), "--offline")
    assert done.returncode == 0, done.stderr
    assert "OFFLINE" in done.stderr
    assert "done" in done.stdout
    by_env = run(
        no_key(env) | {"CASCADE_OFFLINE": "1"}, "submit", str(TICKETS), "-p", str(PIPELINE)
    )
    assert by_env.returncode == 0, by_env.stderr


def interrupt_when_some_done(env: dict[str, str], args: list[str], at_least: int) -> str:
    """Run ``cascade *args``; Ctrl-C once ``at_least`` items are done; its stderr."""
    proc = subprocess.Popen(
        [CASCADE, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    path = env["CASCADE_DATABASE_URL"].removeprefix("sqlite:///")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if not os.path.exists(path):
            continue
        try:
            with sqlite3.connect(path, timeout=1) as conn:
                n = conn.execute("SELECT count(*) FROM items WHERE status='done'").fetchone()[0]
        except sqlite3.OperationalError:
            continue
        if n >= at_least:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    return stderr


@pytest.mark.parametrize("again", ["submit", "resume"])
def test_an_interrupted_embedded_job_finishes_when_run_again(
    env: dict[str, str], fake: FakeServer, tmp_path: Path, again: str
) -> None:
    # Given a 3,000-item job interrupted with Ctrl-C while it runs
    big = write_tickets(tmp_path / "big.jsonl", 3000)
    submit = ["submit", str(big), "-p", str(PIPELINE), "--job-name", "big"]
    stderr = interrupt_when_some_done(env, submit, at_least=200)
    assert "interrupted" in stderr and "cascade resume" in stderr
    assert "Traceback" not in stderr
    with db(env) as conn:
        left = conn.execute("SELECT count(*) FROM items WHERE status <> 'done'").fetchone()[0]
    assert left > 0
    # When the same submit (or resume) runs again
    done = run(env, *submit) if again == "submit" else run(env, "resume", "big")
    # Then every item is done, each model call made once per item and tier, but for a
    # call the interrupt cut off (in the ledger as outcome 'unknown': it was sent)
    assert done.returncode == 0, done.stderr
    with db(env) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM items GROUP BY 1").fetchall())
        twice = conn.execute(
            "SELECT item_id, tier_index FROM attempts "
            "WHERE role = 'primary' GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        cut = conn.execute(
            "SELECT item_id, tier_index FROM attempts WHERE role = 'primary' "
            "AND outcome = 'unknown'"
        ).fetchall()
        calls = conn.execute("SELECT count(*) FROM attempts WHERE role <> 'rules'").fetchone()[0]
        job = conn.execute("SELECT status FROM jobs WHERE name = 'big'").fetchone()[0]
    assert statuses == {"done": 3000}
    assert job == "done"
    assert set(twice) <= set(cut)
    assert calls <= fake.stats()["requests"]


def test_cancel_stops_a_job_for_good(env: dict[str, str], tmp_path: Path) -> None:
    big = write_tickets(tmp_path / "big.jsonl", 2000)
    interrupt_when_some_done(
        env, ["submit", str(big), "-p", str(PIPELINE), "--job-name", "c"], at_least=50
    )
    done = run(env, "cancel", "c")
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout
    with db(env) as conn:
        job = conn.execute("SELECT status, message FROM jobs WHERE name='c'").fetchone()
        left = conn.execute(
            "SELECT count(*) FROM items WHERE status NOT IN ('done', 'failed')"
        ).fetchone()[0]
    assert job[0] == "failed" and "cancelled" in job[1]
    assert left == 0
    again = run(env, "resume", "c")
    assert again.returncode != 0 and "cancelled" in again.stderr


def test_rejected_lines_are_listed_and_a_file_of_none_exits_non_zero(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Given the example (3 bad lines) submitted
    assert run(env, "submit", str(TICKETS), "-p", str(PIPELINE), "--job-name", "r").returncode == 0
    # Then `cascade rejected` lists them with their line numbers and reasons
    listed = run(env, "rejected", "--job", "r", "--format", "jsonl")
    rows = [json.loads(x) for x in listed.stdout.splitlines()]
    assert len(rows) == 3
    assert all(r["line"] > 0 and r["reason"] for r in rows)
    assert run(env, "rejected", "--job", "r").returncode == 0
    # And a file with no valid line (random bytes) exits non-zero, pointing there
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(os.urandom(4096).replace(b"\n", b"\n\x00"))
    done = run(env, "submit", str(junk), "-p", str(PIPELINE), "--job-name", "junk")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status", "1"],
        ["report"],
        ["sweep"],
        ["rollup"],
        ["jobs"],
        ["backfill", "-p", str(PIPELINE), "-s", str(TICKETS)],
    ],
)
def test_an_unreachable_database_is_one_line_not_a_traceback(
    env: dict[str, str], args: list[str]
) -> None:
    # Given a Postgres URL where nothing listens (port 9: refused at once)
    gone = env | {"CASCADE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/nothing"}
    started = time.monotonic()
    done = run(gone, *args)
    # Then the command retries for a few seconds, then says so in one line
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip() and not x.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert "cannot reach the database at 127.0.0.1:9/nothing" in lines[0]


def test_small_things_a_new_user_meets(env: dict[str, str], tmp_path: Path) -> None:
    # --version and -h
    version = run(env, "--version")
    assert version.returncode == 0 and version.stdout.startswith("cascade ")
    helped = run(env, "submit", "-h")
    assert helped.returncode == 0
    assert "<bool>" not in helped.stdout and "<str>" not in helped.stdout
    assert "--offline" in helped.stdout
    # a misspelt key gets a suggestion
    typo = tmp_path / "typo.toml"
    typo.write_text(PIPELINE.read_text().replace("min_confidence", "min_confidense"))
    done = run(env, "submit", str(TICKETS), "-p", str(typo))
    assert "did you mean 'min_confidence'?" in done.stderr
    # an unknown model: the file, the place, and the models that have a price
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(PIPELINE.read_text().replace("claude-haiku-5-5", "claude-haikoo-9"))
    done = run(env, "submit", str(TICKETS), "-p", str(unknown))
    assert done.returncode != 0
    assert "unknown.toml" in done.stderr and "tiers[1].model" in done.stderr
    assert "claude-haiku-5-5" in done.stderr  # among the priced ones
    # sweep on the embedded runtime says what to do instead
    swept = run(env, "sweep")
    assert swept.returncode != 0 and "cascade resume" in swept.stderr
    for result in (version, helped, done, swept):
        assert "Traceback" not in result.stderr


def test_the_demo_leaves_the_users_database_alone(env: dict[str, str], tmp_path: Path) -> None:
    demo_env = {k: v for k, v in env.items() if k not in ("CASCADE_DATABASE_URL",)}
    demo_env = {k: v for k, v in demo_env.items() if not k.startswith("ANTHROPIC_")}
    done = subprocess.run(
        [CASCADE, "demo"], cwd=tmp_path, env=demo_env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cascade-demo.db").exists()
    assert not (tmp_path / "cascade.db").exists()
    assert "OFFLINE" in done.stderr


def test_a_job_whose_every_call_fails_permanently_ends_failed(
    env: dict[str, str], fake: FakeServer
) -> None:
    # Given every model retired, fallbacks too (404: permanent, no retry, no deferral)
    for model in (*MODELS, "claude-haiku-4-5", "claude-opus-5-5"):
        fake.set_faults(model, error_status=404, error_type="not_found_error")
    done = run(env, "submit", str(TICKETS), "-p", str(PIPELINE), "--job-name", "gone")
    # Then the job ends failed, saying why, and the command exits non-zero
    assert done.returncode == 1, done.stderr
    report = json.loads(run(env, "report", "--job", "gone", "--format", "json").stdout)
    assert report["status"] == "failed"
    assert "every model call failed" in report["message"]
    assert "not_found_error" in report["message"]
    assert report["items_done"] > 0  # what the rules answered stays answered


class _Refuses(http.server.BaseHTTPRequestHandler):
    """An API that refuses every key, as the real one does a revoked one."""

    def do_POST(self) -> None:
        body = json.dumps(
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("api", ["refuses", "unreachable"])
def test_submit_checks_the_key_with_the_api_before_writing(env: dict[str, str], api: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = (
        f"http://127.0.0.1:{server.server_address[1]}" if api == "refuses" else "http://127.0.0.1:9"
    )
    try:
        done = run(env | {"ANTHROPIC_BASE_URL": url}, "submit", str(TICKETS), "-p", str(PIPELINE))
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode != 0
    lines = [x for x in done.stderr.splitlines() if x.strip() and not x.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert ("refused ANTHROPIC_API_KEY" if api == "refuses" else "cannot reach") in lines[0]
    assert "Traceback" not in done.stderr
    assert not Path(env["CASCADE_DATABASE_URL"].removeprefix("sqlite:///")).exists()

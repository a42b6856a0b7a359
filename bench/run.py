"""The one command: ``python -m bench.run [--quick] [--only NAME ...]`` (``make bench``).

Every scenario runs against the fake Messages API in its own process
(``python -m cascade.fakeapi``, 100 ± 10 ms), on the distributed runtime: Redis
(db 10; db 12 for the limiter) + Postgres (a fresh database per scenario) +
``celery -A tasks.app worker`` processes, submitting with ``cascade submit``.
Prints a table and writes ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import data, memory, tail
from bench.procs import BIN, ROOT, Sampler, spawn, start_worker, stop, stop_group, wait_for_line
from bench.tail import Fleet
from common.settings import Settings

RESULTS = ROOT / "bench" / "results"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# CASCADE_BENCH_REDIS (host:port) points the benchmarks at a Redis server of their own.
REDIS = os.environ.get("CASCADE_BENCH_REDIS", "127.0.0.1:6379")
BROKER = f"redis://{REDIS}/10"
LIMITER = f"redis://{REDIS}/12"
API_KEY = "sk-ant-bench-0000000000000000"


@dataclass
class Sizes:
    mixed: int
    rules: int
    submit: int
    small: int  # the "10,000" point of the RSS-flatness comparison
    raw: int
    sequential: int
    rate_window_s: float
    tail: int = 3_000  # moderation posts per job of the tail and realistic scenarios
    memory: tuple[int, int] = (10_000, 100_000)  # the `memory` scenario's two job sizes


QUICK = Sizes(10_000, 100_000, 100_000, 10_000, 10_000, 150, 30.0, 1_000, (2_000, 20_000))
FULL = Sizes(100_000, 1_000_000, 1_000_000, 10_000, 50_000, 300, 120.0)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, sizes: Sizes, workers: int, work: Path, concurrency: int) -> None:
        self.sizes = sizes
        self.workers = workers
        self.concurrency = concurrency  # model calls in flight per worker process
        self.work = work
        self.results: dict[str, Any] = {}
        self.fake_url = ""
        self.fake: subprocess.Popen[bytes] | None = None
        self._pools: dict[str, list[str]] | None = None

    # -- plumbing ---------------------------------------------------------------------
    def pools(self) -> dict[str, list[str]]:
        if self._pools is None:
            self._pools = data.pools()
        return self._pools

    @property
    def pipeline(self) -> Path:
        return data.submitted_pipeline(self.work)

    def file(self, kind: str, n: int) -> Path:
        path = self.work / f"{kind}_{n}.jsonl"
        if not path.exists():
            log(f"writing {path.name}")
            lines = (
                data.mixed(n, self.pools()) if kind == "mixed" else data.only(n, kind, self.pools())
            )
            data.write(path, lines)
        return path

    def start_fake(self) -> None:
        flog = self.work / "fake.log"
        flog.unlink(missing_ok=True)
        self.fake = spawn(
            [
                sys.executable,
                "-m",
                "cascade.fakeapi",
                "--port",
                "0",
                "--latency-ms",
                "100",
                "--jitter-ms",
                "10",
                "--seed",
                "4",
            ],
            dict(os.environ),
            flog,
        )
        line = wait_for_line(flog, "listening on")
        self.fake_url = line.rsplit(" ", 1)[-1]
        log(f"fake API at {self.fake_url} (pid {self.fake.pid})")

    def fake_requests(self) -> int:
        with urllib.request.urlopen(self.fake_url + "/_fake/stats", timeout=10) as r:
            return int(json.loads(r.read())["requests"])

    @contextmanager
    def database(self, name: str) -> Iterator[str]:
        db = f"cascade_bench_{name}_{secrets.token_hex(3)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{db}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
        try:
            from migrations.runner import upgrade

            upgrade(url)
            yield url
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def env(self, db_url: str, base_url: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
        env |= {
            "CASCADE_DATABASE_URL": db_url,
            "CASCADE_BROKER_URL": BROKER,
            "ANTHROPIC_BASE_URL": base_url or self.fake_url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CASCADE_LOG_FORMAT": "json",
            "CASCADE_LOG_LEVEL": "WARNING",
            "CASCADE_CONCURRENCY": str(self.concurrency),
        }
        return env

    def sampler(self, db_url: str) -> Sampler:
        dbname = db_url.rsplit("/", 1)[-1]
        conn = psycopg.connect(PG_ADMIN, autocommit=True)
        own = conn.info.backend_pid

        def backends() -> dict[int, str]:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,)
            ).fetchall()
            return {int(r[0]): "postgres" for r in rows if r[0] != own}

        s = Sampler(extra=backends)
        s.close = conn.close  # type: ignore[attr-defined]
        return s

    @contextmanager
    def workers_running(
        self,
        env: dict[str, str],
        procs: int,
        concurrency: int,
        app: str = "tasks.app",
        separate: bool = False,
    ) -> Iterator[list[subprocess.Popen[bytes]]]:
        redis.Redis.from_url(BROKER).flushdb()
        wlog = self.work / "workers.log"
        started = []
        count, conc = (procs, 1) if separate else (1, concurrency)
        for i in range(count):
            name = f"bench{i}-{secrets.token_hex(2)}@%h"
            started.append(start_worker(env, wlog, processes=conc, app=app, name=name))
        time.sleep(4.0)  # prefork children up and consuming
        try:
            yield started
        finally:
            for p in started:
                stop_group(p)

    def wait_done(self, db_url: str, job: str, timeout: float) -> float:
        dsn = db_url.replace("+psycopg", "")
        deadline = time.monotonic() + timeout
        with psycopg.connect(dsn, autocommit=True) as c:
            while time.monotonic() < deadline:
                row = c.execute("SELECT status FROM jobs WHERE name = %s", (job,)).fetchone()
                if row and row[0] in ("done", "failed"):
                    return time.monotonic()
                time.sleep(0.2)
        raise TimeoutError(f"job {job} not done in {timeout} s")

    def counts(self, db_url: str, job: str) -> dict[str, Any]:
        dsn = db_url.replace("+psycopg", "")
        with psycopg.connect(dsn) as c:
            rows = c.execute(
                "SELECT i.status, coalesce(i.final_tier, '-'), count(*) FROM items i "
                "JOIN jobs j ON j.id = i.job_id WHERE j.name = %s GROUP BY 1, 2",
                (job,),
            ).fetchall()
            calls = c.execute("SELECT count(*) FROM attempts WHERE role <> 'rules'").fetchone()
        return {
            "by_status_tier": {f"{s}/{t}": n for s, t, n in rows},
            "model_calls_in_ledger": calls[0] if calls else 0,
        }

    def cli(
        self, env: dict[str, str], args: list[str], sampler: Sampler, module: str | None = None
    ) -> float:
        cmd = [sys.executable, "-m", module] if module else [str(BIN / "cascade")]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [*cmd, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        sampler.track(proc.pid, "cli")
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # its own peak RSS and CPU, exactly
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.exited(proc.pid, usage)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {out.decode()[-2000:]}")
        return time.monotonic() - t0

    # -- scenarios ----------------------------------------------------------------------
    def cascade_run(
        self, name: str, kind: str, n: int, *, timeout: float, door: bool = True
    ) -> dict[str, Any]:
        """Submit a file to running workers and wait until the job is done.

        ``door=False``: a first rules tier goes through tier.rules and the workers
        (CASCADE_RULES_AT_SUBMIT=false), the route every item took before the door.
        """
        path = self.file(kind, n)
        with self.database(name) as url:
            env = self.env(url) | {"CASCADE_RULES_AT_SUBMIT": str(door).lower()}
            sampler = self.sampler(url)
            assert self.fake is not None
            with self.workers_running(env, self.workers, self.workers) as procs:
                for p in procs:
                    sampler.track(p.pid, "worker")
                sampler.track(self.fake.pid, "fake")
                sampler.start()
                calls0 = self.fake_requests()
                t0 = time.monotonic()
                job = f"{name}-{n}"
                submit_s = self.cli(
                    env,
                    ["submit", str(path), "--pipeline", str(self.pipeline), "--job-name", job],
                    sampler,
                )
                t1 = self.wait_done(url, job, timeout)
                sampler.stop()
                calls = self.fake_requests() - calls0
            sampler.close()  # type: ignore[attr-defined]
            seconds = t1 - t0
            cpu = sampler.cpu_by_role()
            total_cpu = sum(cpu.values())
            out = {
                "items": n,
                "seconds": round(seconds, 2),
                "submit_seconds": round(submit_s, 2),
                "items_per_s": round(n / seconds, 1),
                "model_calls": calls,
                "model_calls_per_s": round(calls / seconds, 1),
                "cpu_s_by_role": {k: round(v, 2) for k, v in cpu.items()},
                "cpu_s_per_1k": round(total_cpu / n * 1000, 3),
                "cpu_s_per_1k_without_fake": round((total_cpu - cpu.get("fake", 0)) / n * 1000, 3),
                "peak_rss": sampler.peak_rss(),
                **self.counts(url, job),
            }
        log(f"{name}: {out['items_per_s']} items/s, {out['model_calls_per_s']} calls/s")
        return out

    def submit_only(self, name: str, n: int) -> dict[str, Any]:
        path = self.file("rules", n)
        with self.database(name) as url:
            # intake alone: items written pending and their messages sent, none decided
            env = self.env(url) | {"CASCADE_RULES_AT_SUBMIT": "false"}
            redis.Redis.from_url(BROKER).flushdb()
            sampler = self.sampler(url)
            sampler.start()
            seconds = self.cli(
                env,
                ["submit", str(path), "--pipeline", str(self.pipeline), "--job-name", name],
                sampler,
            )
            sampler.stop()
            sampler.close()  # type: ignore[attr-defined]
            redis.Redis.from_url(BROKER).flushdb()
            size = path.stat().st_size
            cpu = sampler.cpu_by_role()
            out = {
                "lines": n,
                "mb": round(size / 1e6, 1),
                "seconds": round(seconds, 2),
                "lines_per_s": round(n / seconds, 1),
                "cpu_s_by_role": {k: round(v, 2) for k, v in cpu.items()},
                "peak_rss": sampler.peak_rss(),
            }
        log(f"{name}: {out['lines_per_s']} lines/s")
        return out

    def latency(self) -> dict[str, Any]:
        with self.database("latency") as url:
            env = self.env(url)
            with self.workers_running(env, self.workers, self.workers):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.latency", "--n", "200", "--dir", str(self.work)],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        log(f"latency: {result}")
        return result

    def peer(self, peer: str, n: int, concurrency: int) -> dict[str, Any]:
        path = self.file("mixed", max(n, 10_000))
        assert self.fake is not None
        sampler = Sampler()
        sampler.track(self.fake.pid, "fake")
        sampler.start()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.peers",
                peer,
                str(path),
                "--base-url",
                self.fake_url,
                "--n",
                str(n),
                "--concurrency",
                str(concurrency),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        sampler.stop()
        if out.returncode != 0:
            return {"error": out.stderr[-1500:]}
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        if "skipped" not in result:
            fake_cpu = sampler.cpu_by_role().get("fake", 0.0)
            result["cpu_s_per_1k_with_fake"] = round(
                (result["cpu_s"] + fake_cpu) / result["items"] * 1000, 3
            )
        log(f"peer {peer}: {result}")
        return result

    def rate_limit(self, rpm: int = 600, procs: int = 4) -> dict[str, Any]:
        window = self.sizes.rate_window_s
        warmup = 5.0
        n = int(rpm / 60 * (window + warmup + 10) * 1.2)
        path = self.work / f"small_rl_{n}.jsonl"
        data.write(path, data.only(n, "small", self.pools()))
        plog = self.work / "proxy.log"
        plog.unlink(missing_ok=True)
        proxy = spawn(
            [
                sys.executable,
                "-m",
                "bench.limitproxy",
                "--upstream",
                self.fake_url,
                "--rpm",
                str(rpm),
                "--burst",
                "20",
            ],
            dict(os.environ),
            plog,
        )
        try:
            purl = wait_for_line(plog, "listening on").rsplit(" ", 1)[-1]
            redis.Redis.from_url(LIMITER).flushdb()
            with self.database("ratelimit") as url:
                env = self.env(url, base_url=purl)
                env["CASCADE_BENCH_LIMITER_URL"] = LIMITER
                env["CASCADE_BENCH_RATE_LIMITS"] = json.dumps(
                    {"anthropic:claude-haiku-5-5": {"requests_per_min": rpm, "burst_s": 1.0}}
                )
                with self.workers_running(env, procs, 1, app="bench.limited_app", separate=True):
                    subprocess.run(
                        [
                            str(BIN / "cascade"),
                            "submit",
                            str(path),
                            "--pipeline",
                            str(self.pipeline),
                            "--job-name",
                            "rl",
                        ],
                        cwd=ROOT,
                        env=env,
                        capture_output=True,
                        check=True,
                    )
                    time.sleep(warmup + window + 2)
                    with urllib.request.urlopen(purl + "/_proxy/stats", timeout=10) as r:
                        stats = json.loads(r.read())
        finally:
            stop(proxy)
        stamps = sorted(stats["forwarded"])
        if not stamps:
            return {"error": "no calls reached the proxy"}
        t0 = stamps[0] + warmup
        inside = [t for t in stamps if t0 <= t < t0 + window]
        per_min = len(inside) / window * 60
        # the busiest 10-second stretch inside the window
        best, j = 0, 0
        for i, t in enumerate(inside):
            while inside[j] < t - 10:
                j += 1
            best = max(best, i - j + 1)
        out = {
            "limit_rpm": rpm,
            "worker_processes": procs,
            "window_s": window,
            "calls_in_window": len(inside),
            "observed_rpm": round(per_min, 1),
            "deviation_pct": round((per_min - rpm) / rpm * 100, 2),
            "max_rpm_any_10s": round(best * 6, 1),
            "responses_429": stats["rejected_429"],
        }
        log(f"rate limit: {out}")
        return out


def machine() -> dict[str, Any]:
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "pace_s_at_start": pace(),
    }


def pace() -> float:
    """Seconds for a fixed pure-Python loop: this VM's speed at the moment, read at the
    start and the end of a run (the same code has read 1.25-1.56 s minutes apart)."""
    t0 = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return round(time.perf_counter() - t0, 3)


def _peak(scn: dict[str, Any], role: str) -> float:
    return max(
        (float(p["peak_rss_mb"]) for p in scn.get("peak_rss", []) if p["role"] == role), default=0.0
    )


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) rows."""
    rows: list[tuple[str, str, str, str]] = []

    def add(
        name: str, value: float | None, target: str, ok: bool | None, fmt: str = "{:,.1f}"
    ) -> None:
        shown = "-" if value is None else fmt.format(value)
        rows.append((name, shown, target, "n/a" if ok is None else "MET" if ok else "MISSED"))

    mixed, raw, lite = r.get("mixed"), r.get("peer_raw"), r.get("peer_litellm")
    if mixed:
        add("mixed cascade items/s (distributed, persisted)", mixed["items_per_s"], "-", None)
        add("mixed model calls/s", mixed["model_calls_per_s"], "-", None)
        add("mixed CPU s / 1,000 items (all procs)", mixed["cpu_s_per_1k"], "-", None, "{:.2f}")
    if mixed and raw and "items_per_s" in raw:
        ratio = mixed["items_per_s"] / raw["items_per_s"] * 100
        add("mixed vs raw ceiling (%)", ratio, ">= 90 %", ratio >= 90)
    if mixed and lite and "items_per_s" in lite:
        x = mixed["items_per_s"] / lite["items_per_s"]
        add("mixed vs LiteLLM Router (x)", x, ">= 5x", x >= 5, "{:.2f}")
    elif mixed:
        add("mixed vs LiteLLM Router (x)", None, ">= 5x", None)
    if r.get("rules"):
        v = r["rules"]["items_per_s"]
        add("rules-only items/s", v, ">= 20,000", v >= 20_000)
    if r.get("submit"):
        v = r["submit"]["lines_per_s"]
        add("submit lines/s (intake: COPY, messages sent)", v, ">= 50,000", v >= 50_000)
    small, big = r.get("submit_small"), r.get("submit")
    if small and big:
        a, b = _peak(small, "cli"), _peak(big, "cli")
        add(
            f"CLI peak RSS MB {small['lines']:,} -> {big['lines']:,}",
            b,
            f"<= {a * 1.1:.0f} and < 300",
            b <= a * 1.1 and b < 300,
        )
    if r.get("rules_workers"):
        v = r["rules_workers"]["items_per_s"]
        add("rules-only items/s through tier.rules (door off)", v, "-", None)
    # worker memory: the door-off runs, where the workers decide every item
    rs, rb = r.get("rules_workers_small"), r.get("rules_workers")
    if rs and rb:
        a, b = _peak(rs, "worker"), _peak(rb, "worker")
        add(
            f"worker peak RSS MB {rs['items']:,} -> {rb['items']:,}",
            b,
            f"<= {a * 1.1:.0f} and < 300",
            b <= a * 1.1 and b < 300,
        )
    if r.get("latency"):
        lat = r["latency"]
        v = lat.get("db_p95_ms")
        if v is not None:  # the row's finished_at - created_at, as measured before the door
            add(
                "rules item added latency p95 ms (idle): insert->decision",
                v,
                "< 5",
                v < 5,
                "{:.2f}",
            )
        v = lat["p95_ms"]
        add("one-item submit p95 ms (idle): call -> seen done", v, "< 5 (strict)", v < 5, "{:.2f}")
    rl = r.get("rate_limit")
    if rl and "observed_rpm" in rl:
        ok = abs(rl["deviation_pct"]) <= 5 and rl["responses_429"] == 0
        add(
            f"rate limit 600 rpm, 4 procs, {rl['window_s']:.0f} s window (rpm)",
            rl["observed_rpm"],
            "570-630, no 429",
            ok,
        )
    rows += tail_rows(r, add)
    return rows


def tail_rows(r: dict[str, Any], add: Callable[..., None]) -> list[tuple[str, str, str, str]]:
    """Rows of the tail scenarios (no targets: "before" and "after" figures)."""
    t = r.get("tail")
    if t and "constant" in t and "lognormal" in t:
        for key in ("constant", "lognormal"):
            run = t[key]
            add(f"tail {key}: steady calls/s", run["steady"].get("calls_per_s"), "-", None)
            add(
                f"tail {key}: slot utilization (%)",
                None if run["slot_utilization"] is None else run["slot_utilization"] * 100,
                "-",
                None,
            )
            for q in ("p50", "p95"):
                add(
                    f"tail {key}: last reply -> settled row {q} (s)",
                    run["settle_lag_s"].get(q),
                    "-",
                    None,
                    "{:.3f}",
                )
        add("tail: steady calls/s lognormal / constant", t["throughput_ratio"], "-", None, "{:.3f}")
    mem = r.get("memory")
    if mem and mem.get("ratio") is not None:
        small, big = mem["small"]["items"], mem["big"]["items"]
        add(
            f"distributed worker child peak RSS MB {small:,} -> {big:,}",
            mem["peak_big_mb"],
            f"<= {mem['peak_small_mb'] * 1.1:.0f}",
            mem["ratio"] <= 1.1,
        )
    rr = r.get("realistic")
    if rr and "limit_share" in rr:
        for model, share in rr["limit_share"].items():
            add(f"realistic: share of 4,000 rpm used, {model} (%)", share["share"] * 100, "-", None)
        for model, share in rr.get("limit_share_while_busy", {}).items():
            v = share["share"] * 100
            add(f"realistic: share while busy, {model} (%)", v, ">= 95", v >= 95)
        add("realistic: 429 responses", rr["responses_429"], "-", None, "{:,.0f}")
        add(
            "realistic: slot utilization (%)",
            None if rr["slot_utilization"] is None else rr["slot_utilization"] * 100,
            "-",
            None,
        )
    return []


def table(results: dict[str, Any]) -> str:
    lines = []
    scen = [
        ("mixed", "items_per_s", "model_calls_per_s"),
        ("rules", "items_per_s", None),
        ("rules_small", "items_per_s", None),
        ("rules_workers", "items_per_s", None),
        ("rules_workers_small", "items_per_s", None),
        ("peer_raw", "items_per_s", "model_calls_per_s"),
        ("peer_sequential", "items_per_s", "model_calls_per_s"),
        ("peer_litellm", "items_per_s", "model_calls_per_s"),
    ]
    lines.append(
        f"{'scenario':<22}{'items':>10}{'items/s':>11}{'calls/s':>10}{'CPU s/1k':>10}"
        f"{'peak RSS MB (max per role)':>40}"
    )
    for key, ips, cps in scen:
        s = results.get(key)
        if not s:
            continue
        if "skipped" in s or "error" in s:
            lines.append(f"{key:<22}  {s.get('skipped') or 'error: ' + s['error'][-60:]}")
            continue
        roles = {}
        for p in s.get("peak_rss", []):
            roles[p["role"]] = max(roles.get(p["role"], 0), p["peak_rss_mb"])
        rss = (
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(roles.items()))
            or f"{s.get('peak_rss_mb', '-')}"
        )
        lines.append(
            f"{key:<22}{s['items']:>10,}{s[ips]:>11,.1f}"
            f"{(s[cps] if cps else 0):>10,.1f}{s.get('cpu_s_per_1k', 0):>10.2f}{rss:>40}"
        )
    for key in ("submit", "submit_small"):
        s = results.get(key)
        if s:
            lines.append(
                f"{key:<22}{s['lines']:>10,}{s['lines_per_s']:>11,.1f} lines/s, "
                f"{s['mb']} MB, CLI peak RSS {_peak(s, 'cli'):.0f} MB"
            )
    lines.append("")
    lines.append(f"{'figure':<58}{'measured':>12}  {'target':<22}verdict")
    for name, value, target, verdict in verdicts(results):
        lines.append(f"{name:<58}{value:>12}  {target:<22}{verdict}")
    return "\n".join(lines)


SCENARIOS = (
    "peers",
    "mixed",
    "rules",
    "submit",
    "latency",
    "ratelimit",
    "tail",
    "realistic",
    "memory",
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="scaled-down sizes (a few minutes)")
    p.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--workers", type=int, default=4, help="prefork processes of the worker")
    p.add_argument(
        "--concurrency",
        type=int,
        default=Settings.model_fields["concurrency"].default,
        help="CASCADE_CONCURRENCY: model calls in flight per worker process",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the scenarios of the previous latest.json that this run skips",
    )
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/cascade-bench"))
    p.add_argument(
        "--tail-items", type=int, default=None, help="posts per tail/realistic job (else by size)"
    )
    p.add_argument(
        "--realistic-concurrency",
        type=int,
        default=128,
        help="CASCADE_CONCURRENCY of `realistic`: 2 x 2 x 128 slots could carry 13,700 calls/min "
        "at 2.24 s a call, more than the two models' 2 x 4,000 limit",
    )
    a = p.parse_args(argv)
    sizes = QUICK if a.quick else FULL
    a.work_dir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    bench = Bench(sizes, a.workers, a.work_dir, a.concurrency)
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": a.quick,
        "sizes": sizes.__dict__,
        "worker_processes": a.workers,
        "concurrency_per_process": a.concurrency,
    }
    latest = RESULTS / "latest.json"
    if a.merge and latest.exists():
        previous = json.loads(latest.read_text())
        results = {**previous, **results, "merged_from_previous_run": True}
    started = time.monotonic()
    if set(a.only) - {"tail", "realistic", "memory"}:
        bench.start_fake()  # the tail scenarios start fakes of their own
    fleet = Fleet(workers=2, processes=max(1, a.workers // 2), concurrency=a.concurrency)
    busy = Fleet(workers=2, processes=fleet.processes, concurrency=a.realistic_concurrency)
    tail_n = a.tail_items or sizes.tail
    concurrency = a.workers * a.concurrency  # the peers get what the whole fleet has in flight
    steps: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("peers", "peer_sequential", lambda: bench.peer("sequential", sizes.sequential, 1)),
        ("peers", "peer_raw", lambda: bench.peer("raw", sizes.raw, concurrency)),
        ("peers", "peer_litellm", lambda: bench.peer("litellm", min(sizes.raw, 2000), concurrency)),
        ("mixed", "mixed", lambda: bench.cascade_run("mixed", "mixed", sizes.mixed, timeout=3600)),
        (
            "rules",
            "rules_small",
            lambda: bench.cascade_run("rules", "rules", sizes.small, timeout=3600),
        ),
        ("rules", "rules", lambda: bench.cascade_run("rules", "rules", sizes.rules, timeout=7200)),
        (
            "rules",
            "rules_workers_small",
            lambda: bench.cascade_run("rulesw", "rules", sizes.small, timeout=3600, door=False),
        ),
        (
            "rules",
            "rules_workers",
            lambda: bench.cascade_run("rulesw", "rules", sizes.rules, timeout=7200, door=False),
        ),
        ("submit", "submit", lambda: bench.submit_only("subm", sizes.submit)),
        ("submit", "submit_small", lambda: bench.submit_only("subs", sizes.small)),
        ("latency", "latency", bench.latency),
        ("ratelimit", "rate_limit", bench.rate_limit),
        ("tail", "tail", lambda: tail.tail(a.work_dir, tail_n, fleet, BROKER)),
        ("realistic", "realistic", lambda: tail.realistic(a.work_dir, tail_n, busy, BROKER)),
        ("memory", "memory", lambda: memory.memory(a.work_dir, *sizes.memory, fleet, BROKER)),
    ]
    try:
        for group, key, fn in steps:
            if group not in a.only:
                continue
            log(f"running {key}")
            try:
                results[key] = fn()
            except Exception as exc:  # report and go on: one broken scenario keeps the others
                results[key] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"{key} failed: {exc}")
    finally:
        if bench.fake is not None:
            stop(bench.fake)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["pace_s_at_end"] = pace()
    results["verdicts"] = [
        dict(zip(("figure", "measured", "target", "verdict"), v, strict=True))
        for v in verdicts(results)
    ]
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    print(
        f"\n{results['machine']['cpus']} CPUs, {results['machine']['cpu_model']}; "
        f"total {results['total_seconds']} s; CPU pace (5M-step Python loop) "
        f"{results['machine']['pace_s_at_start']} s at start, "
        f"{results['machine']['pace_s_at_end']} s at end; JSON in {RESULTS / 'latest.json'}"
    )


if __name__ == "__main__":
    main()

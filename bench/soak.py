"""The chaos soak: ``python -m bench.soak [--quick] [--baseline]`` (``make soak``).

Moderation posts (``examples/moderation.toml``) through the distributed runtime —
its own redis-server, a fresh Postgres database, two ``cascade worker`` processes
(:func:`bench.procs.start_worker`), the fake Messages API with lognormal latency
and its request log — while it misbehaves:

- 4 % HTTP errors (429 with ``retry-after``, 529, 500 in turn) and 1 % dropped
  connections on both primary models (claude-haiku-5-5, claude-sonnet-5-5);
- every ``--kill-every`` seconds one worker's whole process group gets SIGKILL
  (the two in turn) and is replaced at once;
- once, when about a third of the items are finished, Redis is restarted empty;
- once, at about 60 %, Postgres is restarted with ``$CASCADE_TEST_PG_RESTART_CMD``
  (only when it is set and ``--no-pg-restart`` is not given: the shared Postgres of
  a development machine must not be restarted);
- with ``--sweep``, ``cascade sweep`` every ``--sweep-every`` seconds (off by
  default: recovery should not need it).

Then it reports, from the request log and the ledger (:mod:`bench.accounting`):
calls and tokens server vs ledger, unknown outcomes, double billing, duplicates,
lost items, kill -> re-claim times, tracebacks printed by CLI commands, and the wall
time (against a fault-free run of the same size with ``--baseline``). Every loop is
bounded in count and time; all traffic is on 127.0.0.1; every process it starts is
stopped on the way out (also on Ctrl-C or an error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, text

from bench import accounting as acc
from bench import data, stack
from bench.kills import twice_by_kill
from bench.procs import BIN, ROOT, kill_group, start_worker, stop_group
from bench.tail import shape_args
from cascade.fakeapi.latency import LatencySpec
from cascade.fakeapi.reqlog import read_log

PRIMARIES = ("claude-haiku-5-5", "claude-sonnet-5-5")
CHAOS_FAULT = {"error_cycle": [429, 529, 500], "error_rate": 0.04, "retry_after": 1}
DROP_RATE = 0.01
TRACEBACK = "Traceback (most recent call last)"
RESULTS = ROOT / "bench" / "results"


@dataclass
class Options:
    items: int
    processes: int = 2
    concurrency: int = 32
    kill_every: float = 30.0
    sweep: bool = False
    sweep_every: float = 30.0
    sweep_idle: int = 120
    lease_seconds: int | None = None
    redis_port: int = 6401
    redis_restart: bool = True
    pg_restart: bool = True
    max_seconds: float = 1800.0
    stall_seconds: float = 300.0
    latency: LatencySpec = field(
        default_factory=lambda: LatencySpec("lognormal", median_ms=700, sigma=0.9, cap_ms=20_000)
    )
    seed: int = 7
    work: Path = Path("/tmp/cascade-soak")
    keep_db: bool = False


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Kill:
    """One SIGKILL and the items its worker held (leased, not yet settled) just before."""

    at: float  # epoch seconds
    worker: int
    # item id -> (lease token, tier index, status) at the kill
    held: dict[int, tuple[str, int, str]]
    reclaimed: dict[int, float] = field(default_factory=dict)  # item -> seconds after the kill
    moved: set[int] = field(default_factory=set)  # settled or moved on by a live worker


def lease_change(at_kill: tuple[str, int, str], now: tuple[str | None, int, str]) -> str | None:
    """How an item leased at a kill has changed: None (not yet), ``reclaimed`` (a new
    lease at the same tier and status: the old one was never cleared by a settle, so it
    was the dead worker's), or ``moved`` (settled or moved on: a live worker had it)."""
    token, tier, status = at_kill
    new_token, new_tier, new_status = now
    if new_token == token:
        return None
    if new_token is not None and (new_tier, new_status) == (tier, status):
        return "reclaimed"
    return "moved"


class Watcher:
    """Follows, after each kill, the items that were leased at the kill.

    An item counts as the killed worker's, re-claimed, when it next shows a new lease
    token at the same tier and status (a claim of an expired or abandoned lease: the
    old token was never cleared by a settle). Any other change (the token cleared,
    another tier or status) means a live worker settled it: it was not the killed
    worker's and is dropped. The re-claim time is the item's ``updated_at`` (written
    by the claim) minus the kill time. Items still unchanged at the end are reported
    as never re-claimed.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.kills: list[Kill] = []

    def snapshot(self) -> dict[int, tuple[str, int, str]]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as c:
            rows = c.execute(
                "SELECT id, lease_token, tier_index, status FROM items "
                "WHERE status IN ('running', 'fallback_running') AND lease_token IS NOT NULL"
            ).fetchall()
        return {int(r[0]): (str(r[1]), int(r[2]), str(r[3])) for r in rows}

    def add_kill(self, kill: Kill) -> None:
        """Follow a kill's items, but not those an earlier kill already left stranded
        (still under the same dead lease): they belong to that kill."""
        for k in self.kills:
            for pk, state in k.held.items():
                if pk not in k.reclaimed and pk not in k.moved and kill.held.get(pk) == state:
                    del kill.held[pk]
        self.kills.append(kill)

    def poll(self) -> None:
        open_ids = {
            i for k in self.kills for i in k.held if i not in k.reclaimed and i not in k.moved
        }
        if not open_ids:
            return
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as c:
            rows = c.execute(
                "SELECT id, lease_token, tier_index, status, updated_at FROM items "
                "WHERE id = ANY(%s)",
                (list(open_ids),),
            ).fetchall()
        now = {int(r[0]): (r[1], int(r[2]), str(r[3]), r[4]) for r in rows}
        for k in self.kills:
            for pk, (token, tier, status) in k.held.items():
                if pk in k.reclaimed or pk in k.moved or pk not in now:
                    continue
                new_token, new_tier, new_status, updated = now[pk]
                change = lease_change((token, tier, status), (new_token, new_tier, new_status))
                if change == "reclaimed":
                    k.reclaimed[pk] = round((acc.epoch(updated) or 0.0) - k.at, 3)
                elif change == "moved":
                    k.moved.add(pk)

    def report(self) -> dict[str, Any]:
        delays = [d for k in self.kills for d in k.reclaimed.values()]
        never = [
            pk for k in self.kills for pk in k.held if pk not in k.reclaimed and pk not in k.moved
        ]
        return {
            "kills": len(self.kills),
            "items_reclaimed": len(delays),
            "reclaim_s": acc.percentiles(delays, (50,)),
            "never_reclaimed": len(never),
            "per_kill": [
                {
                    "at": round(k.at, 3),
                    "worker": k.worker,
                    "leased_at_kill": len(k.held),
                    "reclaimed": len(k.reclaimed),
                    "settled_by_live_workers": len(k.moved),
                    "median_s": acc.percentiles(list(k.reclaimed.values()), (50,)).get("p50"),
                }
                for k in self.kills
            ],
        }


@dataclass
class Fleet:
    """The two workers, restarted under the same slot when killed."""

    env: dict[str, str]
    log: Path
    processes: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, n: int = 2) -> None:
        for _ in range(n):
            self.procs.append(start_worker(self.env, self.log, processes=self.processes))

    def kill(self, i: int) -> float:
        """SIGKILL worker ``i``'s whole process group and start its replacement; returns
        when the signal went (epoch seconds): what was on the wire then was cut off."""
        old = self.procs[i]
        at = time.time()
        kill_group(old, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            old.wait(10)
        self.procs[i] = start_worker(self.env, self.log, processes=self.processes)
        return at

    def stop(self) -> None:
        for p in self.procs:
            stop_group(p, timeout=15)


@dataclass
class Cli:
    """CLI commands the soak ran, their output kept to count tracebacks."""

    env: dict[str, str]
    work: Path
    outputs: list[Path] = field(default_factory=list)
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = self.work / f"cli-{len(self.outputs):03d}-{name}.log"
        self.outputs.append(out)
        with out.open("wb") as f:
            proc = subprocess.Popen(
                [str(BIN / "cascade"), *args],
                cwd=ROOT,
                env=self.env,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(proc)
        return proc

    def run(self, name: str, args: list[str], timeout: float = 300) -> int:
        proc = self.start(name, args)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return -1

    def reap(self, timeout: float = 0.0) -> None:
        for p in list(self.running):
            if timeout:
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    kill_group(p)
            if p.poll() is not None:
                self.running.remove(p)

    def stop(self) -> None:
        for p in self.running:
            kill_group(p)
        self.running.clear()

    def tracebacks(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for path in self.outputs:
            n = path.read_text(errors="replace").count(TRACEBACK) if path.exists() else 0
            if n:
                out[path.name] = n
        return out


@contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the soak like Ctrl-C: through every ``finally`` that cleans up."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def done_fraction(dsn: str, job: str) -> tuple[float, str | None]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        row = c.execute(
            "SELECT j.status, count(i.id), "
            "count(i.id) FILTER (WHERE i.status IN ('done', 'failed', 'budget_capped')) "
            "FROM jobs j LEFT JOIN items i ON i.job_id = j.id WHERE j.name = %s "
            "GROUP BY j.status",
            (job,),
        ).fetchone()
    if row is None or not row[1]:
        return 0.0, None if row is None else str(row[0])
    return row[2] / row[1], str(row[0])


def run(opts: Options, *, chaos: bool, name: str) -> dict[str, Any]:
    """One soak run (``chaos=False``: the fault-free baseline of the same size)."""
    work = opts.work / name
    work.mkdir(parents=True, exist_ok=True)
    posts = data.write(opts.work / f"posts_{opts.items}.jsonl", data.posts(opts.items))
    fake_args = [*shape_args(opts.latency), "--seed", str(opts.seed)]
    if chaos:
        faults = {m: {**CHAOS_FAULT, "drop_rate": DROP_RATE} for m in PRIMARIES}
        fake_args += ["--faults", json.dumps(faults)]
    pg_cmd = os.environ.get("CASCADE_TEST_PG_RESTART_CMD") if chaos and opts.pg_restart else None
    events: list[dict[str, Any]] = []
    job = f"soak-{name}"
    with ExitStack() as stack_:
        redis_server = stack.RedisServer(opts.redis_port, work)
        redis_server.start()
        stack_.callback(redis_server.stop)
        fake = stack_.enter_context(stack.fake_api(work, "fake", fake_args))
        url = stack_.enter_context(stack.database(f"soak_{name}", keep=opts.keep_db))
        dsn = stack.dsn(url)
        extra = {"CASCADE_CONCURRENCY": str(opts.concurrency), "CASCADE_SPOOL_DIR": str(work)}
        if opts.lease_seconds is not None:
            extra["CASCADE_LEASE_SECONDS"] = str(opts.lease_seconds)
        env = stack.env_for(url, redis_server.url + "/0", fake.url, **extra)
        wlog = work / "workers.log"
        wlog.unlink(missing_ok=True)
        fleet = Fleet(env, wlog, opts.processes)
        stack_.callback(fleet.stop)
        cli = Cli(env, work)
        stack_.callback(cli.stop)
        fleet.start(2)
        time.sleep(6.0)  # the SDK imported, children forked and consuming
        watcher = Watcher(dsn)
        t0 = time.time()
        code = cli.run(
            "submit",
            ["submit", str(posts), "--pipeline", str(data.MODERATION), "--job-name", job],
        )
        events.append({"at": round(time.time() - t0, 2), "event": "submitted", "exit": code})
        log(f"{name}: submitted {opts.items:,} posts (exit {code})")
        finished, status = _drive(
            opts, chaos, dsn, job, t0, fleet, cli, watcher, redis_server, pg_cmd, events
        )
        wall = time.time() - t0
        fleet.stop()
        cli.reap(timeout=30)
        engine = create_engine(url)
        try:
            ledger = _ledger(engine, job)
        finally:
            engine.dispose()
        worker_text = wlog.read_text(errors="replace") if wlog.exists() else ""
        worker_tracebacks = worker_text.count(TRACEBACK)
    calls = [acc.Call.from_log(e) for e in read_log(fake.requests)]
    return {
        "name": name,
        "chaos": chaos,
        "items": opts.items,
        "finished": finished,
        "job_status": status,
        "wall_s": round(wall, 1),
        "events": events,
        "calls": acc.compare(calls, ledger.rows),
        "double_billed": acc.double_billed(calls, ledger.rows, ledger.items),
        "twice_by_kill": twice_by_kill(calls, [k.at for k in watcher.kills]),
        "duplicates": acc.duplicates(ledger.rows),
        "unfinished": acc.unfinished(ledger.items),
        "kills": watcher.report(),
        "cli_tracebacks": cli.tracebacks(),
        "worker_log_tracebacks": worker_tracebacks,
        "spool": spool_recoveries(worker_text),
        "settle_lag_s": acc.percentiles(acc.settle_lag(calls, ledger.rows, ledger.items)),
    }


def _ledger(engine: Any, job: str) -> acc.Ledger:
    with engine.connect() as c:
        job_id = c.execute(text("SELECT id FROM jobs WHERE name = :n"), {"n": job}).scalar()
    return acc.Ledger() if job_id is None else acc.load_ledger(engine, int(job_id))


def _drive(
    opts: Options,
    chaos: bool,
    dsn: str,
    job: str,
    t0: float,
    fleet: Fleet,
    cli: Cli,
    watcher: Watcher,
    redis_server: stack.RedisServer,
    pg_cmd: str | None,
    events: list[dict[str, Any]],
) -> tuple[bool, str | None]:
    """The chaos loop, until the job is done, or stalls, or ``max_seconds`` pass."""
    next_kill = t0 + opts.kill_every
    next_sweep = t0 + opts.sweep_every
    redis_done = not (chaos and opts.redis_restart)
    pg_done = pg_cmd is None
    victim = 0
    best, best_at = -1.0, time.time()
    status: str | None = None
    for _ in range(int(opts.max_seconds / 0.5) + 1):  # bounded in count as well as time
        now = time.time()
        if now - t0 > opts.max_seconds:
            log(f"gave up after {opts.max_seconds:.0f} s")
            return False, status
        try:
            frac, status = done_fraction(dsn, job)
        except psycopg.OperationalError:
            frac = best  # Postgres away (its restart): keep going
        if status in ("done", "failed"):
            events.append({"at": round(now - t0, 2), "event": f"job {status}"})
            return True, status
        if frac > best:
            best, best_at = frac, now
        elif now - best_at > opts.stall_seconds:
            log(f"no item finished for {opts.stall_seconds:.0f} s: stalled at {best:.1%}")
            events.append({"at": round(now - t0, 2), "event": "stalled", "done": round(best, 4)})
            return False, status
        if chaos and now >= next_kill:
            try:
                held = watcher.snapshot()
            except psycopg.OperationalError:
                held = {}
            watcher.add_kill(Kill(fleet.kill(victim), victim, held))
            events.append({"at": round(now - t0, 2), "event": f"kill -9 worker {victim}"})
            log(f"killed worker {victim} ({len(held)} newly leased items followed), restarted it")
            victim = 1 - victim
            next_kill = now + opts.kill_every
        if not redis_done and frac >= 1 / 3:
            away = redis_server.restart()
            redis_done = True
            events.append(
                {
                    "at": round(now - t0, 2),
                    "event": "redis restarted empty",
                    "away_s": round(away, 2),
                }
            )
            log(f"restarted Redis empty at {frac:.0%} done")
        if not pg_done and frac >= 0.6 and pg_cmd is not None:
            pg_done = True
            out = subprocess.run(
                pg_cmd, shell=True, capture_output=True, text=True, timeout=180, check=False
            )
            events.append(
                {"at": round(now - t0, 2), "event": "postgres restarted", "exit": out.returncode}
            )
            log(f"restarted Postgres (exit {out.returncode}) at {frac:.0%} done")
        if chaos and opts.sweep and now >= next_sweep:
            cli.reap()
            if not cli.running:  # one sweep at a time
                cli.start("sweep", ["sweep", "--idle", str(opts.sweep_idle)])
            next_sweep = now + opts.sweep_every
        with contextlib.suppress(psycopg.OperationalError):
            watcher.poll()
        time.sleep(0.5)
    return False, status


SPOOL_KEYS = ("segments", "replies", "replies_filled", "unsent", "unsent_removed", "bad_lines")


def spool_recoveries(worker_log: str) -> dict[str, int]:
    """Totals of the workers' ``cascade.spool.recovered`` lines (JSON log lines)."""
    out = dict.fromkeys(("recoveries", *SPOOL_KEYS), 0)
    for line in worker_log.splitlines():
        if "cascade.spool.recovered" not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        out["recoveries"] += 1
        for key in SPOOL_KEYS:
            out[key] += int(event.get(key, 0))
    return out


def print_report(result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    c, d, b = result["calls"], result["duplicates"], result["double_billed"]
    tk = result["twice_by_kill"]
    k, u = result["kills"], result["unfinished"]
    lines = [
        f"soak: {result['items']:,} posts, finished={result['finished']} "
        f"(job {result['job_status']}), wall {result['wall_s']} s",
    ]
    if baseline is not None:
        ratio = result["wall_s"] / baseline["wall_s"] if baseline["wall_s"] else float("nan")
        lines.append(
            f"  fault-free baseline: {baseline['wall_s']} s -> chaos/baseline {ratio:.2f}x"
        )
    lines += [
        f"  calls: server {c['server_calls']:,} {c['server_calls_by_outcome']}, "
        f"ledger {c['ledger_calls']:,} ({c['ledger_calls_without_request_id']} without an id)",
        f"  server calls missing from the ledger, by outcome: "
        f"{ {o: v['count'] for o, v in c['server_only'].items()} }",
        f"  ledger request ids the server never saw: {c['ledger_only']['count']}",
        f"  tokens: server {c['tokens']['server']}",
        f"          ledger {c['tokens']['ledger']}  equal={c['tokens_equal']}",
        f"  billed tokens of sent replies missing from the ledger: "
        f"{c['server_only_billed_tokens']}",
        f"  attempt outcomes of unknown kind: {c['unknown_outcomes'] or 'none'}",
        f"  calls cut off by a kill (outcome unknown, estimated tokens): {c['cut_off']}",
        f"  items billed twice at one tier: {b['server_items']} by the server's log "
        f"({b['extra_billed_calls']} extra billed calls), {b['ledger_items']} by the ledger",
        f"    first bill at the next kill: {tk['in_flight']} in flight, "
        f"{tk['just_returned']} returned <= {tk['margin_s']} s before it, "
        f"{tk['returned_before']} returned earlier, {tk['no_kill']} with no kill after "
        "(the last two should be 0)",
        f"  duplicates: (item, step) {d['item_steps_count']}, request ids "
        f"{d['request_ids_count']}, decisions {d['decisions_count']}",
        f"  lost (unfinished) items: {u['count']} {u['by_status']}",
        f"  kills: {k['kills']}, items re-claimed {k['items_reclaimed']} after "
        f"{k['reclaim_s'] or '-'} s, never re-claimed {k['never_reclaimed']}",
        f"  tracebacks printed by CLI commands: {sum(result['cli_tracebacks'].values())} "
        f"{result['cli_tracebacks'] or ''}; in worker logs: {result['worker_log_tracebacks']}",
        f"  last reply -> settled row: {result['settle_lag_s']}",
        f"  spools replayed after kills: {result['spool']}",
    ]
    print("\n".join(lines))


def options(argv: list[str] | None = None) -> tuple[Options, bool, Path]:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--items", type=int, default=None, help="posts (default 12,000: ~10 min)")
    size.add_argument("--scale", type=float, default=None, help="times the default size")
    size.add_argument("--quick", action="store_true", help="2,000 posts: ~2 min")
    p.add_argument("--baseline", action="store_true", help="a fault-free run of the size first")
    p.add_argument("--processes", type=int, default=2, help="prefork children per worker")
    p.add_argument("--concurrency", type=int, default=32, help="CASCADE_CONCURRENCY")
    p.add_argument("--kill-every", type=float, default=30.0, help="seconds; 0: no kills")
    p.add_argument(
        "--sweep",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run `cascade sweep` every --sweep-every seconds",
    )
    p.add_argument("--sweep-every", type=float, default=30.0)
    p.add_argument("--sweep-idle", type=int, default=120, help="`cascade sweep --idle`")
    p.add_argument("--lease-seconds", type=int, default=None, help="CASCADE_LEASE_SECONDS")
    p.add_argument(
        "--redis-port", type=int, default=6401, help="the soak's own redis-server (a free port)"
    )
    p.add_argument("--no-redis-restart", action="store_true")
    p.add_argument(
        "--no-pg-restart", action="store_true", help="never run $CASCADE_TEST_PG_RESTART_CMD"
    )
    p.add_argument("--max-seconds", type=float, default=None, help="give up after (per run)")
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=None,
        help="give up when no item finished for this long (default: 300 s, "
        "or the lease + 90 s with --sweep)",
    )
    p.add_argument("--latency-median-ms", type=float, default=700.0)
    p.add_argument("--latency-sigma", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/cascade-soak"))
    p.add_argument("--keep-db", action="store_true", help="keep the soak's databases")
    p.add_argument("--json", type=Path, default=RESULTS / "soak.json")
    a = p.parse_args(argv)
    default = 12_000
    items = a.items or (2_000 if a.quick else int(default * (a.scale or 1.0)))
    max_s = a.max_seconds or max(600.0, items / default * 3600)
    opts = Options(
        items=items,
        processes=a.processes,
        concurrency=a.concurrency,
        kill_every=a.kill_every or float("inf"),
        sweep=a.sweep,
        sweep_every=a.sweep_every,
        sweep_idle=a.sweep_idle,
        lease_seconds=a.lease_seconds,
        redis_port=a.redis_port,
        redis_restart=not a.no_redis_restart,
        pg_restart=not a.no_pg_restart,
        max_seconds=max_s,
        stall_seconds=a.stall_seconds
        or (max(300.0, (a.lease_seconds or 600) + 90.0) if a.sweep else 300.0),
        latency=LatencySpec("lognormal", a.latency_median_ms, a.latency_sigma, 20_000),
        seed=a.seed,
        work=a.work_dir,
        keep_db=a.keep_db,
    )
    return opts, a.baseline, a.json


def main(argv: list[str] | None = None) -> None:
    opts, with_baseline, out = options(argv)
    opts.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"options": {k: str(v) for k, v in opts.__dict__.items()}}
    with terminated_as_interrupt():
        baseline = None
        if with_baseline:
            log(f"baseline: {opts.items:,} posts, no faults")
            baseline = results["baseline"] = run(opts, chaos=False, name="baseline")
            log(f"baseline: {baseline['wall_s']} s")
        log(f"chaos: {opts.items:,} posts")
        results["chaos"] = run(opts, chaos=True, name="chaos")
    if baseline is not None:
        results["wall_vs_baseline"] = round(
            results["chaos"]["wall_s"] / max(baseline["wall_s"], 0.001), 3
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print_report(results["chaos"], baseline)
    print(f"JSON in {out}")


if __name__ == "__main__":
    main()

"""Processes for a scenario (fake API, workers, CLI) and what they cost, read from /proc.

CPU is utime + stime of every process in the tracked trees (roots and their
descendants) plus the Postgres backends connected to the scenario's database,
sampled every ``interval`` seconds (a process that exits between samples loses
at most one interval of CPU). Peak RSS is each process's ``VmHWM``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_s(pid: int) -> float | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def hwm_mb(pid: int) -> float | None:
    raw = _read(f"/proc/{pid}/status")
    if raw is None:
        return None
    for line in raw.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def cmdline(pid: int) -> str:
    raw = _read(f"/proc/{pid}/cmdline") or ""
    return raw.replace("\0", " ").strip()


def children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        name = entry.name
        if not name.isdigit():
            continue
        raw = _read(f"/proc/{name}/stat")
        if raw is None:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        out.setdefault(ppid, []).append(int(name))
    return out


def tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


@dataclass
class Seen:
    role: str
    first_cpu: float
    last_cpu: float
    hwm_mb: float = 0.0
    cmd: str = ""


@dataclass
class Sampler:
    """Tracks process trees by role ("worker", "cli", "fake", "postgres", ...)."""

    interval: float = 0.5
    roots: dict[int, str] = field(default_factory=dict)
    extra: Callable[[], dict[int, str]] | None = None  # e.g. Postgres backends
    seen: dict[int, Seen] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def track(self, pid: int, role: str) -> None:
        with self._lock:
            self.roots[pid] = role
        self.sample()

    def sample(self) -> None:
        kids = children_map()
        with self._lock:
            pids = {p: role for root, role in self.roots.items() for p in tree(root, kids)}
        if self.extra is not None:
            with contextlib.suppress(Exception):  # a sampling hiccup must not end the run
                pids.update(self.extra())
        for pid, role in pids.items():
            c = cpu_s(pid)
            if c is None:
                continue
            s = self.seen.get(pid)
            if s is None:
                # A process born after tracking started: all of its CPU counts.
                s = self.seen[pid] = Seen(role, 0.0 if self._thread else c, c, cmd=cmdline(pid))
            s.last_cpu = c
            s.hwm_mb = max(s.hwm_mb, hwm_mb(pid) or 0.0)

    def exited(self, pid: int, usage: resource.struct_rusage) -> None:
        """A tracked process reaped with ``os.wait4``: its exact peak RSS and CPU (the
        samples, every ``interval``, miss whatever happened after the last one: for
        a run of a second or two, its peak)."""
        s = self.seen.get(pid)
        if s is not None:
            s.hwm_mb = max(s.hwm_mb, usage.ru_maxrss / 1024)  # KiB on Linux
            s.last_cpu = max(s.last_cpu, usage.ru_utime + usage.ru_stime)

    def start(self) -> None:
        self.sample()  # baseline of what already runs
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def cpu_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.seen.values():
            out[s.role] = out.get(s.role, 0.0) + (s.last_cpu - s.first_cpu)
        return out

    def peak_rss(self) -> list[dict[str, object]]:
        return sorted(
            (
                {"role": s.role, "pid": pid, "peak_rss_mb": round(s.hwm_mb, 1), "cmd": s.cmd[:80]}
                for pid, s in self.seen.items()
                if s.role != "postgres"
            ),
            key=lambda r: (str(r["role"]), -float(str(r["peak_rss_mb"]))),
        )


def spawn(
    args: Sequence[str], env: dict[str, str], log: Path, *, group: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``args`` with output to ``log``; ``group``: in a process group of its own
    (so it and every child can be signalled at once, see :func:`kill_group`)."""
    with log.open("ab") as f:
        return subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=group,
        )


QUEUES = "tier.rules,tier.small,tier.large,cascade.fallback"


def worker_command(
    processes: int, *, queues: str = QUEUES, app: str | None = None, name: str | None = None
) -> list[str]:
    """The command line of one worker.

    ``app=None``: ``cascade worker``, as the README deploys it (one Celery worker,
    ``processes`` prefork children, each running CASCADE_CONCURRENCY calls at a time).
    ``app="tasks.app"`` (or ``bench.limited_app``): ``celery -A APP worker`` without
    mingle, gossip and heartbeats, as the throughput scenarios have always started it.
    """
    if app is None:
        return [
            str(BIN / "cascade"),
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(processes),
            "--loglevel",
            "WARNING",
        ]
    return [
        str(BIN / "celery"),
        "-A",
        app,
        "worker",
        "-Q",
        queues,
        "-c",
        str(processes),
        *(["-n", name] if name else []),
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "--loglevel",
        "WARNING",
    ]


def start_worker(
    env: dict[str, str],
    log: Path,
    *,
    processes: int,
    queues: str = QUEUES,
    app: str | None = None,
    name: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start one worker in a process group of its own. Every bench scenario and the soak
    start workers here and only here: when the worker's execution model changes, this
    (and :func:`worker_command`) is the one place to change."""
    return spawn(worker_command(processes, queues=queues, app=app, name=name), env, log, group=True)


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal a process started with ``group=True`` and all its descendants in the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the leader (a Celery worker's warm shutdown: it stops its own children),
    then SIGKILL whatever of the group is left, the leader gone or not."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    kill_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_for_line(log: Path, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    raise TimeoutError(f"{needle!r} did not appear in {log} within {timeout} s")

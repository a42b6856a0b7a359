"""The progress bar of a job: one bar from the first line read to the last item done.

While the file is read it counts lines; then items finished, with the rate and an
ETA. The clock is the command's, so it does not restart when the intake ends. On the
distributed runtime it says when no worker has taken work for a while, and how to
start one (or re-queues what no message carries, when workers are there but idle).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from common.lifecycle import JobStatus, Status

POLL_S = 0.25


def fmt_duration(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05``."""
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def rate_and_eta(samples: deque[tuple[float, int]], total: int | None) -> tuple[str, str]:
    """From (time, items finished) samples over the last few seconds: ``"1,234/s"`` and
    ``"ETA 0:42"`` (blank while there is nothing to go on)."""
    if len(samples) < 2:
        return "", ""
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    if t1 <= t0 or n1 <= n0:
        return ("0/s", "") if t1 - t0 >= 5 else ("", "")
    rate = (n1 - n0) / (t1 - t0)
    eta = "" if total is None else f"ETA {fmt_duration((total - n1) / rate)}"
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s", eta


class JobBar:
    """The bar; use as a context manager around intake and waiting."""

    def __init__(self, console: Console, label: str) -> None:
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            TextColumn("[dim]{task.fields[tiers]}"),
            TextColumn("{task.fields[clock]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(
            label, total=None, count="", rate="", eta="", tiers="", clock=""
        )
        self.samples: deque[tuple[float, int]] = deque(maxlen=40)

    def __enter__(self) -> JobBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def clock(self) -> str:
        return fmt_duration(time.monotonic() - self.started)

    def intake(self, counts: dict[str, int]) -> None:
        """The submit's progress callback: lines read so far."""
        self.progress.update(
            self.task,
            description="reading",
            count=f"{counts.get('lines_read', 0):,} lines",
            clock=self.clock(),
        )

    def job(self, job_id: int, done: int, total: int, tiers: str) -> None:
        self.samples.append((time.monotonic(), done))
        rate, eta = rate_and_eta(self.samples, total)
        self.progress.update(
            self.task,
            description=f"job {job_id}",
            total=total,
            completed=done,
            count=f"{done:,}/{total:,}",
            rate=rate,
            eta=eta,
            tiers=tiers,
            clock=self.clock(),
        )


# Set by Ctrl-C (cascade.jobrun.interrupted): Python drops a KeyboardInterrupt raised
# while a finalizer runs ("Exception ignored in ..."), so the wait checks this too.
STOP = threading.Event()


def wait_for_job(
    job_id: int, bar: JobBar | None = None, on_stall: Callable[[], None] | None = None
) -> str:
    """Show the job until it is done, failed, or paused with nothing in flight; returns
    its status. ``on_stall`` runs when nothing has finished for ``stall_s`` seconds."""
    from cascade.cliutil import err

    own = bar is None
    bar = bar or JobBar(err, f"job {job_id}")
    if own:
        bar.__enter__()
    try:
        return _poll(job_id, bar, on_stall)
    finally:
        if own:
            bar.__exit__(None, None, None)


def _poll(job_id: int, bar: JobBar, on_stall: Callable[[], None] | None) -> str:
    from cascade.cliutil import err, find_job
    from models.reports import progress
    from tasks.runtime import get_runtime

    rt = get_runtime()
    stall_s = rt.settings.stall_s
    last_change, last_done = time.monotonic(), -1
    while True:
        with rt.sessions() as session:
            p = progress(session, job_id)
            job = find_job(session, str(job_id))
            status, names, message = job.status, tier_names(job), job.message
        done = p[Status.DONE] + p[Status.FAILED]
        waiting = waiting_by_tier(p, names)
        bar.job(job_id, done, p["total"], "  ".join(f"{k} {v:,}" for k, v in waiting.items() if v))
        if status in (JobStatus.DONE, JobStatus.FAILED):
            return str(status)
        in_flight = sum(p.get(s, 0) for s in (Status.PENDING, Status.RUNNING, Status.FALLBACK))
        if status == JobStatus.PAUSED and not in_flight + p.get(Status.FALLBACK_RUNNING, 0):
            err.print(f"[yellow]job {job_id} paused[/yellow]: {message}")
            return str(status)
        now = time.monotonic()
        if done != last_done:
            last_change, last_done = now, done
        elif on_stall is not None and now - last_change >= stall_s:
            on_stall()
            last_change = now
        time.sleep(POLL_S)
        if STOP.is_set():  # a Ctrl-C whose KeyboardInterrupt a finalizer swallowed
            raise KeyboardInterrupt


def tier_names(job: Any) -> list[str]:
    return [t["name"] for t in job.pipeline["tiers"]]


def waiting_by_tier(p: dict[str, int], names: list[str]) -> dict[str, int]:
    """Unfinished items per tier, from progress()'s ``status:tier_index`` keys."""
    out = dict.fromkeys(names, 0)
    for key, count in p.items():
        _, sep, index = key.partition(":")
        if sep and index.isdigit() and int(index) < len(names):
            out[names[int(index)]] += count
    return out

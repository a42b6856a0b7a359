"""``memory``: the distributed workers' peak RSS at two job sizes (issue 17: "worker RSS at
10k vs 100k items within 10 %").

The same job as ``tail`` (moderation posts: rules, claude-haiku-5-5, escalating to
claude-sonnet-5-5; two ``cascade worker`` processes, :func:`bench.tail.run_job`) at a
small and a big size, every call at a fixed 20 ms so the big one is quick. Each worker
process tree is sampled (:class:`bench.procs.Sampler`, ``VmHWM`` every 0.5 s) from its
start until the job is done. The figure: the largest prefork child's peak (the children
hold the pool, its items and the ledger writer; the Celery parent only routes), small
against big, and their ratio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import stack
from bench.procs import Sampler
from bench.tail import Fleet, run_job

FAST = ["--latency-dist", "fixed", "--latency-median-ms", "20", "--seed", "4"]


def child_peaks(sampler: Sampler) -> list[float]:
    """Peak RSS (MB) of each worker process below the ones started (the prefork children)."""
    peaks = [
        float(str(p["peak_rss_mb"]))
        for p in sampler.peak_rss()
        if p["role"] == "worker" and p["pid"] not in sampler.roots
    ]
    return sorted(peaks, reverse=True)


def one_size(work: Path, n: int, fleet: Fleet, broker: str) -> dict[str, Any]:
    sampler = Sampler()
    out = run_job(work, f"memory_{n}", n, FAST, fleet, broker, timeout=3600, sampler=sampler)
    peaks = child_peaks(sampler)
    stack.log(f"memory {n:,}: {out['items_per_s']} items/s, worker children peak MB {peaks}")
    return {
        "items": n,
        "finished": out["finished"],
        "wall_s": out["wall_s"],
        "items_per_s": out["items_per_s"],
        "server_calls": out["server_calls"],
        "by_status": out["by_status"],
        "worker_children_peak_rss_mb": peaks,
        "peak_rss": sampler.peak_rss(),
    }


def memory(work: Path, small: int, big: int, fleet: Fleet, broker: str) -> dict[str, Any]:
    runs = {
        "small": one_size(work, small, fleet, broker),
        "big": one_size(work, big, fleet, broker),
    }
    a = max(runs["small"]["worker_children_peak_rss_mb"], default=0.0)
    b = max(runs["big"]["worker_children_peak_rss_mb"], default=0.0)
    return {**runs, "peak_small_mb": a, "peak_big_mb": b, "ratio": round(b / a, 3) if a else None}

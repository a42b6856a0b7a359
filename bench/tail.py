"""The heavy-tail scenarios of ``python -m bench.run``: ``tail`` and ``realistic``.

Both run one distributed job of moderation posts (``examples/moderation.toml``:
rules, then claude-haiku-5-5, escalating to claude-sonnet-5-5) through two
``cascade worker`` processes (started by :func:`bench.procs.start_worker`), with the
fake's request log on, and read every figure from that log and the ledger
(:mod:`bench.accounting`).

- ``tail``: the job twice: every call at a constant latency equal to the
  lognormal's mean, then lognormal (median 700 ms, sigma 0.9, cap 20 s).
- ``realistic``: lognormal median 1.5 s, sigma 0.9, cap 20 s, with the fake
  enforcing 4,000 requests/min per model and the workers told the same limit
  (``CASCADE_RATE_LIMITS``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from bench import accounting as acc
from bench import data, stack
from bench.procs import Sampler, start_worker, stop_group
from cascade.fakeapi.latency import LatencySpec
from cascade.fakeapi.reqlog import read_log

LOGNORMAL = LatencySpec("lognormal", median_ms=700, sigma=0.9, cap_ms=20_000)
REALISTIC = LatencySpec("lognormal", median_ms=1_500, sigma=0.9, cap_ms=20_000)
RPM = 4_000
LIMITED_MODELS = ("claude-haiku-5-5", "claude-sonnet-5-5")  # the two tiers' primaries


def shape_args(spec: LatencySpec) -> list[str]:
    args = ["--latency-dist", spec.dist, "--latency-median-ms", f"{spec.median_ms:g}"]
    args += ["--latency-sigma", f"{spec.sigma:g}"]
    if spec.cap_ms is not None:
        args += ["--latency-cap-ms", f"{spec.cap_ms:g}"]
    return args


@dataclass
class Fleet:
    workers: int = 2  # `cascade worker` processes
    processes: int = 2  # prefork children of each (--concurrency of `cascade worker`)
    concurrency: int = 64  # CASCADE_CONCURRENCY: calls in flight per child

    @property
    def slots(self) -> int:
        return self.workers * self.processes * self.concurrency


def run_job(
    work: Path,
    name: str,
    n: int,
    fake_args: list[str],
    fleet: Fleet,
    broker: str,
    *,
    extra_env: dict[str, str] | None = None,
    timeout: float = 900,
    sampler: Sampler | None = None,
) -> dict[str, Any]:
    """One job of ``n`` posts through the fleet; the figures of the tail scenarios.

    With a ``sampler``, the workers' process trees are tracked (role ``worker``) from
    their start until the job is done."""
    path = data.write(work / f"posts_{n}.jsonl", data.posts(n))
    wlog = work / f"{name}.workers.log"
    wlog.unlink(missing_ok=True)
    job = f"{name}-{n}"
    with stack.fake_api(work, name, fake_args) as fake, stack.database(name) as url:
        redis.Redis.from_url(broker).flushdb()
        env = stack.env_for(
            url, broker, fake.url, CASCADE_CONCURRENCY=str(fleet.concurrency), **(extra_env or {})
        )
        procs = [
            start_worker(
                env, wlog, processes=fleet.processes, name=f"{name}{i}-{secrets.token_hex(2)}@%h"
            )
            for i in range(fleet.workers)
        ]
        if sampler is not None:
            for p in procs:
                sampler.track(p.pid, "worker")
            sampler.start()
        try:
            time.sleep(6.0)  # the SDK imported, children forked and consuming
            t0 = time.time()
            stack.cascade(
                env, ["submit", str(path), "--pipeline", str(data.MODERATION), "--job-name", job]
            )
            done = stack.wait_done(url, job, timeout)
            wall = time.time() - t0
            if sampler is not None:
                sampler.stop()
        finally:
            for p in procs:
                stop_group(p)
        engine = create_engine(url)
        try:
            with engine.connect() as c:
                job_id = c.execute(
                    text("SELECT id FROM jobs WHERE name = :n"), {"n": job}
                ).scalar_one()
            ledger = acc.load_ledger(engine, int(job_id))
        finally:
            engine.dispose()
    calls = [acc.Call.from_log(e) for e in read_log(fake.requests)]
    return summarize(calls, ledger, fleet, wall_s=wall, finished=done, n=n)


def summarize(
    calls: list[acc.Call],
    ledger: acc.Ledger,
    fleet: Fleet,
    *,
    wall_s: float,
    finished: bool,
    n: int,
) -> dict[str, Any]:
    steady = acc.steady_state(calls)
    util = None
    if steady:
        util = steady["calls_per_s"] * steady["mean_latency_s"] / fleet.slots
    lag = acc.settle_lag(calls, ledger.rows, ledger.items)
    span = max(c.ended for c in calls) - min(c.received for c in calls) if calls else 0.0
    return {
        "items": n,
        "finished": finished,
        "wall_s": round(wall_s, 2),
        "items_per_s": round(n / wall_s, 1) if wall_s else None,
        "server_calls": len(calls),
        "calls_per_s_overall": round(len(calls) / span, 2) if span else None,
        "steady": steady,
        "slots": fleet.slots,
        "fleet": fleet.__dict__,
        "slot_utilization": None if util is None else round(util, 4),
        "settle_lag_s": acc.percentiles(lag),
        "settle_lag_items": len(lag),
        "by_status": dict(Counter(i.status for i in ledger.items)),
        "server_by_status": {str(k): v for k, v in Counter(c.status for c in calls).items()},
    }


def tail(work: Path, n: int, fleet: Fleet, broker: str) -> dict[str, Any]:
    mean = LOGNORMAL.mean_ms()
    constant = LatencySpec("fixed", median_ms=round(mean, 1))
    runs = {}
    for key, spec in (("constant", constant), ("lognormal", LOGNORMAL)):
        stack.log(f"tail: {key} ({spec})")
        args = [*shape_args(spec), "--seed", "4"]
        runs[key] = run_job(work, f"tail_{key}", n, args, fleet, broker)
        stack.log(f"tail {key}: {json.dumps(runs[key]['steady'])}")
    c, ln = runs["constant"]["steady"], runs["lognormal"]["steady"]
    ratio = ln["calls_per_s"] / c["calls_per_s"] if c and ln else None
    return {
        "latency": {
            "constant_ms": constant.median_ms,
            "lognormal": {
                "median_ms": LOGNORMAL.median_ms,
                "sigma": LOGNORMAL.sigma,
                "cap_ms": LOGNORMAL.cap_ms,
                "mean_ms": round(mean, 1),
            },
        },
        **runs,
        "throughput_ratio": None if ratio is None else round(ratio, 3),
    }


def realistic(work: Path, n: int, fleet: Fleet, broker: str) -> dict[str, Any]:
    limits = {f"anthropic:{m}": {"requests_per_min": RPM} for m in LIMITED_MODELS}
    fake_args = [*shape_args(REALISTIC), "--seed", "4", "--requests-per-min", str(RPM)]
    stack.log("realistic: lognormal 1.5 s, 4,000 rpm per model")
    out = run_job(
        work,
        "realistic",
        n,
        fake_args,
        fleet,
        broker,
        extra_env={"CASCADE_RATE_LIMITS": json.dumps(limits)},
    )
    calls = [acc.Call.from_log(e) for e in read_log(work / "realistic.requests.jsonl")]
    out["limit_rpm_per_model"] = RPM
    out["limit_share"] = limit_share(calls, RPM)
    out["limit_share_while_busy"] = share_while_busy(calls, RPM)
    out["handoff"] = handoff(calls, *LIMITED_MODELS)
    out["responses_429"] = sum(1 for c in calls if c.status == 429)
    return out


def limit_share(calls: list[acc.Call], rpm: float) -> dict[str, Any]:
    """Per model, in the steady window (middle 80 % of all calls by end time): requests
    the fake let through (not 429) per minute, and that as a share of the limit."""
    steady = acc.steady_state(calls)
    if not steady:
        return {}
    ends = sorted(c.ended for c in calls)
    k = len(ends)
    lo, hi = ends[int(k * 0.1)], ends[min(k - 1, int(k * 0.9))]
    out: dict[str, Any] = {}
    for model in sorted({c.model for c in calls if c.model}):
        admitted = [
            c for c in calls if c.model == model and lo < c.received <= hi and c.status != 429
        ]
        per_min = len(admitted) / (hi - lo) * 60
        out[model] = {"admitted_per_min": round(per_min, 1), "share": round(per_min / rpm, 4)}
    return out


def share_while_busy(calls: list[acc.Call], rpm: float) -> dict[str, Any]:
    """Per model, over the middle 80 % of *its own* admitted calls by arrival: admitted
    per minute, and that as a share of the limit. What the limiter grants while the
    model has work; :func:`limit_share`'s common window also counts the time a model
    had none (the second tier before the first escalates, the first after it is done)."""
    out: dict[str, Any] = {}
    for model in sorted({c.model for c in calls if c.model}):
        times = sorted(c.received for c in calls if c.model == model and c.status != 429)
        k = len(times)
        if k < 10:
            continue
        lo, hi = times[int(k * 0.1)], times[min(k - 1, int(k * 0.9))]
        if hi <= lo:
            continue
        per_min = sum(1 for t in times if lo <= t < hi) / (hi - lo) * 60
        out[model] = {
            "window_s": round(hi - lo, 1),
            "admitted_per_min": round(per_min, 1),
            "share": round(per_min / rpm, 4),
        }
    return out


def handoff(calls: list[acc.Call], first: str, second: str) -> dict[str, Any]:
    """Items escalated from ``first`` to ``second``: seconds from the first's reply to the
    second's call arriving (p50/p95), and the second's calls per second while the first
    was busy (its middle 80 %) against its rate after that."""
    replied = {c.item: c.ended for c in calls if c.model == first and c.status == 200 and c.item}
    later = [c for c in calls if c.model == second and c.item in replied]
    if not later:
        return {}
    gaps = sorted(c.received - replied[c.item] for c in later if c.item)
    firsts = sorted(c.received for c in calls if c.model == first and c.status != 429)
    lo, hi = firsts[int(len(firsts) * 0.1)], firsts[int(len(firsts) * 0.9)]
    during = sum(1 for c in later if lo <= c.received < hi) / max(hi - lo, 1e-9)
    after = sorted(c.received for c in later if c.received >= hi)
    span = after[-1] - after[0] if len(after) > 1 else 0.0
    after_rate = (len(after) - 1) / span if span > 0 else None
    return {
        "items": len(later),
        "wait_s": {
            "p50": round(gaps[len(gaps) // 2], 2),
            "p95": round(gaps[int(len(gaps) * 0.95)], 2),
        },
        f"{second}_calls_per_s_while_{first}_busy": round(during, 1),
        f"{second}_calls_per_s_after": None if after_rate is None else round(after_rate, 1),
    }

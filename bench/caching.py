"""Prompt caching and duplicate reuse, measured from the ledger on the fake Messages API.

    python -m bench.caching --items 10000 --rounds 3 [--repeat-share 0.3] [--latency-ms 20]

Three embedded runs (SQLite, the CLI's own worker) of the same distinct items on a
pipeline with a ~4,000-token prefix (the moderation policy, worked examples padded)
and ~150-token items: ``cache = "off"``, then ``cache = "auto"``; each reports input
cost per item from the attempts (input, cache writes and reads at their prices),
cache writes per model, hit rate after the first call and wall time. A third run
repeats a share of the texts: its model calls must equal the distinct run's, exactly
(counted by the fake). ``--rounds N`` runs N off/auto pairs, alternating which goes
first, so that load from other processes falls on both. Exits 1 when a target is
missed (``make bench`` runs it after ``bench.run``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from cascade.fakeapi import FakeServer
from workers.pricing import PriceTable

ROOT = Path(__file__).resolve().parents[1]
CASCADE = str(Path(sys.executable).parent / "cascade")
WORDS = [
    "the",
    "forum",
    "thread",
    "update",
    "post",
    "reply",
    "moderator",
    "account",
    "game",
    "server",
    "login",
    "friend",
    "message",
    "photo",
    "group",
    "event",
    "link",
    "price",
    "question",
    "answer",
    "problem",
    "weekend",
    "team",
    "music",
    "movie",
    "review",
    "comment",
    "help",
    "thanks",
    "idea",
    "plan",
    "week",
    "night",
    "city",
    "travel",
    "food",
    "weather",
]


def pipeline(tmp: Path, cache: str) -> Path:
    """moderation.toml with extra worked examples (~4,000-token prefix) and no rules
    tier, so every item reaches the model tiers; ``cache`` on both model tiers."""
    src = (ROOT / "examples" / "moderation.toml").read_text()
    (tmp / "moderation_policy.md").write_text(
        (ROOT / "examples" / "moderation_policy.md").read_text()
    )
    head, _, tiers = src.partition("# Tier 1: rules")
    _, _, models = tiers.partition("# Tier 2: small model")
    rng = random.Random(7)
    extra = "".join(
        f'\n[[examples]]\ntext = "{" ".join(rng.choice(WORDS) for _ in range(40))}"\n'
        'label = "safe"\nwhy = "Ordinary conversation about the forum."\n'
        for _ in range(8)
    )
    body = head.replace("reuse_days = 7\n", "reuse_days = 0\n") + extra + "\n# Tier 2" + models
    body = body.replace('kind = "claude"\n', f'kind = "claude"\ncache = "{cache}"\n')
    path = tmp / f"bench-{cache}.toml"
    path.write_text(body)
    return path


def items(path: Path, n: int, repeat_share: float, seed: int = 1) -> int:
    """``n`` items of ~150 tokens (~600 characters); a ``repeat_share`` of them repeat
    an earlier text. Returns the number of distinct texts."""
    rng = random.Random(seed)
    texts: list[str] = []
    with path.open("w") as out:
        for i in range(n):
            if texts and rng.random() < repeat_share:
                text = rng.choice(texts)
            else:
                words = " ".join(rng.choice(WORDS) for _ in range(110))
                text = f"Post {i}: {words}."
                texts.append(text)
            out.write(json.dumps({"id": f"p{i}", "text": text}) + "\n")
    return len(texts)


def run(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [CASCADE, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"cascade {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def ledger(db: Path, job: str, prices: PriceTable) -> dict[str, Any]:
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT a.model, a.is_batch, COUNT(*), SUM(a.input_tokens), SUM(a.cache_write_tokens), "
        "SUM(a.cache_read_tokens), SUM(CASE WHEN a.cache_write_tokens > 0 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN a.cache_read_tokens > 0 THEN 1 ELSE 0 END), SUM(a.cost_nanos) "
        "FROM attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.name = ? AND a.role NOT IN ('rules', 'reuse') GROUP BY a.model, a.is_batch",
        (job,),
    ).fetchall()
    n_items = con.execute(
        "SELECT COUNT(*) FROM items i JOIN jobs j ON j.id = i.job_id WHERE j.name = ?", (job,)
    ).fetchone()[0]
    con.close()
    input_nanos = Decimal(0)
    models = {}
    for model, batch, calls, inp, write, read, writes, reads, cost in rows:
        p = prices.price(model)
        wrate = p.cache_write_1h if batch else p.cache_write_5m
        nanos = (inp * p.input + write * wrate + read * p.cache_read) * 1000
        if batch:
            nanos *= 1 - prices.batch_discount
        input_nanos += nanos
        models[model] = {
            "calls": calls,
            "cache_writes": writes,
            "hit_rate_after_first": round(reads / (calls - 1), 4) if calls > 1 else None,
            "cost_usd": f"{Decimal(cost) / 10**9:.6f}",
        }
    return {
        "items": n_items,
        "input_cost_per_item_usd": f"{input_nanos / n_items / 10**9:.8f}",
        "input_nanos": int(input_nanos),
        "models": models,
    }


def job(
    env: dict[str, str], fake: FakeServer, jsonl: Path, pipeline_path: Path, name: str
) -> float:
    """Submit one job and wait for it; returns its wall time (the fake is reset first)."""
    fake.reset()
    t0 = time.monotonic()
    run(env, "submit", str(jsonl), "--pipeline", str(pipeline_path), "--wait", "--job-name", name)
    return time.monotonic() - t0


def fake_calls(fake: FakeServer) -> int:
    return sum(int(s["calls"]) for s in fake.stats()["by_model"].values())


def cache_rounds(
    env: dict[str, str], fake: FakeServer, tmp: Path, args: argparse.Namespace, prices: PriceTable
) -> dict[str, Any]:
    """``--rounds`` interleaved pairs of jobs (off and auto, in ``--order``, alternating
    which goes first), so load from other processes falls on both alike."""
    distinct = tmp / "distinct.jsonl"
    items(distinct, args.items, 0.0)
    order = args.order.split(",")
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        one: dict[str, Any] = {}
        for cache in order if r % 2 == 0 else order[::-1]:
            name = f"cache-{cache}-{r}"
            wall = job(env, fake, distinct, pipeline(tmp, cache), name)
            one[cache] = ledger(tmp / "bench.db", name, prices) | {
                "wall_s": round(wall, 2),
                "items_per_s": round(args.items / wall, 1),
                "fake_calls": fake_calls(fake),
                "fake_cache": fake.stats().get("cache", {}),
            }
        off, on = one["off"], one["auto"]
        one["input_cost_saving_pct"] = round(100 * (1 - on["input_nanos"] / off["input_nanos"]), 2)
        one["throughput_change_pct"] = round(100 * (on["items_per_s"] / off["items_per_s"] - 1), 1)
        rounds.append(one)
    off_rate = sum(r["off"]["items_per_s"] for r in rounds)
    on_rate = sum(r["auto"]["items_per_s"] for r in rounds)
    writes = [m["cache_writes"] for r in rounds for m in r["auto"]["models"].values()]
    hits = [m["hit_rate_after_first"] for r in rounds for m in r["auto"]["models"].values()]
    return {
        "rounds": rounds,
        "input_cost_saving_pct": min(r["input_cost_saving_pct"] for r in rounds),
        "cache_writes_per_model_max": max(writes),
        "hit_rate_after_first_min": min(h for h in hits if h is not None),
        "throughput_change_pct_mean": round(100 * (on_rate / off_rate - 1), 1),
    }


def reuse_run(
    env: dict[str, str], fake: FakeServer, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The repeated texts' job against a job of only their distinct texts: the same calls."""
    repeated = tmp / "repeated.jsonl"
    n_distinct = items(repeated, args.items, args.repeat_share, seed=2)
    only = tmp / "only-distinct.jsonl"
    seen: set[str] = set()
    with repeated.open() as src, only.open("w") as dst:
        for line in src:
            text = json.loads(line)["text"]
            if text not in seen:
                seen.add(text)
                dst.write(line)
    calls = {}
    for name, path in (("distinct", only), ("repeated", repeated)):
        job(env, fake, path, pipeline(tmp, "auto"), f"reuse-{name}")
        calls[name] = fake_calls(fake)
    return {
        "lines": args.items,
        "distinct_texts": n_distinct,
        "calls_distinct_only_job": calls["distinct"],
        "calls_with_repeats_job": calls["repeated"],
        "exact": calls["distinct"] == calls["repeated"],
    }


# Issue 19's targets; throughput (no loss beyond 5 %) is reported, not enforced: on a
# shared machine it measures the neighbours as much as the cache.
TARGETS = {
    "input_cost_saving_pct": ("cache on vs off: input cost per item lower by", ">=", 80.0),
    "cache_writes_per_model_max": ("cache writes per (model, prefix) per job", "<=", 1),
    "hit_rate_after_first_min": ("hit rate after the first call", ">=", 0.99),
}


def missed(out: dict[str, Any]) -> list[str]:
    """The targets the run missed, in words (empty: all met)."""
    bad = []
    for key, (what, op, want) in TARGETS.items():
        got = out["cache"][key]
        if not (got >= want if op == ">=" else got <= want):
            bad.append(f"{what}: {got} (target {op} {want})")
    reuse = out.get("reuse")
    if reuse is not None and not reuse["exact"]:
        bad.append(
            f"repeats: {reuse['calls_with_repeats_job']} calls against "
            f"{reuse['calls_distinct_only_job']} for the distinct texts alone (target: equal)"
        )
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat-share", type=float, default=0.3)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--order", default="off,auto", help="which run goes first")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved off/auto pairs")
    parser.add_argument("--no-reuse", action="store_true", help="skip the repeats runs")
    args = parser.parse_args()
    prices = PriceTable.load()
    out: dict[str, Any] = {"items": args.items}
    with (
        tempfile.TemporaryDirectory() as d,
        FakeServer(latency_ms=args.latency_ms, jitter_ms=args.latency_ms / 4, seed=3) as fake,
    ):
        tmp = Path(d)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CASCADE_", "ANTHROPIC_"))}
        env = base | {
            "CASCADE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "ANTHROPIC_BASE_URL": fake.start(),
            "ANTHROPIC_API_KEY": "sk-bench",
            "CASCADE_LOG_LEVEL": "WARNING",
        }
        out["cache"] = cache_rounds(env, fake, tmp, args, prices)
        if not args.no_reuse:
            out["reuse"] = reuse_run(env, fake, tmp, args)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    bad = missed(out)
    for line in bad:
        sys.stderr.write(f"bench.caching: target missed: {line}\n")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

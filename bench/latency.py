"""Added pipeline latency for items the rules settle, on idle workers (a subprocess of bench.run).

Submits ``--n`` one-item files one after another (each waits for the previous item
to finish), then reads each item's ``finished_at - created_at`` from the database:
from the submit transaction to the worker's commit of the result, which includes
the commit, the publish, the broker, the claim, the rules and the settle.
Prints JSON: p50_ms, p95_ms, max_ms, n.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from sqlalchemy import text

from bench.data import PIPELINE, RULE_TEMPLATES
from tasks.runtime import get_runtime
from tasks.submit import submit
from workers.pipeline import load_pipeline


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.latency")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--dir", type=Path, required=True)
    a = p.parse_args()
    rt = get_runtime()
    pipe = load_pipeline(PIPELINE)
    path = a.dir / "one.jsonl"
    job_id = 0
    for i in range(a.n + 10):  # the first 10 warm the worker up and are not counted
        row = {"id": f"lat{i}", "text": RULE_TEMPLATES[i % len(RULE_TEMPLATES)].format(n=i)}
        path.write_text(json.dumps(row) + "\n")
        job_id = submit(rt, path, pipe, "latency").job_id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with rt.sessions() as s:
                st = s.execute(
                    text("SELECT status FROM items WHERE job_id=:j AND item_key=:k"),
                    {"j": job_id, "k": f"lat{i}"},
                ).scalar()
            if st == "done":
                break
            time.sleep(0.002)
        time.sleep(0.02)
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM items "
                "WHERE job_id=:j AND item_key <> ALL(:warm) ORDER BY id"
            ),
            {"j": job_id, "warm": [f"lat{i}" for i in range(10)]},
        ).all()
    ms = sorted(float(r[0]) for r in rows)
    out = {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "max_ms": round(ms[-1], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

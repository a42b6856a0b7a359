"""Added pipeline latency for items the rules settle, on idle workers (a subprocess of bench.run).

Submits ``--n`` one-item files one after another, each waiting for the previous item
to finish, logging set up as ``cascade submit`` sets it up. Two figures per item:

- ``client``: from calling ``submit`` to sending the look, from a separate connection,
  that finds the item done (its snapshot is of that moment), as a caller would see
  it: the job and submission bookkeeping, reading the file, the insert, the rules (at
  the door, or through the broker and a worker) and the commit. The observer is a
  connection of its own in autocommit, one statement per look, so that looking adds
  nothing to the submitter's connection. ``call`` is the ``submit`` call alone;
- ``db``: ``finished_at - created_at`` of the row (0 when the door decides the item in
  the transaction that inserts it).

Prints JSON: p50_ms, p95_ms, max_ms (client), call_p95_ms, db_p50_ms, db_p95_ms, n.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.data import PIPELINE, RULE_TEMPLATES
from common.logs import configure_logging
from common.settings import get_settings
from tasks.runtime import get_runtime
from tasks.submit import submit
from workers.pipeline import load_pipeline


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.latency")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--dir", type=Path, required=True)
    a = p.parse_args()
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level or "WARNING")
    rt = get_runtime()
    pipe = load_pipeline(PIPELINE)
    url = make_url(settings.database_url).set(drivername="postgresql")
    observer = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
    look = "SELECT status FROM items WHERE job_id = %s AND item_key = %s"
    path = a.dir / "one.jsonl"
    job_id = 0
    client: list[float] = []
    calls: list[float] = []
    for i in range(a.n + 10):  # the first 10 warm the worker up and are not counted
        row = {"id": f"lat{i}", "text": RULE_TEMPLATES[i % len(RULE_TEMPLATES)].format(n=i)}
        path.write_text(json.dumps(row) + "\n")
        t0 = time.perf_counter()
        job_id = submit(rt, path, pipe, "latency").job_id
        returned = time.perf_counter()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sent = time.perf_counter()  # the look's snapshot is of this moment
            found = observer.execute(look, (job_id, f"lat{i}")).fetchone()
            if found is not None and found[0] == "done":
                if i >= 10:
                    client.append((sent - t0) * 1000)
                    calls.append((returned - t0) * 1000)
                break
            time.sleep(0.001)
        time.sleep(0.02)
    with rt.sessions() as s:
        rows = s.execute(
            text(
                "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM items "
                "WHERE job_id=:j AND item_key <> ALL(:warm) ORDER BY id"
            ),
            {"j": job_id, "warm": [f"lat{i}" for i in range(10)]},
        ).all()
    db = sorted(float(r[0]) for r in rows)
    ms = sorted(client)
    out = {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "max_ms": round(ms[-1], 2),
        "call_p95_ms": round(sorted(calls)[int(0.95 * (len(calls) - 1))], 2),
        "db_p50_ms": round(statistics.median(db), 2),
        "db_p95_ms": round(db[int(0.95 * (len(db) - 1))], 2),
    }
    observer.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

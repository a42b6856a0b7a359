"""What the local tier costs: ``python -m bench.local_cost [--rounds N]``.

Trains :class:`workers.local.LocalModel` on the recorded OVERRULING train half (seed 0,
1,080 texts), scores 1,000 texts of the test half and saves the model; prints the
median training time, the scoring time per text and the size on disk. Run it with
an older checkout on ``PYTHONPATH`` to compare models. 2026-12-08 on the 2-vCPU VM:
words + characters 0.69 s, 0.26 ms a text, 4.1 MB; words alone 0.12 s, 0.033 ms, 1.5 MB.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.replay.data import load, split
from workers.local import LocalModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    rounds = p.parse_args().rounds
    train, test = split(load(), 0)
    texts, gold = [r.text for r in train], [r.gold for r in train]
    queries = [r.text for r in test][:1000]
    trained, scored = [], []
    for seed in range(rounds):
        start = time.perf_counter()
        model = LocalModel.train(texts, gold, seed=seed)
        trained.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.probabilities(queries)
        scored.append((time.perf_counter() - start) / len(queries) * 1000)
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d))
        size = sum(f.stat().st_size for f in Path(d).iterdir())
    print(
        f"local model, trained on {len(texts)} texts: train {statistics.median(trained):.2f} s,"
        f" score {statistics.median(scored):.3f} ms a text, {size / 1e6:.1f} MB on disk"
    )


if __name__ == "__main__":
    main()

"""The submit writer thread: chunks written in order, failures raised to the caller,
and the per-tier batch size (free tiers get bigger batches)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from common.settings import Settings
from models.repo import NewItem
from tasks.chunks import Chunk, Pipelined
from tasks.runtime import tier_batch_size
from workers.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]


def item(n: int) -> NewItem:
    return NewItem(n, f"k{n}", "text", {})


def test_chunks_are_written_in_order_on_another_thread() -> None:
    seen: list[tuple[list[int], list[int], str]] = []

    def write(chunk: Chunk) -> None:
        batch, rejected = chunk.batch, chunk.rejected
        seen.append(
            ([i.line_no for i in batch], [r[0] for r in rejected], threading.current_thread().name)
        )

    with Pipelined(write) as w:
        for n in range(0, 50, 5):
            w.put(Chunk([item(n), item(n + 1)], [(n + 2, "bad", "raw")]))
    assert [s[0] for s in seen] == [[n, n + 1] for n in range(0, 50, 5)]
    assert [s[1] for s in seen] == [[n + 2] for n in range(0, 50, 5)]
    assert {s[2] for s in seen} == {"cascade-submit-writer"}


def test_a_failed_write_stops_writing_and_is_raised_to_the_caller() -> None:
    written: list[int] = []

    def write(chunk: Chunk) -> None:
        batch = chunk.batch
        if batch[0].line_no == 3:
            raise RuntimeError("database went away")
        written.append(batch[0].line_no)

    with pytest.raises(RuntimeError, match="database went away"), Pipelined(write) as w:
        for n in range(1, 200):
            w.put(Chunk([item(n)], []))
    assert written == [1, 2]  # nothing after the failed chunk was written


def test_an_error_in_the_caller_wins_and_queued_chunks_are_still_written() -> None:
    written: list[int] = []

    def write(chunk: Chunk) -> None:
        batch = chunk.batch
        written.append(batch[0].line_no)

    with pytest.raises(KeyError), Pipelined(write) as w:
        w.put(Chunk([item(1)], []))
        raise KeyError("parse failed")
    assert written == [1]


def test_free_tiers_get_the_bigger_batch() -> None:
    pipe = load_pipeline(ROOT / "examples" / "support_triage.toml")
    settings = Settings(batch_size=100, free_batch_size=1000)
    kinds = [t.kind for t in pipe.tiers]
    assert kinds[0] == "rules" and kinds[1] == "claude"
    assert tier_batch_size(settings, pipe, 0, "tier") == 1000
    assert tier_batch_size(settings, pipe, 1, "tier") == 100
    assert tier_batch_size(settings, pipe, 0, "fallback") == 100

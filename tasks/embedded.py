"""The embedded runtime: Celery's in-memory broker and a worker thread in this process.

Same tasks, same queues as the distributed runtime; no Redis, no separate worker.
Items left unfinished when the process stops stay in the database and are picked
up by the next `cascade sweep` (or the next embedded run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.app import app
from tasks.runtime import reset_runtime


@contextmanager
def embedded_worker(queues: list[str]) -> Iterator[None]:
    """Run a solo Celery worker consuming ``queues`` in a background thread."""
    ready = threading.Event()
    worker: Any = app.WorkController(
        app=app,
        pool_cls="solo",
        concurrency=1,
        queues=queues,
        loglevel="WARNING",
        logfile=None,
        ready_callback=lambda _consumer: ready.set(),
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        quiet=True,
    )

    def _run() -> None:
        try:
            worker.start()
        finally:
            reset_runtime()

    thread = threading.Thread(target=_run, name="cascade-embedded-worker", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the embedded worker did not start within 30 s")
    try:
        yield
    finally:
        worker.stop(in_sighandler=False)
        thread.join(10)

"""What the broker and the workers say right now: live workers (Celery's remote
control) and how many messages wait on each queue. Read-only; short timeouts."""

from __future__ import annotations

from typing import Any

from tasks.app import app


def live_workers(timeout_s: float = 1.0) -> dict[str, list[str]]:
    """Each worker that answered within ``timeout_s``, with the queues it consumes."""
    replies: Any = app.control.inspect(timeout=timeout_s).active_queues() or {}
    return {name: sorted(q["name"] for q in queues) for name, queues in replies.items()}


def queue_depths(queues: list[str]) -> dict[str, int]:
    """Messages waiting on each queue (not those a worker has taken but not finished)."""
    depths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        channel: Any = conn.default_channel
        for queue in queues:
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:  # a queue nobody declared yet holds nothing
                depths[queue] = 0
                channel = conn.channel()
    return depths


def serving(workers: dict[str, list[str]], queues: list[str]) -> dict[str, int]:
    """Per queue, how many of ``workers`` consume it."""
    return {q: sum(1 for qs in workers.values() if q in qs) for q in queues}

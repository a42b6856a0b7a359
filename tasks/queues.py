"""The queues: one per tier, one for fallback chains (and beat's jobs), one for control.

Redis keeps one list per priority step of a queue, and a worker takes from the lowest
step first. Messages go out at :data:`NORMAL`; what the sweeper re-sends (a killed
worker's items, a broker's lost messages) at :data:`URGENT`, ahead of the backlog
rather than behind it.
"""

from __future__ import annotations

FALLBACK_QUEUE = "cascade.fallback"
CONTROL_QUEUE = "cascade.control"
PRIORITY_STEPS = (0, 3, 6, 9)
URGENT, NORMAL = 0, 3


def tier_queue(tier_name: str) -> str:
    return f"tier.{tier_name}"


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s messages, one per priority step (kombu's
    naming: the queue's own name for step 0)."""
    return [queue] + [f"{queue}\x06\x16{step}" for step in PRIORITY_STEPS if step]

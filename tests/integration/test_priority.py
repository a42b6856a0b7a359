"""What the sweeper re-sends is taken before the backlog: on a real Redis broker, an
urgent message published after normal ones comes off the queue first, and
:func:`tasks.queues.queue_keys` names the lists kombu keeps (so depths count them all)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from common.lifecycle import Phase
from tasks import publish as pub
from tasks.messages import Message
from tasks.queues import NORMAL, PRIORITY_STEPS, URGENT, queue_keys
from tests.services import require_service, service_redis_url

URL = service_redis_url(14)
QUEUE = "tier.priority-test"


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Connection]:
    client = redis.Redis.from_url(URL, socket_connect_timeout=2)
    require_service("Redis", client.ping)
    client.flushdb()
    conn = Connection(URL, transport_options={"priority_steps": list(PRIORITY_STEPS)})
    producer = conn.Producer()

    class _App:  # send_task through kombu's producer, as Celery does it
        def send_task(self, name: str, *, args: Any, queue: str, priority: int, **_: Any) -> None:
            producer.publish(
                {"task": name, "args": args},
                routing_key=queue,
                declare=[conn.SimpleQueue(queue).queue],
                priority=priority,
            )

    monkeypatch.setattr(pub, "app", _App())
    monkeypatch.setattr(pub, "queue_for", lambda rt, msg: QUEUE)
    try:
        yield conn
    finally:
        client.flushdb()
        client.close()
        conn.release()


def test_an_urgent_message_overtakes_the_backlog(broker: Connection) -> None:
    backlog = [Message(Phase.TIER, 1, 1, [n]) for n in range(5)]
    rescued = Message(Phase.TIER, 1, 1, [99], urgent=True)
    assert pub.publish(None, [*backlog, rescued]) == 0  # type: ignore[arg-type]

    client = redis.Redis.from_url(URL)
    depths = {key: client.llen(key) for key in queue_keys(QUEUE)}
    assert sum(depths.values()) == 6  # every list the queue has is named
    assert depths[queue_keys(QUEUE)[PRIORITY_STEPS.index(URGENT)]] == 1
    assert depths[queue_keys(QUEUE)[PRIORITY_STEPS.index(NORMAL)]] == 5

    queue = broker.SimpleQueue(QUEUE)
    order = []
    for _ in range(6):
        message = queue.get(timeout=2)
        order.append(message.payload["args"][2])
        message.ack()
    assert order == [[99], [0], [1], [2], [3], [4]]

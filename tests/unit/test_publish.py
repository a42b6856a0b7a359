"""Publishing follow-ups: small headers, retries through a broker blip, and what still
cannot be sent left marked for the next sweep."""

from __future__ import annotations

from typing import Any

import pytest

from common.lifecycle import Phase
from tasks import publish as pub
from tasks.messages import Message
from tasks.queues import NORMAL, URGENT


class _Broker:
    """Stands in for Celery's ``send_task``: fails the first ``failures`` sends."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **kw: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker restarting")
        self.sent.append({"name": name, **kw})


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> _Broker:
    fake = _Broker()
    monkeypatch.setattr(pub, "app", fake)
    monkeypatch.setattr(pub, "queue_for", lambda rt, msg: f"q.{msg.phase}")
    return fake


def test_a_batch_message_names_its_ids_by_count(broker: _Broker) -> None:
    ids = list(range(10_000, 11_000))
    messages = [
        Message(Phase.TIER, 7, 0, ids),
        Message(Phase.FALLBACK, 7, 1, ids[:3], 5.0, urgent=True),
    ]
    assert pub.publish(None, messages, sleep=lambda s: None) == 0  # type: ignore[arg-type]
    # The ids travel in the arguments; the header says how many there are
    assert [m["name"] for m in broker.sent] == ["cascade.run_tier", "cascade.run_fallback"]
    assert [m["args"] for m in broker.sent] == [(7, 0, ids), (7, 1, ids[:3])]
    assert [m["argsrepr"] for m in broker.sent] == ["(7, 0, <1000 ids>)", "(7, 1, <3 ids>)"]
    assert [m["countdown"] for m in broker.sent] == [None, 5.0]
    assert [m["queue"] for m in broker.sent] == ["q.tier", "q.fallback"]
    assert [m["priority"] for m in broker.sent] == [NORMAL, URGENT]


def test_a_broker_blip_is_retried_with_backoff(broker: _Broker) -> None:
    broker.failures = 3
    slept: list[float] = []
    assert pub.publish(None, [Message(Phase.TIER, 1, 0, [5])], sleep=slept.append) == 0  # type: ignore[arg-type]
    assert len(broker.sent) == 1
    assert slept == list(pub.PUBLISH_DELAYS_S[:3])


def test_what_cannot_be_sent_is_marked_for_the_next_sweep(
    broker: _Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.failures = 100
    marked: list[list[int]] = []
    monkeypatch.setattr(pub, "_mark_unsent", lambda rt, ids: marked.append(ids))
    messages = [Message(Phase.TIER, 1, 0, [5, 6]), Message(Phase.TIER, 1, 1, [7])]
    assert pub.publish(None, messages, sleep=lambda s: None) == 3  # type: ignore[arg-type]
    assert broker.sent == []
    assert marked == [[5, 6, 7]]

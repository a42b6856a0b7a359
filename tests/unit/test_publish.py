"""Publishing a batch: Celery's header must not carry a repr of every id."""

from __future__ import annotations

from typing import Any

import pytest

from tasks import jobs
from tasks.flow import Message


def test_a_batch_message_names_its_ids_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(jobs, "queue_for", lambda rt, msg: "tier.x")
    monkeypatch.setattr(jobs.run_tier, "apply_async", lambda **kw: sent.append(kw))
    monkeypatch.setattr(jobs.run_fallback, "apply_async", lambda **kw: sent.append(kw))
    ids = list(range(10_000, 11_000))
    jobs.publish(None, [Message("tier", 7, 0, ids), Message("fallback", 7, 1, ids[:3], 5.0)])  # type: ignore[arg-type]
    # The ids travel in the arguments; the header says how many there are
    assert [m["args"] for m in sent] == [(7, 0, ids), (7, 1, ids[:3])]
    assert [m["argsrepr"] for m in sent] == ["(7, 0, <1000 ids>)", "(7, 1, <3 ids>)"]
    assert [m["countdown"] for m in sent] == [None, 5.0]

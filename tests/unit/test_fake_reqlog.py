"""The fake's request log over real HTTP on 127.0.0.1, and the error-cycle fault."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cascade.fakeapi import FakeServer
from cascade.fakeapi.reqlog import Entry, item_digest, read_log

MODEL = "claude-haiku-4-5"
TOOL = {
    "name": "record_classification",
    "description": "d",
    "input_schema": {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["billing", "other"]}},
    },
}


def body(item: str = "I want a refund") -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": f"<item>\n{item}\n</item>"}],
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "record_classification"},
    }


def post(fake: FakeServer, payload: Any, timeout: float = 5.0) -> tuple[int, str]:
    """(status, request-id header); raises on a dropped connection or a timeout."""
    parts = urlsplit(fake.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request(
            "POST", "/v1/messages", json.dumps(payload), {"x-api-key": "k", "content-type": "json"}
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.headers["request-id"]
    finally:
        conn.close()


def wait_lines(path: Path, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = list(read_log(path)) if path.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.01)
    raise AssertionError(f"{path} did not reach {n} lines")


def test_each_outcome_is_logged_while_the_server_runs(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with FakeServer(request_log=log) as fake:
        # Given an answered call
        status, rid = post(fake, body())
        assert status == 200
        # Then its line is readable at once (line-buffered), with the header's id and usage
        (ok,) = wait_lines(log, 1)
        assert ok["request_id"] == rid
        assert (ok["model"], ok["status"], ok["outcome"]) == (MODEL, 200, "ok")
        assert ok["input_tokens"] > 0 and ok["output_tokens"] > 0
        assert ok["cache_creation_input_tokens"] == ok["cache_read_input_tokens"] == 0
        assert ok["received"] <= ok["sent"] <= ok["ended"]
        assert abs(ok["sent"] - time.time()) < 5

        # When a call fails with an injected error
        fake.set_faults(MODEL, error_status=529)
        status, rid_err = post(fake, body())
        assert status == 529
        # When the fake drops the connection
        fake.set_faults(MODEL, drop_rate=1.0)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            post(fake, body())
        # When the client gives up before the (hanging) reply
        fake.set_faults(MODEL, hang_s=5)
        with pytest.raises(socket.timeout):
            post(fake, body(), timeout=0.3)

        lines = wait_lines(log, 4)
        err, dropped, cut = lines[1:4]
        assert (err["request_id"], err["status"], err["outcome"]) == (rid_err, 529, "error")
        assert err["input_tokens"] == err["output_tokens"] == 0
        assert (dropped["status"], dropped["outcome"], dropped["sent"]) == (None, "dropped", None)
        assert (cut["status"], cut["outcome"], cut["sent"]) == (None, "cut_off", None)
        assert cut["ended"] - cut["received"] < 4  # cancelled when the client left
        assert fake.stats()["outcomes"] == {"ok": 1, "error": 1, "dropped": 1, "cut_off": 1}
        # Request ids are unique
        assert len({line["request_id"] for line in lines}) == 4


def test_a_second_server_appends(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    for _ in range(2):
        with FakeServer(request_log=log) as fake:
            post(fake, body())
    assert [line["outcome"] for line in read_log(log)] == ["ok", "ok"]


def test_no_log_by_default(tmp_path: Path) -> None:
    with FakeServer() as fake:
        assert post(fake, body())[0] == 200
        assert fake.stats()["outcomes"] == {"ok": 1}


def test_a_cut_off_reply_keeps_what_it_would_have_billed_apart() -> None:
    entry = Entry("req_1", received=1.0, model=MODEL, status=200)
    entry.usage = {"input_tokens": 10, "output_tokens": 5}
    entry.ended = 2.0
    out = entry.as_dict()
    assert (out["outcome"], out["status"], out["unsent_status"]) == ("cut_off", None, 200)
    assert (out["input_tokens"], out["unsent_input_tokens"], out["unsent_output_tokens"]) == (
        0,
        10,
        5,
    )


def test_read_log_skips_a_half_written_last_line(tmp_path: Path) -> None:
    log = tmp_path / "r.jsonl"
    log.write_text('{"request_id": "a"}\n{"request_id": "b"')
    assert [e["request_id"] for e in read_log(log)] == ["a"]


def test_error_cycle_takes_each_status_in_turn(tmp_path: Path) -> None:
    with FakeServer(
        faults={MODEL: {"error_cycle": [429, 529, 500], "error_every": 2, "retry_after": 1}}
    ) as fake:
        statuses = [post(fake, body())[0] for _ in range(8)]
    # every 2nd call fails, taking 429, 529, 500, 429 in turn
    assert statuses == [200, 429, 200, 529, 200, 500, 200, 429]


def test_error_cycle_sends_retry_after_with_its_429s_only() -> None:
    with FakeServer(faults={MODEL: {"error_cycle": [429, 529], "retry_after": 2}}) as fake:
        parts = urlsplit(fake.base_url)
        seen = []
        for _ in range(2):
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
            conn.request("POST", "/v1/messages", json.dumps(body()), {"x-api-key": "k"})
            resp = conn.getresponse()
            resp.read()
            seen.append((resp.status, resp.headers.get("retry-after")))
            conn.close()
    assert seen == [(429, "2"), (529, None)]


def test_error_cycle_must_list_statuses() -> None:
    with pytest.raises(ValueError, match="error_cycle"):
        FakeServer(faults={MODEL: {"error_cycle": []}})


def test_each_line_names_the_item_by_a_digest_of_its_text(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with FakeServer(request_log=log) as fake:
        post(fake, body("first post"))
        post(fake, body("second & <other> post"))
    first, second = read_log(log)
    assert first["item"] == item_digest("first post")
    assert second["item"] == item_digest("second & <other> post")

"""The fake's Message Batches endpoints over HTTP (each refusal as the real API words it,
the wait until a batch ends, the run-time config), and its command line's options."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from cascade.fakeapi import FakeServer
from cascade.fakeapi.__main__ import latency, parse_args, rate_limits
from cascade.fakeapi.batches import BATCHES_KEY, MAX_REQUESTS, BatchConfig, validate

NOW = [0.0]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        fake.app[BATCHES_KEY].clock = lambda: NOW[0]
        yield fake


@pytest.fixture(autouse=True)
def _clean(server: FakeServer) -> None:
    NOW[0] = 0.0
    server.app[BATCHES_KEY].config = BatchConfig()


def call(
    server: FakeServer, method: str, path: str, body: bytes | None = None, *, auth: bool = True
) -> tuple[int, bytes]:
    parts = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    headers = {"content-type": "application/json"}
    if auth:
        headers["x-api-key"] = "sk-test"
    try:
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def error_of(raw: bytes) -> tuple[str, str]:
    body = json.loads(raw)
    assert body["type"] == "error"
    return body["error"]["type"], body["error"]["message"]


def request(cid: str, item: str = "I want a refund") -> dict[str, Any]:
    return {
        "custom_id": cid,
        "params": {
            "model": "claude-haiku-5-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"<item>{item}</item>"}],
        },
    }


def create(server: FakeServer, *requests: dict[str, Any]) -> dict[str, Any]:
    status, raw = call(
        server, "POST", "/v1/messages/batches", json.dumps({"requests": list(requests)}).encode()
    )
    assert status == 200, raw
    created: dict[str, Any] = json.loads(raw)
    return created


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (None, "requests: at least one request is required"),
        ([], "requests: at least one request is required"),
        ({"requests": "x"}, "requests: at least one request is required"),
        ({"requests": [{"params": {}}]}, "requests[0].custom_id: must match"),
        ({"requests": [{"custom_id": "a b", "params": {}}]}, "requests[0].custom_id: must match"),
        ({"requests": [{"custom_id": "x" * 65, "params": {}}]}, "requests[0].custom_id: must"),
        (
            {"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]},
            "requests[1].custom_id: 'a' is not unique in the batch",
        ),
        ({"requests": [{"custom_id": "a", "params": []}]}, "requests[0].params: an object"),
        ({"requests": ["a"]}, "requests[0].custom_id: must match"),
    ],
)
def test_validate_says_what_the_real_api_would_refuse(body: Any, problem: str) -> None:
    found = validate(body)
    assert isinstance(found, str) and found.startswith(problem)


def test_validate_caps_the_number_of_requests() -> None:
    many = {"requests": [{"custom_id": f"r{n}", "params": {}} for n in range(MAX_REQUESTS + 1)]}
    assert validate(many) == f"requests: at most {MAX_REQUESTS} requests per batch"


def test_validate_returns_the_pairs_in_order() -> None:
    body = {"requests": [{"custom_id": "b", "params": {"x": 1}}, {"custom_id": "a", "params": {}}]}
    assert validate(body) == [("b", {"x": 1}), ("a", {})]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"delay": 1}, "unknown batch config keys: ['delay']"),
        ({"errored_pattern": "("}, "missing )"),  # a pattern that does not compile
    ],
)
def test_batch_config_refuses_unknown_keys_and_bad_patterns(
    data: dict[str, Any], problem: str
) -> None:
    import re

    with pytest.raises((ValueError, re.error)) as caught:
        BatchConfig.from_mapping(data)
    assert problem in str(caught.value)


def test_create_without_a_key_is_401(server: FakeServer) -> None:
    status, raw = call(server, "POST", "/v1/messages/batches", b"{}", auth=False)
    assert status == 401
    assert error_of(raw) == ("authentication_error", "x-api-key header is required")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body must be a JSON object"),
        (b'{"requests": []}', "requests: at least one request is required"),
    ],
)
def test_create_refuses_a_bad_body_with_400(server: FakeServer, body: bytes, message: str) -> None:
    status, raw = call(server, "POST", "/v1/messages/batches", body)
    assert status == 400
    assert error_of(raw) == ("invalid_request_error", message)


def test_a_batch_runs_until_its_delay_is_over_then_has_results(server: FakeServer) -> None:
    server.app[BATCHES_KEY].config = BatchConfig(delay_s=30)
    created = create(server, request("one"), request("two", "the app crashes"))
    bid = created["id"]
    assert created["processing_status"] == "in_progress"
    assert created["request_counts"]["processing"] == 2
    assert created["results_url"] is None and created["ended_at"] is None
    status, raw = call(server, "GET", f"/v1/messages/batches/{bid}/results")
    assert status == 400
    assert error_of(raw)[1] == f"message batch {bid} has not ended yet"
    NOW[0] = 30.0
    status, raw = call(server, "GET", f"/v1/messages/batches/{bid}")
    ended = json.loads(raw)
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {
        "processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0,
    }  # fmt: skip
    assert ended["results_url"] == f"{server.base_url}/v1/messages/batches/{bid}/results"
    status, raw = call(server, "GET", f"/v1/messages/batches/{bid}/results")
    assert status == 200
    results = [json.loads(line) for line in raw.decode().splitlines()]
    assert [r["custom_id"] for r in results] == ["one", "two"]
    assert all(r["result"]["type"] == "succeeded" for r in results)


def test_results_are_settled_once_and_read_the_same_twice(server: FakeServer) -> None:
    bid = create(server, request("one"))["id"]
    first = call(server, "GET", f"/v1/messages/batches/{bid}/results")
    calls = server.stats()["by_model"]["claude-haiku-5-5"]["calls"]
    second = call(server, "GET", f"/v1/messages/batches/{bid}/results")
    assert first == second
    assert server.stats()["by_model"]["claude-haiku-5-5"]["calls"] == calls  # not answered again


def test_errored_requests_carry_the_configured_status(server: FakeServer) -> None:
    server.app[BATCHES_KEY].config = BatchConfig(errored_pattern="boom", errored_status=529)
    bid = create(server, request("bad", "boom goes the server"))["id"]
    _, raw = call(server, "GET", f"/v1/messages/batches/{bid}/results")
    result = json.loads(raw.decode().splitlines()[0])["result"]
    assert result["type"] == "errored"
    assert result["error"]["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("suffix", ["", "/results"])
def test_an_unknown_batch_is_404_and_needs_a_key_first(server: FakeServer, suffix: str) -> None:
    status, raw = call(server, "GET", f"/v1/messages/batches/msgbatch_nope{suffix}")
    assert status == 404
    assert error_of(raw) == ("not_found_error", "message batch msgbatch_nope not found")
    status, _ = call(server, "GET", f"/v1/messages/batches/msgbatch_nope{suffix}", auth=False)
    assert status == 401


def test_config_endpoint_sets_the_store_and_refuses_bad_keys(server: FakeServer) -> None:
    status, raw = call(server, "POST", "/_fake/batches", b'{"delay_s": 5, "expired_pattern": "x"}')
    assert (status, json.loads(raw)) == (200, {"ok": True})
    assert server.app[BATCHES_KEY].config == BatchConfig(delay_s=5, expired_pattern="x")
    status, raw = call(server, "POST", "/_fake/batches", b'{"nope": 1}')
    assert status == 400 and "unknown batch config keys" in json.loads(raw)["error"]
    status, raw = call(server, "POST", "/_fake/batches", b"[1, 2]")
    assert status == 400  # not an object
    assert server.app[BATCHES_KEY].config.delay_s == 5  # a refused config changes nothing


# --- python -m cascade.fakeapi --------------------------------------------------------------


def test_default_options_are_loopback_no_limits_no_shape() -> None:
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8787)
    assert rate_limits(args) is None
    assert latency(args) is None


def test_any_one_per_minute_limit_turns_rate_limits_on() -> None:
    limits = rate_limits(parse_args(["--input-tokens-per-min", "1000"]))
    assert limits is not None
    assert limits.input_tokens_per_min == 1000
    assert limits.requests_per_min is None and limits.output_tokens_per_min is None


@pytest.mark.parametrize(
    ("argv", "median"),
    [
        (["--latency-dist", "lognormal", "--latency-ms", "300"], 300.0),  # the plain latency
        (["--latency-dist", "lognormal", "--latency-ms", "300", "--latency-median-ms", "700"],
         700.0),  # its own median wins
    ],
)  # fmt: skip
def test_a_latency_shape_takes_its_median_from_the_options(argv: list[str], median: float) -> None:
    spec = latency(parse_args([*argv, "--latency-sigma", "0.9", "--latency-cap-ms", "20000"]))
    assert spec is not None
    assert (spec.dist, spec.median_ms, spec.sigma, spec.cap_ms) == (
        "lognormal", median, 0.9, 20000.0,
    )  # fmt: skip


def test_an_unknown_latency_shape_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["--latency-dist", "zipf"])
    assert caught.value.code == 2
    assert "invalid choice: 'zipf'" in capsys.readouterr().err

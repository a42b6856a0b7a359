"""The fake Messages API's rate limits: the buckets (injected clock) and the headers over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cascade.fakeapi import FakeRateLimits, FakeServer
from cascade.fakeapi.__main__ import parse_args, rate_limits
from cascade.fakeapi.ratelimits import FakeBuckets
from tests.unit.test_fakeapi import call, message
from workers.ratelimit import Observed, parse_rate_headers, parse_reset

H = "anthropic-ratelimit-"
MODEL = "claude-haiku-4-5"


def buckets(limits: FakeRateLimits, now: list[float]) -> FakeBuckets:
    return FakeBuckets(limits, clock=lambda: now[0], wall=lambda: 1_800_000_000.0 + now[0])


def test_requests_bucket_counts_down_refills_and_refuses_when_empty() -> None:
    now = [0.0]
    fake = buckets(FakeRateLimits(requests_per_min=3), now)
    # a fresh bucket is full: three go at once, each reply says how many are left
    left = [fake.take(MODEL, 10, 100).headers[f"{H}requests-remaining"] for _ in range(3)]
    assert left == ["2", "1", "0"]
    # the fourth does not fit: refused, told to wait one spacing (20 s at 3/min)
    refused = fake.take(MODEL, 10, 100)
    assert not refused.ok
    assert refused.retry_after_s == pytest.approx(20.0)
    assert refused.headers[f"{H}requests-remaining"] == "0"
    # 20 s later one request has refilled
    now[0] = 20.0
    assert fake.take(MODEL, 10, 100).ok
    # models have buckets of their own
    assert fake.take("claude-sonnet-5", 10, 100).headers[f"{H}requests-remaining"] == "2"


def test_token_limits_take_input_tokens_and_max_tokens() -> None:
    now = [0.0]
    limits = FakeRateLimits(input_tokens_per_min=1000, output_tokens_per_min=300)
    got = buckets(limits, now).take(MODEL, 50, 200)
    assert got.ok
    assert got.headers[f"{H}input-tokens-limit"] == "1000"
    assert got.headers[f"{H}input-tokens-remaining"] == "950"
    assert got.headers[f"{H}output-tokens-remaining"] == "100"
    # the tokens-* trio reports the most restrictive token limit (output: 100 left)
    assert got.headers[f"{H}tokens-limit"] == "300"
    assert got.headers[f"{H}tokens-remaining"] == "100"
    assert f"{H}requests-limit" not in got.headers  # not configured: not sent


def test_reset_is_rfc3339_when_the_bucket_is_full_again() -> None:
    now = [0.0]
    got = buckets(FakeRateLimits(requests_per_min=60), now).take(MODEL, 1, 1)
    reset = got.headers[f"{H}requests-reset"]
    assert reset.endswith("Z")
    # one request used at 60/min: full again one second later
    assert parse_reset(reset, 1_800_000_000.0) == pytest.approx(1.0)
    assert datetime.fromisoformat(reset.replace("Z", "+00:00")).tzinfo == UTC


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FakeRateLimits(requests_per_min=0)


def test_cli_flags_make_limits_and_none_by_default() -> None:
    assert rate_limits(parse_args([])) is None
    assert rate_limits(parse_args(["--requests-per-min", "50"])) == FakeRateLimits(50)


def test_by_default_no_rate_limit_headers_are_sent() -> None:
    with FakeServer() as fake:
        status, headers, _ = call(fake, "/v1/messages", message())
    assert status == 200
    assert not [k for k in headers if k.startswith(H)]


def test_limited_server_sends_headers_the_limiter_reads_then_429s() -> None:
    with FakeServer(rate_limits=FakeRateLimits(requests_per_min=2)) as fake:
        status, headers, _ = call(fake, "/v1/messages", message())
        assert status == 200
        assert parse_rate_headers(headers) == Observed(
            limit=(2.0, None, None), remaining=(1.0, None, None)
        )
        assert call(fake, "/v1/messages", message())[0] == 200
        # the third within the minute is refused the way the API refuses it
        status, headers, body = call(fake, "/v1/messages", message())
        assert status == 429
        assert body["error"]["type"] == "rate_limit_error"
        assert headers["retry-after"] == "30"
        assert headers[f"{H}requests-remaining"] == "0"
        assert fake.stats()["by_model"][MODEL]["errors"] == {"429": 1}
        # reset refills the buckets
        fake.reset()
        assert call(fake, "/v1/messages", message())[0] == 200

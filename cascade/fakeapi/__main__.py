"""Run the fake Messages API in the foreground: ``python -m cascade.fakeapi --port 8787``."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Sequence

from aiohttp import web

from cascade.fakeapi.ratelimits import FakeRateLimits
from cascade.fakeapi.server import bind_loopback, make_app
from cascade.fakeapi.wire import FakeConfig, Fault


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cascade.fakeapi", description=__doc__)
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 only inside a container network (compose)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--faults",
        default=None,
        help='JSON object of model -> fault, e.g. \'{"claude-haiku-5-5": {"error_status": 529}}\'',
    )
    limits = parser.add_argument_group(
        "rate limits",
        "per model, enforced with 429s and reported in anthropic-ratelimit-* headers "
        "(default: none, and no such headers)",
    )
    limits.add_argument("--requests-per-min", type=float, default=None, metavar="N")
    limits.add_argument("--input-tokens-per-min", type=float, default=None, metavar="N")
    limits.add_argument("--output-tokens-per-min", type=float, default=None, metavar="N")
    return parser.parse_args(argv)


def rate_limits(args: argparse.Namespace) -> FakeRateLimits | None:
    per_min = (args.requests_per_min, args.input_tokens_per_min, args.output_tokens_per_min)
    if all(v is None for v in per_min):
        return None
    return FakeRateLimits(*per_min)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    faults = {m: Fault.from_mapping(f) for m, f in json.loads(args.faults or "{}").items()}
    config = FakeConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        seed=args.seed,
        faults=faults,
        rate_limits=rate_limits(args),
    )
    if args.host == "127.0.0.1":
        sock = bind_loopback(args.port)
    else:  # a container's network (docker compose --profile offline), never a host's
        sock = socket.create_server((args.host, args.port), reuse_port=False)
    banner = f"fake Messages API listening on http://{args.host}:{sock.getsockname()[1]}"
    web.run_app(
        make_app(config),
        sock=sock,
        print=lambda _: print(banner, flush=True),  # called once the socket accepts
        access_log=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()

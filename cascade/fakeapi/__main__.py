"""Run the fake Messages API in the foreground: ``python -m cascade.fakeapi --port 8787``."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Sequence

from aiohttp import web

from cascade.fakeapi.latency import DISTS, LatencySpec, parse_model_latency
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
    shape = parser.add_argument_group(
        "latency shape",
        "instead of --latency-ms ± --jitter-ms: a distribution, seeded by --seed "
        "(a model in --model-latency, or with a fault's latency_ms, is not affected)",
    )
    shape.add_argument("--latency-dist", choices=DISTS, default=None)
    shape.add_argument(
        "--latency-median-ms",
        type=float,
        default=None,
        help="the median (fixed: the value; normal: the mean); default --latency-ms",
    )
    shape.add_argument(
        "--latency-sigma",
        type=float,
        default=0.0,
        help="lognormal: the shape (0.9: p99 about 8x the median); normal: std dev in ms",
    )
    shape.add_argument("--latency-cap-ms", type=float, default=None, help="no draw exceeds it")
    shape.add_argument(
        "--model-latency",
        default=None,
        help='JSON object of model -> shape, e.g. \'{"claude-haiku-5-5": {"dist": "lognormal", '
        '"median_ms": 700, "sigma": 0.9, "cap_ms": 20000}}\'',
    )
    parser.add_argument(
        "--request-log",
        default=None,
        metavar="PATH",
        help="append one JSON line per Messages request (cascade.fakeapi.reqlog)",
    )
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


def latency(args: argparse.Namespace) -> LatencySpec | None:
    if args.latency_dist is None:
        return None
    median = args.latency_median_ms if args.latency_median_ms is not None else args.latency_ms
    return LatencySpec(args.latency_dist, median, args.latency_sigma, args.latency_cap_ms)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    faults = {m: Fault.from_mapping(f) for m, f in json.loads(args.faults or "{}").items()}
    config = FakeConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        seed=args.seed,
        faults=faults,
        rate_limits=rate_limits(args),
        latency=latency(args),
        model_latency=parse_model_latency(args.model_latency),
        request_log=args.request_log,
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

"""A rate-enforcing proxy in front of the fake Messages API, standing in for the real API's limits.

``python -m bench.limitproxy --port P --upstream URL --rpm 600 --burst 20``: every
``POST /v1/messages`` passes a token bucket (``rpm`` per minute, ``burst`` capacity;
Anthropic's own bucket holds a whole minute, so this is stricter) and is forwarded,
or answered ``429 rate_limit_error`` with ``retry-after``. ``GET /_proxy/stats``
returns the forwarded calls' timestamps and the 429 count.
"""

from __future__ import annotations

import argparse
import time

import aiohttp
from aiohttp import web

from cascade.fakeapi.server import bind_loopback


class Bucket:
    def __init__(self, rpm: float, burst: float) -> None:
        self.rate = rpm / 60.0
        self.capacity = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def make_app(upstream: str, rpm: float, burst: float) -> web.Application:
    app = web.Application()
    bucket = Bucket(rpm, burst)
    stamps: list[float] = []
    rejected = [0]
    session: dict[str, aiohttp.ClientSession] = {}

    async def messages(request: web.Request) -> web.Response:
        body = await request.read()
        if not bucket.take():
            rejected[0] += 1
            err = b'{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}'
            return web.Response(
                status=429, body=err, content_type="application/json", headers={"retry-after": "1"}
            )
        stamps.append(time.time())
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with session["s"].post(upstream + "/v1/messages", data=body, headers=headers) as r:
            data = await r.read()
            keep = {k: v for k, v in r.headers.items() if k.lower() in ("request-id",)}
            return web.Response(
                status=r.status, body=data, headers=keep, content_type="application/json"
            )

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"forwarded": stamps, "rejected_429": rejected[0]})

    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/_proxy/stats", stats)
    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.limitproxy")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--upstream", required=True)
    p.add_argument("--rpm", type=float, default=600)
    p.add_argument("--burst", type=float, default=20)
    a = p.parse_args()
    sock = bind_loopback(a.port)
    banner = f"limit proxy listening on http://127.0.0.1:{sock.getsockname()[1]}"
    web.run_app(
        make_app(a.upstream, a.rpm, a.burst),
        sock=sock,
        access_log=None,
        print=lambda _: print(banner, flush=True),
    )


if __name__ == "__main__":
    main()

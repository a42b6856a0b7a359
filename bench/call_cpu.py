"""CPU per model call in the worker's process: ``python -m bench.call_cpu [--calls N]``.

One process, one event loop, 64 calls in flight against the fake Messages API (its own
process, so its CPU is not counted), every request carrying the moderation pipeline's
policy prefix (``examples/moderation_policy.md``, marked for caching) as a worker's do.
It reports ``time.process_time()`` per call, for each way of turning the reply into a
:class:`~workers.providers.base.Reply`, interleaved and repeated (this VM is noisy):

- ``provider``: :meth:`AnthropicProvider.classify` as the workers run it (the direct
  Messages endpoint of :mod:`workers.providers.direct`; :func:`parse_reply` reads the JSON);
- ``sdk``: the same request through the SDK's ``messages.create`` (raw response, the same
  JSON read), as Bedrock and Vertex calls go;
- ``sdk-model``: through the SDK, the reply built into its pydantic ``Message`` first
  (what ``classify`` did before 2026-12-07).

A figure of 2026-12-07 (3,000 calls a round, 3 rounds, other work on the machine):
provider 0.48 ms, sdk 1.33 ms, sdk-model 1.96 ms CPU per call (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import stack
from workers.providers.anthropic import AnthropicProvider, build_params
from workers.providers.base import ClassifyRequest
from workers.providers.replies import parse_reply, reply_of

POLICY = Path(__file__).resolve().parents[1] / "examples" / "moderation_policy.md"
LABELS = ("ok", "spam", "harassment", "hate", "self_harm", "violence", "sexual")


def request(i: int, system: str) -> ClassifyRequest:
    return ClassifyRequest(
        provider="anthropic",
        model="claude-haiku-5-5",
        system=system,
        user=f"<item>post {i}: has anyone tried the new trail by the lake?</item>",
        labels=LABELS,
        max_tokens=200,
        mechanism="forced_tool",
        cache_ttl="5m",
    )


async def cpu_per_call(call: Callable[[int], Awaitable[object]], n: int, inflight: int) -> float:
    await call(-1)  # the client made, the connection pool warm
    gate = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with gate:
            await call(i)

    started = time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return (time.process_time() - started) / n * 1000


async def one_round(url: str, kind: str, n: int, inflight: int) -> float:
    system = POLICY.read_text(encoding="utf-8")
    provider = AnthropicProvider(api_key=stack.API_KEY, base_url=url)
    try:
        if kind == "provider":
            return await cpu_per_call(lambda i: provider.classify(request(i, system)), n, inflight)

        async def via_sdk(i: int) -> object:
            req = request(i, system)
            raw = await provider._sdk().messages.with_raw_response.create(**build_params(req))
            if kind == "sdk":
                return reply_of(await raw.read(), req.mechanism, raw.headers, raw.request_id)
            message = await raw.parse()
            return parse_reply(message.to_dict(), req.mechanism)

        return await cpu_per_call(via_sdk, n, inflight)
    finally:
        await provider.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--calls", type=int, default=3_000, help="calls per round and way")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--inflight", type=int, default=64)
    a = p.parse_args()
    figures: dict[str, list[float]] = {"provider": [], "sdk": [], "sdk-model": []}
    with tempfile.TemporaryDirectory() as work, stack.fake_api(Path(work), "cpu", []) as fake:
        for _ in range(a.rounds):
            for kind, got in figures.items():
                got.append(asyncio.run(one_round(fake.url, kind, a.calls, a.inflight)))
    for kind, got in figures.items():
        runs = ", ".join(f"{x:.3f}" for x in got)
        print(f"{kind:10s} median {statistics.median(got):.3f} ms CPU per call ({runs})")


if __name__ == "__main__":
    main()

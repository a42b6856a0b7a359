"""Peers on the same workload, no persistence, no broker (run as a subprocess by bench.run).

``python -m bench.peers {sequential,raw,litellm} FILE --base-url URL [--concurrency N]``
prints one JSON object: items, seconds, items_per_s, model_calls, cpu_s, peak_rss_mb.

- ``sequential``: the article's loop: one item at a time, the sync SDK, tier after tier.
- ``raw``: the ceiling: ``workers.engine.Engine`` with a ``RealtimeExecutor`` over the real
  ``AnthropicProvider`` (the direct Messages endpoint, as the workers call) on one event
  loop, every item streamed through rules -> small -> large, bounded by the same
  concurrency as the workers.
- ``litellm``: LiteLLM's Router (primary + fallbacks per tier) under asyncio, same cascade
  decisions; skipped when litellm is not installed (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.data import PIPELINE
from workers.answers import judge
from workers.decision import Escalate, decide
from workers.engine import Engine, RealtimeExecutor
from workers.pipeline import ClaudeTier, RulesTier, load_pipeline
from workers.pricing import PriceTable
from workers.records import WorkItem
from workers.retry import RetryPolicy
from workers.rules import CompiledRules

API_KEY = "sk-ant-bench-0000000000000000"


def texts(path: Path, limit: int | None) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if limit is not None and len(out) >= limit:
                break
    return out


def sequential(items: list[str], base_url: str) -> int:
    import anthropic

    from workers.providers.anthropic import build_params
    from workers.providers.replies import parse_reply

    pipe = load_pipeline(PIPELINE)
    engine = Engine(pipe, PriceTable.load(), executor=None)  # type: ignore[arg-type]
    rules_tier = pipe.tiers[0]
    assert isinstance(rules_tier, RulesTier)
    rules = CompiledRules(rules_tier)
    client = anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=2)
    calls = 0
    for text in items:
        if rules.match(text):
            continue
        for index, tier in enumerate(pipe.tiers[1:], start=1):
            assert isinstance(tier, ClaudeTier)
            request = engine.request(tier, tier.primary, text)
            message = client.messages.create(**build_params(request))
            calls += 1
            judged = judge(parse_reply(message.to_dict(), request.mechanism), pipe.labels)
            decision = decide(tier.accept, judged, is_last=index == len(pipe.tiers) - 1)
            if not isinstance(decision, Escalate):
                break
    client.close()
    return calls


async def raw(items: list[str], base_url: str, concurrency: int) -> int:
    from workers.providers.anthropic import AnthropicProvider

    pipe = load_pipeline(PIPELINE)
    provider = AnthropicProvider(api_key=API_KEY, base_url=base_url)
    executor = RealtimeExecutor(lambda _name: provider, RetryPolicy(), concurrency)
    engine = Engine(pipe, PriceTable.load(), executor)
    calls = 0

    async def one(pk: int, text: str) -> None:
        nonlocal calls
        result = engine.run_rules(0, [WorkItem(pk, text, 0)])[0]
        steps, index = 1, 1
        while isinstance(result.decision, Escalate) and index < len(pipe.tiers):
            tier = pipe.tiers[index]
            assert isinstance(tier, ClaudeTier)
            item = WorkItem(pk, text, steps)
            result = (await engine.run_model(index, [item], tier.primary, role="primary"))[0]
            calls += result.model_calls
            steps += len(result.steps)
            index += 1

    # Stream items in (a bounded window of pending coroutines), like a queue would.
    window = concurrency * 4
    it: Iterator[tuple[int, str]] = iter(enumerate(items))
    pending: set[asyncio.Task[None]] = set()
    for pk, text in it:
        pending.add(asyncio.create_task(one(pk, text)))
        if len(pending) >= window:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.gather(*pending)
    await provider.aclose()
    return calls


async def litellm_router(items: list[str], base_url: str, concurrency: int) -> int:
    import litellm  # optional: the `bench` extra

    from workers.providers.anthropic import classification_schema
    from workers.providers.base import Reply, Usage

    pipe = load_pipeline(PIPELINE)
    engine = Engine(pipe, PriceTable.load(), executor=None)  # type: ignore[arg-type]
    rules_tier = pipe.tiers[0]
    assert isinstance(rules_tier, RulesTier)
    rules = CompiledRules(rules_tier)
    model_list: list[dict[str, Any]] = []
    fallbacks: list[dict[str, list[str]]] = []
    for tier in pipe.tiers[1:]:
        assert isinstance(tier, ClaudeTier)
        names = []
        for link in tier.chain:
            name = f"{tier.name}:{link.model}"
            names.append(name)
            model_list.append(
                {
                    "model_name": name,
                    "litellm_params": {
                        "model": f"anthropic/{link.model}",
                        "api_key": API_KEY,
                        "api_base": base_url,
                    },
                }
            )
        fallbacks.append({names[0]: names[1:]})
    router = litellm.Router(model_list=model_list, fallbacks=fallbacks, num_retries=2)
    sem = asyncio.Semaphore(concurrency)
    calls = 0

    async def one(text: str) -> None:
        nonlocal calls
        if rules.match(text):
            return
        for index, tier in enumerate(pipe.tiers[1:], start=1):
            assert isinstance(tier, ClaudeTier)
            request = engine.request(tier, tier.primary, text)
            tool = {
                "type": "function",
                "function": {
                    "name": "record_classification",
                    "parameters": classification_schema(pipe.labels),
                },
            }
            async with sem:
                response = await router.acompletion(
                    model=f"{tier.name}:{tier.primary.model}",
                    messages=[
                        {"role": "system", "content": request.system},
                        {"role": "user", "content": request.user},
                    ],
                    tools=[tool],
                    max_tokens=request.max_tokens,
                )
            calls += 1
            msg = response.choices[0].message
            structured = None
            if msg.tool_calls:
                structured = json.loads(msg.tool_calls[0].function.arguments)
            reply = Reply("tool_use", structured, msg.content or "", Usage())
            decision = decide(
                tier.accept, judge(reply, pipe.labels), is_last=index == len(pipe.tiers) - 1
            )
            if not isinstance(decision, Escalate):
                return

    await asyncio.gather(*(one(t) for t in items))
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("peer", choices=["sequential", "raw", "litellm"])
    parser.add_argument("file", type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args(argv)
    items = texts(args.file, args.n)
    if args.peer == "litellm":
        # Offline: LiteLLM's bundled cost map, not three failed fetches (~8 s) from GitHub.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm  # noqa: F401
        except ImportError:
            print(json.dumps({"skipped": "litellm is not installed (pip install -e '.[bench]')"}))
            return
    cpu0, t0 = time.process_time(), time.perf_counter()
    if args.peer == "sequential":
        calls = sequential(items, args.base_url)
    elif args.peer == "raw":
        calls = asyncio.run(raw(items, args.base_url, args.concurrency))
    else:
        calls = asyncio.run(litellm_router(items, args.base_url, args.concurrency))
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    out = {
        "items": len(items),
        "seconds": round(seconds, 3),
        "items_per_s": round(len(items) / seconds, 1),
        "model_calls": calls,
        "model_calls_per_s": round(calls / seconds, 1),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_1k": round(cpu / len(items) * 1000, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""The report's cache and reuse sections: per tier hit rate, tokens, money saved.

Money saved by caching is what the same tokens would have cost as plain input, less
what the writes and reads cost: writes at the 1-hour rate on batch calls (batch tiers
write for an hour), at the 5-minute rate otherwise, and the batch discount applied.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from cascade.fmt import money
from cascade.render import usd_text
from cascade.report_svg import esc, html_table, num_html, usd_html
from models.cache_report import Reuse, TierCache
from workers.pricing import PriceTable, UnknownModelError


def cache_saved_nanos(prices: PriceTable | None, c: TierCache) -> int | None:
    """Plain input for the cached tokens minus what their writes and reads cost."""
    if prices is None:
        return None
    try:
        price = prices.price(c.model)
    except UnknownModelError:
        return None
    write = price.cache_write_1h if c.is_batch else price.cache_write_5m
    per_mtok = (c.cache_write_tokens + c.cache_read_tokens) * price.input - (
        c.cache_write_tokens * write + c.cache_read_tokens * price.cache_read
    )
    nanos = Decimal(per_mtok) * 1000
    if c.is_batch:
        nanos *= 1 - prices.batch_discount
    return int(nanos.to_integral_value())


def add_cache_sections(
    report: dict[str, Any], cache: list[TierCache], reuse: Reuse, prices: PriceTable | None
) -> dict[str, Any]:
    """``report["cache"]`` (per tier and model) and ``report["reuse"]``; in place."""
    tiers = []
    total = 0
    for c in cache:
        saved = cache_saved_nanos(prices, c)
        total += saved or 0
        tiers.append(
            {
                "tier_index": c.tier_index,
                "tier": c.tier,
                "model": c.model,
                "batch": c.is_batch,
                "calls": c.calls,
                "cached_calls": c.cached_calls,
                "hits": c.hits,
                "writes": c.writes,
                # reads among the calls that marked a cacheable prefix
                "hit_rate": round(c.hits / c.cached_calls, 4) if c.cached_calls else None,
                "input_tokens": c.input_tokens,
                "cache_write_tokens": c.cache_write_tokens,
                "cache_read_tokens": c.cache_read_tokens,
                "saved_usd": None if saved is None else usd_text(saved),
            }
        )
    report["cache"] = {"saved_usd": usd_text(total), "tiers": tiers}
    report["reuse"] = {
        "items": reuse.items,
        "waiting": reuse.waiting,
        "saved_usd": usd_text(reuse.saved_nanos),
    }
    return report


def print_cache_sections(console: Console, r: dict[str, Any]) -> None:
    cache = r.get("cache")
    if cache and cache["tiers"]:
        t = Table(title="Prompt cache", title_justify="left")
        for col in ("tier", "model", "calls", "hit rate", "read tok", "written tok", "saved"):
            t.add_column(col, justify="left" if col in ("tier", "model") else "right")
        for c in cache["tiers"]:
            rate = "-" if c["hit_rate"] is None else f"{c['hit_rate'] * 100:.1f}%"
            t.add_row(
                c["tier"] + (" (batch)" if c["batch"] else ""),
                c["model"],
                str(c["calls"]),
                rate,
                str(c["cache_read_tokens"]),
                str(c["cache_write_tokens"]),
                "-" if c["saved_usd"] is None else money(c["saved_usd"]),
            )
        console.print(t)
    reuse = r.get("reuse")
    if reuse and (reuse["items"] or reuse["waiting"]):
        console.print(
            f"reused decisions: {reuse['items']} items took an identical text's decision "
            f"with no model call (saved {money(reuse['saved_usd'])})"
            + (f"; {reuse['waiting']} still waiting" if reuse["waiting"] else "")
        )


def cache_sections_html(r: dict[str, Any]) -> list[str]:
    """The HTML page's prompt-cache and reuse sections (empty when there is nothing)."""
    out: list[str] = []
    cache = r.get("cache")
    if cache and cache["tiers"]:
        out += [
            "<h2>Prompt cache</h2>",
            f"<p>caching saved <b>{usd_html(cache['saved_usd'])}</b> against sending every "
            "prompt uncached</p>",
            html_table(
                ["tier", "model", "calls", "hit rate", "tokens read", "tokens written", "saved"],
                [
                    [
                        esc(c["tier"] + (" (batch)" if c["batch"] else "")),
                        esc(c["model"]),
                        num_html(c["calls"]),
                        "-" if c["hit_rate"] is None else f"{c['hit_rate'] * 100:.1f}%",
                        num_html(c["cache_read_tokens"]),
                        num_html(c["cache_write_tokens"]),
                        usd_html(c["saved_usd"]),
                    ]
                    for c in cache["tiers"]
                ],
            ),
        ]
    reuse = r.get("reuse")
    if reuse and (reuse["items"] or reuse["waiting"]):
        out.append(
            f"<h2>Reused decisions</h2><p>{esc(reuse['items'])} items repeated a text already "
            f"classified and took its decision with no model call: saved "
            f"<b>{usd_html(reuse['saved_usd'])}</b>"
            + (f"; {esc(reuse['waiting'])} still waiting" if reuse["waiting"] else "")
            + "</p>"
        )
    return out

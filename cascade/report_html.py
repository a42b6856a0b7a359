"""The report as one self-contained HTML page: inline CSS, inline SVG charts drawn
here, no script and nothing fetched — it opens offline, and prints.

Written by hand rather than with matplotlib/plotly: four simple bar/line charts do
not justify a heavy dependency, and SVG text stays selectable and searchable.
Charts carry stable ids (``chart-funnel``, ``chart-cost``, ``chart-latency``,
``chart-daily``) so tests and people can find them.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from cascade.fmt import money
from cascade.render import TIER_COUNTS, count_cells, items_line
from cascade.render_cache import cache_sections_html
from cascade.report_svg import bar_chart
from cascade.report_svg import esc as _e
from cascade.report_svg import html_table as _table
from cascade.report_svg import num_html as _n
from cascade.report_svg import usd_html as _m
from common.lifecycle import Outcome, Status

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#111827}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.tile{flex:1 1 160px;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px}
.tile b{display:block;font-size:24px}.tile span{font-size:12px;color:#6b7280}
.note{background:#fef3c7;border:1px solid #f59e0b;border-radius:6px;padding:6px 10px}
.none{color:#6b7280;font-style:italic}table{width:100%}
.grid figure{flex:1 1 420px}.grid svg{width:100%;height:auto}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}h3{font-size:14px;margin:14px 0 4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #e5e7eb;text-align:right}
th:first-child,td:first-child{text-align:left}
.warn{color:#b45309}.grid{display:flex;flex-wrap:wrap;gap:16px;width:100%}
figure{margin:0;border:1px solid #e5e7eb;border-radius:6px;padding:8px}
figcaption{font-size:13px;font-weight:600;margin-bottom:4px}
svg text{font-size:11px;fill:#374151}
"""


def _usd(value: Any) -> float:
    return float(Decimal(str(value))) if value is not None else 0.0


def charts(r: dict[str, Any]) -> dict[str, str]:
    """The four charts, by id."""
    funnel = r.get("funnel", [])
    out = {
        "chart-funnel": bar_chart(
            "chart-funnel",
            [t["tier"] for t in funnel],
            [
                (k, [float(t[k]) for t in funnel])
                for k in ("entered", "accepted", "escalated", Status.FAILED)
            ],
        )
    }
    by_tier = r.get("cost", {}).get("by_tier", [])
    out["chart-cost"] = bar_chart(
        "chart-cost",
        [*(t["tier"] for t in by_tier), "total", "baseline"],
        [
            (
                "cost",
                [*(_usd(t["cost_usd"]) for t in by_tier), _usd(r["cost_usd"]), 0.0],
            ),
            ("baseline", [*(0.0 for _ in by_tier), 0.0, _usd(r["baseline_cost_usd"])]),
        ],
        unit="$",
    )
    lat = r.get("latency", {}).get("tiers", [])
    out["chart-latency"] = bar_chart(
        "chart-latency",
        [t["tier"] for t in lat],
        [(k, [float(t[k] or 0) for t in lat]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")],
        unit="",
    )
    spend: dict[str, float] = defaultdict(float)
    items: dict[str, int] = defaultdict(int)
    escalated: dict[str, int] = defaultdict(int)
    for d in r.get("daily", []):
        spend[d["day"]] += _usd(d["cost_usd"])
        items[d["day"]] += d["items"]
        escalated[d["day"]] += d["escalated"]
    hist: dict[str, int] = defaultdict(int)
    for b in r.get("confidence", {}).get("histogram", []):
        hist[b["bucket"]] += b["answers"]
    buckets = sorted(hist)
    out["chart-confidence"] = bar_chart(
        "chart-confidence", buckets, [("answers", [float(hist[b]) for b in buckets])]
    )
    days = sorted(spend)
    out["chart-daily"] = bar_chart(
        "chart-daily",
        [d[5:] for d in days],  # MM-DD
        [("cost", [spend[d] for d in days])],
        unit="$",
        line=(
            "escalation rate",
            [escalated[d] / items[d] if items[d] else 0.0 for d in days],
        ),
    )
    return out


def _partial(r: dict[str, Any]) -> str:
    if not r.get("partial"):
        return ""
    done = r["items_total"] - r["items_unfinished"]
    return f"<b>partial</b>: over the {done:,} finished items of {r['items_total']:,}: "


def _offline_note(r: dict[str, Any]) -> str:
    if not r.get("offline"):
        return ""
    return (
        '<p class="note">Offline: these numbers come from Cascade\'s built-in fake '
        "Messages API, not a real model (its answers, tokens and latencies are simulated; "
        "the costs are what those tokens would cost).</p>"
    )


def tiles(r: dict[str, Any]) -> str:
    """The headline: saved %, cost per 1,000 items, items, escalation rate."""
    finished = r["items_total"] - r["items_unfinished"]
    cost = Decimal(str(r.get("finished_cost_usd", r["cost_usd"])))
    per_k = money(cost / finished * 1000) if finished else "-"
    funnel = r.get("funnel", [])
    first = funnel[0] if funnel else None
    rate = f"{first['escalation_rate'] * 100:.1f}%" if first else "-"
    values = [
        (f"{r['savings_pct']:.1f}%", "saved against all on the last tier"),
        (per_k, "cost per 1,000 items"),
        (f"{r['items_total']:,}", "items"),
        (rate, "escalated past the first tier"),
    ]
    return (
        '<div class="tiles">'
        + "".join(f'<div class="tile"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in values)
        + "</div>"
    )


def render_html(r: dict[str, Any]) -> str:
    """The whole page for a report dict (``cascade.render_sections.add_sections`` output)."""
    if r.get("job_id") is not None:
        title = f"Job {r['job_id']} · {r['job_name']} · {r['pipeline']} · {r['status']}"
    else:
        title = f"Report · {r.get('scope_text', 'all jobs')}"
    sections = [
        f"<h1>{_e(title)}</h1>",
        _offline_note(r),
        tiles(r),
        f"<p>{_e(items_line(r))}</p>",
        _cost_line(r),
        *_figures(r),
        *_funnel_and_cost(r),
        *_latency(r.get("latency", {})),
        *_reliability(r.get("reliability", {})),
        "<h2>Confidence</h2>",
        _table(
            ["tier", "agreed with final", "pairs", "rate"],
            [
                [
                    _e(a["tier"]),
                    _n(a["agreed"]),
                    _n(a["pairs"]),
                    f"{a['rate'] * 100:.1f}%",
                ]
                for a in r.get("confidence", {}).get("agreement", [])
            ],
        ),
        *cache_sections_html(r),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def _cost_line(r: dict[str, Any]) -> str:
    c = r.get("cost", {})
    return (
        f"<p>{_partial(r)}cost <b>{_m(r.get('finished_cost_usd', r['cost_usd']))}</b> vs "
        f"{_m(r['baseline_cost_usd'])} all on the last tier (estimate): saved "
        f"{_m(r['savings_usd'])} (<b>{_e(r['savings_pct'])}%</b>); "
        f"realtime {_m(c.get('realtime_usd'))}, batch {_m(c.get('batch_usd'))}, cache saved "
        f"{_m(c.get('cache_savings_usd'))}; per item mean {_m(c.get('per_item_mean_usd'))}, "
        f"p95 {_m(c.get('per_item_p95_usd'))}</p>"
    )


def _figures(r: dict[str, Any]) -> list[str]:
    """The charts, in a grid; a single day is said in words (one bar is no chart)."""
    ch = charts(r)

    def fig(chart_id: str, caption: str) -> str:
        return f"<figure><figcaption>{_e(caption)}</figcaption>{ch[chart_id]}</figure>"

    days = sorted({d["day"] for d in r.get("daily", [])})
    daily = fig("chart-daily", "Spend and escalation rate per day")
    if len(days) < 2:
        said = f"<p>all on {_e(days[0])}</p>" if days else '<p class="none">none</p>'
        daily = f"<figure><figcaption>Spend per day</figcaption>{said}</figure>"
    return [
        '<div class="grid">',
        fig("chart-funnel", "Funnel: items per tier"),
        fig("chart-cost", "Cost by tier against the baseline (USD)"),
        fig("chart-latency", "Model-call latency per tier (ms)"),
        fig("chart-confidence", "Confidence of the answers (all tiers)"),
        daily,
        "</div>",
    ]


def _funnel_and_cost(r: dict[str, Any]) -> list[str]:
    funnel = [
        [
            _e(t["tier"]),
            *count_cells(t, (*TIER_COUNTS, "dead_lettered"), _n),
            f"{t['escalation_rate'] * 100:.1f}%",
            f'<span class="warn">{_e(t["warning"])}</span>' if t["warning"] else "",
        ]
        for t in r.get("funnel", [])
    ]
    labels = [
        [_e(x["label"]), _n(x["items"]), _m(x["cost_usd"]), _m(x["baseline_usd"]),
         _m(x["savings_usd"])]
        for x in r.get("cost", {}).get("by_label", [])
    ]  # fmt: skip
    return [
        "<h2>Funnel</h2>",
        _table(
            ["tier", "in", "accepted", "escalated", Status.FAILED, "dead", "escalation", "warning"],
            funnel,
        ),
        "<h2>Cost by label</h2>",
        _table(["label", "items", "cost", "baseline", "saved"], labels),
    ]


def _latency(lat: dict[str, Any]) -> list[str]:
    rows = [
        [_e(t["tier"]), _n(t["calls"]), _e(t["p50_ms"]), _e(t["p95_ms"]), _e(t["p99_ms"]),
         _e(t["max_ms"])]
        for t in lat.get("tiers", [])
    ]  # fmt: skip
    return [
        "<h2>Latency (ms)</h2>",
        _table(["tier", "calls", "p50", "p95", "p99", "max"], rows),
        f"<p>worst-case full escalation: {_n(lat.get('worst_path_p99_ms'))} ms (sum of tier "
        f"p99s), {_n(lat.get('worst_path_max_ms'))} ms (sum of tier maxima)</p>",
    ]


def _reliability(rel: dict[str, Any]) -> list[str]:
    openings = [
        [_e(o["breaker_key"]), _e(o["opened_at"]), _e(o["closed_at"]), _e(o["seconds"]),
         _e(o["reason"])]
        for o in rel.get("breaker_openings", [])
    ]  # fmt: skip
    return [
        "<h2>Reliability</h2>",
        _table(["outcome", "calls"], [[_e(k), _n(v)] for k, v in rel.get("outcomes", {}).items()]),
        _table(
            ["fallback link", "tier", "calls", Outcome.OK],
            [
                [_e(f["link"]), _e(f["tier"]), _n(f["calls"]), _n(f[Outcome.OK])]
                for f in rel.get("fallbacks", [])
            ],
            "Fallback links used",
        ),
        _table(
            ["breaker", "opened", "closed", "seconds", "reason"],
            openings,
            "Circuit breaker openings",
        ),
        _table(
            ["dead letter reason", "items"],
            [[_e(x["error"]), _n(x["items"])] for x in rel.get("dead_letters", [])],
            "Dead letters",
        ),
    ]

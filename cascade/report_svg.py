"""Bar charts as inline SVG, drawn by hand, and the small HTML helpers (escaped text,
money, numbers, tables) of the HTML report's pages (``cascade.report_html``,
``cascade.render_cache``).

No plotting library: a few bar/line charts do not justify a heavy dependency, and SVG
text stays selectable and searchable.
"""

from __future__ import annotations

from html import escape
from typing import Any

from cascade.fmt import money
from common.lifecycle import Status

W, H = 560, 260  # chart size
ML, MR, MT, MB = 64, 40, 30, 50  # margins: left, right, top, bottom
COLORS = {
    "entered": "#94a3b8",
    "accepted": "#16a34a",
    "escalated": "#f59e0b",
    Status.FAILED: "#dc2626",
    "cost": "#2563eb",
    "baseline": "#9ca3af",
    "p50_ms": "#60a5fa",
    "p95_ms": "#2563eb",
    "p99_ms": "#1e3a8a",
    "max_ms": "#111827",
    "rate": "#f59e0b",
    "answers": "#6366f1",
}
# What a legend says for a series (the report's keys are for programs)
LEGEND = {
    "entered": "in",
    "p50_ms": "p50",
    "p95_ms": "p95",
    "p99_ms": "p99",
    "max_ms": "max",
    "baseline": "all on the last tier",
    "answers": "answers",
}


def esc(value: Any) -> str:
    return escape("-" if value is None else str(value))


def _nice_max(value: float) -> float:
    """A round axis maximum >= value (1, 2, 2.5, 5 x 10^k)."""
    if value <= 0:
        return 1.0
    k = 1.0
    while k * 10 <= value:
        k *= 10
    while k > value:
        k /= 10
    for m in (1, 2, 2.5, 5, 10):
        if k * m >= value:
            return k * m
    return k * 10


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.4f}".rstrip("0").rstrip(".")


def bar_chart(
    chart_id: str,
    groups: list[str],
    series: list[tuple[str, list[float]]],
    unit: str = "",
    line: tuple[str, list[float]] | None = None,
) -> str:
    """Grouped vertical bars (one group per x label), an optional 0-100 % line on the
    right axis. Returns an ``<svg>`` element."""
    top = _nice_max(max((v for _, vals in series for v in vals), default=0.0))
    parts = [
        f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img">',
        *_grid(top, unit),
        *_bars(groups, series, top, unit),
    ]
    if line is not None and groups:
        parts += _rate_line(groups, line)
        series = [*series, (line[0], [])]
    for s, (sname, _) in enumerate(series):  # legend
        x = ML + s * 110
        color = COLORS.get(sname if sname in COLORS else "rate", "#6b7280")
        parts.append(f'<rect x="{x}" y="{H - 18}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14}" y="{H - 9}">{esc(LEGEND.get(sname, sname))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _grid(top: float, unit: str) -> list[str]:
    """Horizontal grid lines with their labels on the left axis."""
    pw, ph = W - ML - MR, H - MT - MB
    parts = []
    for n in range(5):
        y = MT + ph - ph * n / 4
        parts.append(f'<line x1="{ML}" y1="{y:.1f}" x2="{ML + pw}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(
            f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{unit}{_fmt(top * n / 4)}</text>'
        )
    return parts


def _bars(
    groups: list[str], series: list[tuple[str, list[float]]], top: float, unit: str
) -> list[str]:
    """One bar per series in each group, with a tooltip, and the group's x label."""
    pw, ph = W - ML - MR, H - MT - MB
    slot = pw / max(1, len(groups))
    bw = slot * 0.8 / max(1, len(series))
    parts = []
    for g, name in enumerate(groups):
        x0 = ML + g * slot + slot * 0.1
        for s, (sname, vals) in enumerate(series):
            v = vals[g] if g < len(vals) else 0.0
            shown = LEGEND.get(sname, sname)
            h = ph * v / top
            parts.append(
                f'<rect class="bar" x="{x0 + s * bw:.1f}" y="{MT + ph - h:.1f}" '
                f'width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
                f'fill="{COLORS.get(sname, "#6b7280")}"><title>{esc(name)} {esc(shown)}: '
                f"{money(v) if unit == '$' else unit + _fmt(v)}</title></rect>"
            )
        label = name if len(groups) <= 12 or g % max(1, len(groups) // 12) == 0 else ""
        parts.append(
            f'<text x="{x0 + slot * 0.4:.1f}" y="{MT + ph + 14}" text-anchor="middle">'
            f"{esc(label)}</text>"
        )
    return parts


def _rate_line(groups: list[str], line: tuple[str, list[float]]) -> list[str]:
    """A 0-100 % line over the groups, its points with tooltips, and the right axis."""
    pw, ph = W - ML - MR, H - MT - MB
    slot = pw / max(1, len(groups))
    lname, lvals = line
    pts = " ".join(
        f"{ML + g * slot + slot / 2:.1f},{MT + ph - ph * min(v, 1.0):.1f}"
        for g, v in enumerate(lvals)
    )
    parts = [
        f'<polyline class="line" points="{pts}" fill="none" stroke="{COLORS["rate"]}" '
        'stroke-width="2"/>'
    ]
    for g, v in enumerate(lvals):
        parts.append(
            f'<circle class="point" cx="{ML + g * slot + slot / 2:.1f}" '
            f'cy="{MT + ph - ph * min(v, 1.0):.1f}" r="3" fill="{COLORS["rate"]}">'
            f"<title>{esc(groups[g])} {esc(lname)}: {v * 100:.1f}%</title></circle>"
        )
    for n in (0, 2, 4):
        y = MT + ph - ph * n / 4
        parts.append(f'<text x="{ML + pw + 4}" y="{y + 4:.1f}">{n * 25}%</text>')
    return parts


def html_table(headers: list[str], rows: list[list[Any]], title: str = "") -> str:
    """A table of already-escaped cells under an optional heading; "none" when empty."""
    heading = f"<h3>{esc(title)}</h3>" if title else ""
    if not rows:
        return f'{heading}<p class="none">none</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"{heading}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def usd_html(value: Any) -> str:
    return "-" if value is None else esc(money(str(value)))


def num_html(value: Any) -> str:
    return esc(f"{value:,}") if isinstance(value, int) else esc("-" if value is None else value)

"""Inline SVG charts (no CDN, no JavaScript): every label goes through ``html.escape``; the result is
``Markup`` so the autoescaping templates embed it as it is."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from markupsafe import Markup

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def line_chart(labels: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str,
               width: int = 720, height: int = 260, fmt: str = "{:.4f}", integer: bool = False) -> Markup:
    """One line per series over the categorical x axis ``labels`` (a point per label; None = gap);
    ``integer``: the y axis counts whole things.
    ``aria-label`` and a ``<title>`` per point carry the numbers for tests and screen readers."""
    esc = html.escape
    left, right, top, bottom = 60, 150, 20, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    top_v = max(values) if values else 1.0
    top_v = top_v * 1.1 if top_v > 0 else 1.0
    if integer:  # counts: whole ticks (0, 1, 2, … at least 4 on the axis)
        top_v = float(max(4, math.ceil(top_v / 4) * 4))
    n = len(labels)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / top_v

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(title)}"><title>{esc(title)}</title>',
           f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>']
    for k in range(5):
        v = top_v * k / 4
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{esc(fmt.format(v))}</text>'
                   f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" stroke="#eee"/>')
    step = max(1, n // 8)
    for i, label in enumerate(labels):
        if i % step == 0 or i == n - 1:
            out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="end" '
                       f'transform="rotate(-25 {x(i):.1f} {top + plot_h + 14})">{esc(str(label)[:24])}</text>')
    for s, (name, vs) in enumerate(series.items()):
        color = COLORS[s % len(COLORS)]
        pts = [(x(i), y(v), v, labels[i]) for i, v in enumerate(vs) if v is not None]
        if len(pts) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in pts)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for px, py, v, label in pts:
            out.append(f'<circle class="point" cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}" '
                       f'data-series="{esc(name)}" data-value="{v}"><title>{esc(name)} {esc(str(label))}: '
                       f'{esc(fmt.format(v))}</title></circle>')
        ly = top + 14 + 18 * s
        out.append(f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{left + plot_w + 26}" y="{ly}" font-size="12">{esc(name)}</text>')
    if not n:
        out.append(f'<text x="{left + 10}" y="{top + plot_h / 2}" font-size="12">no data yet</text>')
    out.append("</svg>")
    return Markup("".join(out))


def bar_chart(items: dict[str, int], *, title: str, width: int = 520) -> Markup:
    """Horizontal bars, one per item (e.g. lyrics statuses)."""
    esc = html.escape
    row, label_w, bar_w = 22, 120, width - 200
    top = max(items.values(), default=0) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{row * len(items) + 10}" '
           f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>']
    for n, (name, v) in enumerate(items.items()):
        w = round(bar_w * v / top)
        yy = n * row + 4
        out.append(f'<text x="0" y="{yy + 13}" font-size="12">{esc(name)}</text>'
                   f'<rect x="{label_w}" y="{yy}" width="{max(w, 1)}" height="{row - 6}" '
                   f'fill="{COLORS[n % len(COLORS)]}"><title>{esc(name)}: {v}</title></rect>'
                   f'<text x="{label_w + max(w, 1) + 4}" y="{yy + 13}" font-size="12">{v:,}</text>')
    out.append("</svg>")
    return Markup("".join(out))

"""Inline SVG charts for the HTML report: stacked bars and lines, with axes, ticks, legends and tooltips."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape

from exporter.report.model import Bucket, ChartSeries

# Colour-blind-safe palette (Okabe-Ito), then greys for the rest.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
OTHER = "#999999"
WIDTH, HEIGHT = 760, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 16, 46
LEGEND_COLUMNS = 3
# Time-axis steps to choose from, seconds: the smallest giving at most MAX_TIME_TICKS labels is used.
TIME_STEPS = (
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
    91 * 86400,
)
MAX_TIME_TICKS = 7


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``: steps of 1, 2 or 5 times a power of ten."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    top = math.ceil(high / step - 1e-9) * step
    return [i * step for i in range(round(top / step) + 1)]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _frame(title: str, body: list[str], legend: list[tuple[str, str]], unit: str) -> str:
    rows = max(1, math.ceil(len(legend) / LEGEND_COLUMNS))
    height = HEIGHT + rows * 18
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="{TOP - 4}" class="unit">{escape(unit)}</text>',
        *body,
    ]
    for index, (name, colour) in enumerate(legend):
        x = LEFT + (index % LEGEND_COLUMNS) * 225
        y = HEIGHT + 4 + (index // LEGEND_COLUMNS) * 18
        shown = name if len(name) <= 34 else name[:33] + "…"
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{y}" class="legend">{escape(shown)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _y_axis(ticks: Sequence[float], scale: float) -> list[str]:
    out = []
    for tick in ticks:
        y = HEIGHT - BOTTOM - tick * scale
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_label(tick)}</text>'
        )
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="axis"/>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" class="axis"/>'
    )
    return out


def _day(t: float) -> str:
    return time.strftime("%m-%d", time.gmtime(t))


def stacked_bars(title: str, buckets: Sequence[Bucket], top: int = 7) -> str:
    """Energy per bucket stacked by group; the largest ``top`` groups get colours, the rest are "other"."""
    totals: dict[str, float] = {}
    for b in buckets:
        for group, value in b.energy_kwh.items():
            totals[group] = totals.get(group, 0.0) + max(value, 0.0)
    ranked = sorted(totals, key=lambda g: (-totals[g], g))
    shown = ranked[:top]
    colours = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(shown)}
    high = max((sum(max(v, 0.0) for v in b.energy_kwh.values()) for b in buckets), default=0.0)
    ticks = nice_ticks(high)
    plot_h = HEIGHT - TOP - BOTTOM
    scale = plot_h / ticks[-1]
    body = _y_axis(ticks, scale)
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(buckets))
    bar_w = max(2.0, slot * 0.7)
    label_every = max(1, math.ceil(len(buckets) / 12))
    for index, b in enumerate(buckets):
        x = LEFT + index * slot + (slot - bar_w) / 2
        y: float = HEIGHT - BOTTOM
        stack = [(g, max(b.energy_kwh.get(g, 0.0), 0.0), colours[g]) for g in shown]
        rest = sum(max(v, 0.0) for g, v in b.energy_kwh.items() if g not in colours)
        if rest > 0:
            stack.append(("other", rest, OTHER))
        for name, value, colour in stack:
            if value <= 0:
                continue
            h = value * scale
            y -= h
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}">'
                f"<title>{escape(name or '(none)')} {_day(b.start)}: {value:.3f} kWh</title></rect>"
            )
        if index % label_every == 0:
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" class="tick" '
                f'text-anchor="middle">{_day(b.start)}</text>'
            )
    legend = [(g or "(none)", colours[g]) for g in shown]
    if len(ranked) > top:
        legend.append(("other", OTHER))
    return _frame(title, body, legend, "kWh")


def time_ticks(start: float, end: float) -> list[tuple[float, str]]:
    """Round UTC times within [start, end] (whole hours or days) with their labels."""
    span = max(end - start, 1.0)
    step = next((s for s in TIME_STEPS if span / s <= MAX_TIME_TICKS), TIME_STEPS[-1])
    fmt = "%m-%d" if step >= 86400 else "%m-%d %H:%M"
    first = math.ceil(start / step) * step
    return [(float(t), time.strftime(fmt, time.gmtime(t))) for t in range(int(first), int(end) + 1, step)]


def lines(
    title: str,
    series: Sequence[ChartSeries],
    unit: str,
    start: float,
    end: float,
    scale_by: float = 1.0,
    reference: float | None = None,
) -> str:
    """A line per series over [start, end]; ``reference`` draws a dashed horizontal line (a budget's 100%)."""
    values = [v * scale_by for s in series for _, v in s.points]
    high = max([*values, (reference or 0.0)], default=0.0)
    ticks = nice_ticks(high)
    plot_h = HEIGHT - TOP - BOTTOM
    y_scale = plot_h / ticks[-1]
    span = max(end - start, 1.0)
    x_scale = (WIDTH - LEFT - RIGHT) / span
    body = _y_axis(ticks, y_scale)
    for t, label in time_ticks(start, end):
        x = LEFT + (t - start) * x_scale
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="grid"/>')
        body.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" class="tick" text-anchor="middle">{label}</text>'
        )
    if reference is not None:
        y = HEIGHT - BOTTOM - reference * y_scale
        body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="reference"/>')
    legend = []
    for index, s in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        legend.append((s.name, colour))
        if not s.points:
            continue
        coords = " ".join(
            f"{LEFT + (t - start) * x_scale:.1f},{HEIGHT - BOTTOM - v * scale_by * y_scale:.1f}"
            for t, v in s.points
        )
        mean = sum(v for _, v in s.points) / len(s.points) * scale_by
        body.append(
            f'<polyline class="line" points="{coords}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(s.name)}: mean {mean:.1f} {escape(unit)}</title></polyline>"
        )
    return _frame(title, body, legend, unit)

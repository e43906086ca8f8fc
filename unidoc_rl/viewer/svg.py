"""Small inline-SVG charts: line charts over steps and horizontal bars with intervals. No JavaScript, no CDN.

Noisy training curves are drawn the way TensorBoard does: the raw series faint, an exponential moving average on
top; every point carries a tooltip with its exact value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#64748b")
SMOOTHING = 0.6
SMOOTH_FROM = 12
"""Series with at least this many points get a smoothed line."""
TOOLTIP_LIMIT = 400


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw_step = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing)."""
    result, last, norm = [], 0.0, 0.0
    for value in values:
        last = last * weight + (1 - weight) * value
        norm = norm * weight + (1 - weight)
        result.append(last / norm)
    return result


def line_chart(title: str, series: Sequence[Series], width: int = 460, height: int = 230, x_label: str = "step") -> str:
    series = [s for s in series if s.points]
    left, right, top, bottom = 56, 12, 28, 40
    with_legend = len(series) > 1 or (len(series) == 1 and series[0].name != title)
    legend_rows = math.ceil(len(series) / 2) if with_legend else 0
    height += legend_rows * 16
    plot_w, plot_h = width - left - right, height - top - bottom - legend_rows * 16
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text class="chart-title" x="{left}" y="16">{escape(title)}</text>',
    ]
    if not series:
        parts.append(f'<text class="chart-empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>')
        return "".join(parts) + "</svg>"
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if math.isfinite(y)]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    for tick in y_ticks:
        y = py(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(tick)}</text>')
    for tick in x_ticks:
        x = px(tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{fmt(tick)}</text>')
    parts.append(
        f'<text class="axis-label" x="{left + plot_w / 2}" y="{top + plot_h + 32}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = sorted((x, y) for x, y in one.points if math.isfinite(y))
        smoothed = len(points) >= SMOOTH_FROM
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        opacity = 0.3 if smoothed else 1.0
        parts.append(
            f'<polyline class="series" data-series="{escape(one.name)}" fill="none" stroke="{colour}" '
            f'stroke-opacity="{opacity}" stroke-width="1.5" points="{path}"/>'
        )
        if smoothed:
            values = smooth([y for _, y in points])
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for (x, _), y in zip(points, values, strict=True))
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2.2" points="{path}"/>')
        if len(points) <= TOOLTIP_LIMIT:
            radius = 2.5 if not smoothed else 1.6
            for x, y in points:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius}" fill="{colour}">'
                    f"<title>{escape(one.name)} @ {fmt(x)}: {fmt(y)}</title></circle>"
                )
    if with_legend:
        for index, one in enumerate(series):
            row, column = divmod(index, 2)
            x = left + column * (plot_w / 2)
            y = top + plot_h + 50 + row * 16
            colour = PALETTE[index % len(PALETTE)]
            parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="12" height="4" fill="{colour}"/>')
            parts.append(f'<text class="legend" x="{x + 16:.1f}" y="{y - 4}">{escape(one.name)}</text>')
    return "".join(parts) + "</svg>"


def interval_bar(value: float, low: float | None, high: float | None, width: int = 160, height: int = 14) -> str:
    """A bar for a fraction in [0, 1] with its interval as a whisker."""
    clamp = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    parts = [
        f'<svg class="bar" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<rect class="bar-bg" x="0" y="2" width="{width}" height="{height - 4}"/>',
        f'<rect class="bar-fg" x="0" y="2" width="{clamp(value) * width:.1f}" height="{height - 4}"/>',
    ]
    if low is not None and high is not None:
        a, b = clamp(low) * width, clamp(high) * width
        mid = height / 2
        parts.append(f'<line class="whisker" x1="{a:.1f}" x2="{b:.1f}" y1="{mid}" y2="{mid}"/>')
        parts.append(f'<line class="whisker" x1="{a:.1f}" x2="{a:.1f}" y1="2" y2="{height - 2}"/>')
        parts.append(f'<line class="whisker" x1="{b:.1f}" x2="{b:.1f}" y1="2" y2="{height - 2}"/>')
    return "".join(parts) + "</svg>"

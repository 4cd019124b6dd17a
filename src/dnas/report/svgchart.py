"""Small line charts as inline SVG, in pure Python (no matplotlib, no JavaScript).

The run report draws dozens of panels and, under ``dnas report --watch``, redraws them at every
epoch, so the charts are plain strings: a frame, "nice" ticks (steps of 1, 2 or 5 times a power
of ten), one polyline per series (``None`` values break the line), optional horizontal reference
lines and a legend below the plot. Each chart is an ``<svg class="chart">`` element whose size
scales with the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

FONT = "Helvetica, Arial, sans-serif"
MARKERS_UP_TO = 15  # points per series drawn with a dot as well (short runs stay readable)


@dataclass(frozen=True)
class Line:
    """One series: ``points`` are ``(x, y)``; a ``None`` y leaves a gap."""

    label: str
    points: Sequence[tuple[float, float | None]]
    color: str
    width: float = 1.6
    dashed: bool = False
    opacity: float = 1.0


@dataclass(frozen=True)
class Rule:
    """A horizontal reference line at ``y``, labelled at its right end."""

    y: float
    label: str
    color: str = "#777777"


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """About ``count`` round values covering ``[lo, hi]``: multiples of ``s = {1, 2, 5} x 10^k``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + 1e-9 * step:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def _tick_text(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(value) or 1.0
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def _range(values: Sequence[float], fixed: tuple[float | None, float | None] | None) -> tuple[float, float]:
    lo = fixed[0] if fixed and fixed[0] is not None else min(values, default=0.0)
    hi = fixed[1] if fixed and fixed[1] is not None else max(values, default=1.0)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _text(x: float, y: float, text: str, size: float = 10, anchor: str = "middle", color: str = "#333333",
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="{FONT}" font-size="{size:g}" fill="{color}" '
            f'text-anchor="{anchor}"{extra}>{html.escape(text)}</text>')


def line_chart(lines: Sequence[Line], *, title: str, xlabel: str = "epoch", ylabel: str = "",
               width: int = 320, height: int = 200, ylim: tuple[float | None, float | None] | None = None,
               rules: Sequence[Rule] = (), legend: bool = True, empty: str = "no data yet") -> str:
    """An ``<svg class="chart">`` with one polyline per :class:`Line` (see the module docstring);
    ``ylim`` fixes either end of the y axis; ``empty`` is shown when no series has a value."""
    left, right, top = 46.0, 12.0, 22.0
    labelled = [line for line in lines if line.label] if legend else []
    per_row = max(1, int((width - left) // 110))
    legend_rows = math.ceil(len(labelled) / per_row) if labelled else 0
    bottom = 34.0 + 14.0 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for line in lines for x, y in line.points if y is not None]
    ys = [y for line in lines for _, y in line.points if y is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f"<title>{html.escape(title)}</title>",
             _text(left + plot_w / 2, 14, title, 11.5, extra=' font-weight="bold"'),
             f'<rect x="{left}" y="{top}" width="{plot_w:.1f}" height="{plot_h:.1f}" fill="#fafafa" '
             'stroke="#bbbbbb" stroke-width="0.8"/>']
    if not ys:
        parts.append(_text(left + plot_w / 2, top + plot_h / 2, empty, 10.5, color="#888888"))
        parts.append("</svg>")
        return "".join(parts)
    x_lo, x_hi = _range(xs, None)
    y_lo, y_hi = _range(ys + [r.y for r in rules], ylim)

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    x_ticks = [t for t in nice_ticks(x_lo, x_hi, max(2, int(plot_w // 60))) if x_lo <= t <= x_hi]
    if all(float(x).is_integer() for x in xs):  # epochs: integer ticks only
        x_ticks = [t for t in x_ticks if float(t).is_integer()]
    y_ticks = [t for t in nice_ticks(y_lo, y_hi, max(2, int(plot_h // 35))) if y_lo <= t <= y_hi]
    for t in x_ticks:
        parts.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + plot_h:.1f}" stroke="#e4e4e4"/>')
        parts.append(_text(px(t), top + plot_h + 12, _tick_text(t, x_ticks), 9))
    for t in y_ticks:
        parts.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + plot_w:.1f}" y2="{py(t):.1f}" stroke="#e4e4e4"/>')
        parts.append(_text(left - 4, py(t) + 3, _tick_text(t, y_ticks), 9, anchor="end"))
    parts.append(_text(left + plot_w / 2, top + plot_h + 24, xlabel, 9.5, color="#555555"))
    if ylabel:
        parts.append(_text(11, top + plot_h / 2, ylabel, 9.5, color="#555555",
                           extra=f' transform="rotate(-90 11 {top + plot_h / 2:.1f})"'))
    for rule in rules:
        parts.append(f'<line x1="{left}" y1="{py(rule.y):.1f}" x2="{left + plot_w:.1f}" y2="{py(rule.y):.1f}" '
                     f'stroke="{rule.color}" stroke-dasharray="4,3" stroke-width="1"/>')
        parts.append(_text(left + plot_w - 3, py(rule.y) + 10, rule.label, 8.5, anchor="end", color=rule.color))
    for line in lines:
        style = (f'fill="none" stroke="{line.color}" stroke-width="{line.width:g}" stroke-opacity="{line.opacity:g}"'
                 + (' stroke-dasharray="5,3"' if line.dashed else "") + ' stroke-linejoin="round"')
        run: list[str] = []
        segments = []
        for x, y in [*line.points, (math.nan, None)]:
            if y is None:
                if run:
                    segments.append(run)
                run = []
            else:
                run.append(f"{px(x):.1f},{py(y):.1f}")
        for segment in segments:
            parts.append(f'<polyline points="{" ".join(segment)}" {style}/>')
        shown = [(x, y) for x, y in line.points if y is not None]
        if len(shown) <= MARKERS_UP_TO:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{1.2 + line.width / 2:.1f}" '
                      f'fill="{line.color}" fill-opacity="{line.opacity:g}"/>' for x, y in shown]
    for i, line in enumerate(labelled):
        row, col = divmod(i, per_row)
        x, y = left + col * 110, height - 14.0 * (legend_rows - row) + 2
        dash = ' stroke-dasharray="5,3"' if line.dashed else ""
        parts.append(f'<line x1="{x:.1f}" y1="{y - 3:.1f}" x2="{x + 14:.1f}" y2="{y - 3:.1f}" stroke="{line.color}" '
                     f'stroke-width="2"{dash}/>')
        parts.append(_text(x + 18, y, line.label[:18], 9, anchor="start"))
    parts.append("</svg>")
    return "".join(parts)

"""Pure inline SVG line plots for the dashboard: no script, no library, the same picture offline.

A plot is a function of its series (look index -> value); missing values break the line. The y axis is
linear or logarithmic (e-values span orders of magnitude), with its range taken from everything drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 460, 170
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 22, 22


@dataclass(frozen=True)
class Series:
    """One line; `values[i]` belongs to look i (None: not measured at that look)."""

    label: str
    values: Sequence[float | None]
    css: str  # class name: the colour lives in the stylesheet


@dataclass(frozen=True)
class Band:
    """A shaded interval per look (an anytime-valid confidence sequence)."""

    label: str
    low: Sequence[float | None]
    high: Sequence[float | None]
    css: str


@dataclass(frozen=True)
class Plot:
    title: str
    series: Sequence[Series]
    bands: Sequence[Band] = ()
    lines: Sequence[tuple[str, float]] = ()  # horizontal reference lines: (label, y)
    log_y: bool = False
    x_labels: tuple[str, str] = ("", "")
    notes: Sequence[str] = field(default_factory=tuple)


def _finite(v: float | None, log_y: bool) -> bool:
    return v is not None and math.isfinite(v) and (v > 0 or not log_y)


def y_range(plot: Plot) -> tuple[float, float] | None:
    """Lowest and highest y of everything drawn (padded when flat); None when nothing can be drawn."""
    ys = [v for s in plot.series for v in s.values if v is not None and _finite(v, plot.log_y)]
    ys += [v for b in plot.bands for side in (b.low, b.high) for v in side if v is not None and _finite(v, plot.log_y)]
    ys += [y for _, y in plot.lines if _finite(y, plot.log_y)]
    if not ys:
        return None
    if plot.log_y:
        ys = [math.log10(y) for y in ys]
    low, high = min(ys), max(ys)
    if high - low < 1e-12:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    return low, high


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _el(tag: str, inner: str, attrs: dict[str, object]) -> str:
    shown = " ".join(f'{k}="{escape(str(v))}"' for k, v in attrs.items())
    return f"<{tag} {shown}>{inner}</{tag}>" if inner else f"<{tag} {shown}/>"


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _text(text: str, x: float, y: float, anchor: str, css: str = "axis") -> str:
    return f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'


def render(plot: Plot) -> str:
    """The plot as an <svg> element (a figure with its title; 'no data yet' when nothing can be drawn)."""
    count = max([len(s.values) for s in plot.series] + [len(b.low) for b in plot.bands] + [0])
    bounds = y_range(plot)
    title = f"<figcaption>{escape(plot.title)}</figcaption>"
    if bounds is None or count == 0:
        return f'<figure class="plot">{title}<p class="muted">no data yet</p></figure>'
    low, high = bounds
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (inner_w * i / (count - 1) if count > 1 else inner_w / 2)

    def y(v: float) -> float:
        t = math.log10(v) if plot.log_y else v
        return TOP + inner_h * (1 - (t - low) / (high - low))

    parts = [_el("rect", "", {"class": "frame", "x": LEFT, "y": TOP, "width": inner_w, "height": inner_h})]
    for band in plot.bands:
        pts = [
            (i, lo, hi)
            for i, (lo, hi) in enumerate(zip(band.low, band.high, strict=False))
            if lo is not None and hi is not None and _finite(lo, plot.log_y) and _finite(hi, plot.log_y)
        ]
        if pts:
            upper = [f"{x(i):.1f},{y(hi):.1f}" for i, _, hi in pts]
            lower = [f"{x(i):.1f},{y(lo):.1f}" for i, lo, _ in reversed(pts)]
            parts.append(
                _el("polygon", _title(band.label), {"class": f"band {band.css}", "points": " ".join(upper + lower)})
            )
    for label, value in plot.lines:
        if _finite(value, plot.log_y):
            at = f"{y(value):.1f}"
            parts.append(_el("line", "", {"class": "limit", "x1": LEFT, "x2": WIDTH - RIGHT, "y1": at, "y2": at}))
            parts.append(_text(f"{label} {_fmt(value)}", WIDTH - RIGHT - 2, y(value) - 3, "end", "limit-label"))
    for s in plot.series:
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None or not _finite(v, plot.log_y):
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(_el("circle", "", {"class": f"dot {s.css}", "cx": cx, "cy": cy, "r": 2.5}))
            elif run:
                parts.append(_el("polyline", _title(s.label), {"class": f"line {s.css}", "points": " ".join(run)}))
    top_label = 10**high if plot.log_y else high
    bottom_label = 10**low if plot.log_y else low
    parts.append(_text(_fmt(top_label), LEFT - 4, TOP + 4, "end"))
    parts.append(_text(_fmt(bottom_label), LEFT - 4, TOP + inner_h, "end"))
    parts.append(_text(plot.x_labels[0], LEFT, HEIGHT - 6, "start"))
    parts.append(_text(plot.x_labels[1], WIDTH - RIGHT, HEIGHT - 6, "end"))
    legend = "".join(f'<span class="key {escape(s.css)}">{escape(s.label)}</span>' for s in plot.series)
    legend += "".join(f'<span class="key band {escape(b.css)}">{escape(b.label)}</span>' for b in plot.bands)
    svg = (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
           f'aria-label="{escape(plot.title)}">{"".join(parts)}</svg>')  # fmt: skip
    notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in plot.notes)
    return f'<figure class="plot">{title}{svg}<div class="legend">{legend}</div>{notes}</figure>'

"""Charts as SVG, drawn on the server: the dashboard needs no script and fetches nothing.

Each chart is one `<svg role="img">` labelled by its `<title>` and a `<desc>` that says what
it shows in words; every data mark (bar, point, line, band) has class `mark` and a `<title>`
with its value, which browsers show on hover and screen readers can reach. A chart without
data says so instead of drawing empty axes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from html import escape

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 14, 44
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

FLOW_COLOURS = {
    "feature": "#2f6fd0",
    "defect": "#d0433b",
    "risk": "#e39a1c",
    "debt": "#7d55b8",
    "unclassified": "#8a8f98",
}
STAGE_COLOURS = {
    "new": "#b9c6d8",
    "active": "#2f6fd0",
    "waiting": "#e39a1c",
    "done": "#3a9a5b",
    "canceled": "#8a8f98",
}

Format = Callable[[float], str]


def number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def days(value: float) -> str:
    return f"{value:,.1f} d"


def percent(value: float) -> str:
    return f"{value * 100:.0f}%"


@dataclass(frozen=True, slots=True)
class Series:
    """A named line over dates; None values break the line."""

    name: str
    colour: str
    points: Sequence[tuple[date, float | None]]
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Layer:
    """One band of a stacked chart: a value per x position."""

    name: str
    colour: str
    values: Sequence[float]


@dataclass(frozen=True, slots=True)
class Point:
    """A point of the scatter: its category (x), value (y) and what its tooltip says."""

    category: str
    value: float
    label: str
    colour: str
    key: str = ""


@dataclass(slots=True)
class _Chart:
    chart_id: str
    title: str
    desc: str
    parts: list[str] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)

    def render(self) -> str:
        t, d = f"{self.chart_id}-title", f"{self.chart_id}-desc"
        legend = ""
        if self.legend:
            x = LEFT
            items = []
            for name, colour in self.legend:
                items.append(
                    f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{colour}"/>'
                    f'<text x="{x + 14}" y="{HEIGHT - 5}" class="legend">{escape(name)}</text>'
                )
                x += 22 + 7 * len(name)
            legend = f'<g aria-hidden="true">{"".join(items)}</g>'
        return (
            f'<svg class="chart" id="{self.chart_id}" role="img" aria-labelledby="{t} {d}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
            f'xmlns="http://www.w3.org/2000/svg">'
            f'<title id="{t}">{escape(self.title)}</title><desc id="{d}">{escape(self.desc)}'
            f"</desc>{''.join(self.parts)}{legend}</svg>"
        )


def _empty(chart_id: str, title: str, message: str) -> str:
    chart = _Chart(chart_id, title, message)
    chart.parts.append(
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">'
        f"{escape(message)}</text>"
    )
    return chart.render()


def nice_ceiling(value: float) -> tuple[float, float]:
    """An axis top at or above `value` and its tick step (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return step * math.ceil(value / step - 1e-9), step


def _y_axis(chart: _Chart, top: float, step: float, fmt: Format) -> Callable[[float], float]:
    def y(value: float) -> float:
        return TOP + PLOT_H - (value / top) * PLOT_H

    tick = 0.0
    while tick <= top + 1e-9:
        py = y(tick)
        chart.parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(fmt(tick))}</text>"
        )
        tick += step
    return y


def _x_labels(chart: _Chart, positions: Sequence[tuple[float, str]], most: int = 7) -> None:
    if not positions:
        return
    every = max(1, math.ceil(len(positions) / most))
    for px, label in positions[::every]:
        chart.parts.append(
            f'<text x="{px:.1f}" y="{TOP + PLOT_H + 16}" text-anchor="middle" class="tick">'
            f"{escape(label)}</text>"
        )
    chart.parts.append(
        f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H}" '
        'class="axis"/>'
    )


def _time_x(first: date, last: date) -> Callable[[date], float]:
    span = max((last - first).days, 1)

    def x(day: date) -> float:
        return LEFT + 8 + (day - first).days / span * (PLOT_W - 16)

    return x


def line_chart(
    chart_id: str, title: str, desc: str, series: Sequence[Series], fmt: Format = number
) -> str:
    """Lines over time, y from zero."""
    values = [v for s in series for _, v in s.points if v is not None]
    if not values:
        return _empty(chart_id, title, "No data for this period yet.")
    dates = sorted({d for s in series for d, _ in s.points})
    chart = _Chart(chart_id, title, desc)
    top, step = nice_ceiling(max(values))
    y = _y_axis(chart, top, step, fmt)
    x = _time_x(dates[0], dates[-1])
    _x_labels(chart, [(x(d), d.isoformat()) for d in dates])
    for s in series:
        segment: list[str] = []
        segments: list[list[str]] = []
        for day, value in s.points:
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{x(day):.1f},{y(value):.1f}")
            chart.parts.append(
                f'<circle class="mark" cx="{x(day):.1f}" cy="{y(value):.1f}" r="3" '
                f'fill="{s.colour}"><title>{escape(s.name)}, {day.isoformat()}: '
                f"{escape(fmt(value))}</title></circle>"
            )
        if segment:
            segments.append(segment)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for points in segments:
            if len(points) > 1:
                chart.parts.append(
                    f'<polyline class="mark line" fill="none" stroke="{s.colour}" '
                    f'stroke-width="2"{dash} points="{" ".join(points)}"><title>'
                    f"{escape(s.name)}</title></polyline>"
                )
        chart.legend.append((s.name, s.colour))
    return chart.render()


def bar_chart(
    chart_id: str,
    title: str,
    desc: str,
    bars: Sequence[tuple[date, float]],
    colour: str,
    fmt: Format = number,
) -> str:
    """One bar per period."""
    if not bars:
        return _empty(chart_id, title, "No data for this period yet.")
    chart = _Chart(chart_id, title, desc)
    top, step = nice_ceiling(max(v for _, v in bars))
    y = _y_axis(chart, top, step, fmt)
    slot = PLOT_W / len(bars)
    width = max(slot * 0.7, 1.0)
    labels = []
    for i, (day, value) in enumerate(bars):
        cx = LEFT + slot * (i + 0.5)
        labels.append((cx, day.isoformat()))
        chart.parts.append(
            f'<rect class="mark" x="{cx - width / 2:.1f}" y="{y(value):.1f}" '
            f'width="{width:.1f}" height="{TOP + PLOT_H - y(value):.1f}" fill="{colour}">'
            f"<title>{day.isoformat()}: {escape(fmt(value))}</title></rect>"
        )
    _x_labels(chart, labels)
    return chart.render()


def stacked_bars(
    chart_id: str,
    title: str,
    desc: str,
    periods: Sequence[date],
    layers: Sequence[Layer],
    fmt: Format = percent,
) -> str:
    """Bars of stacked parts per period (shares: the axis goes to the largest total)."""
    totals = [sum(layer.values[i] for layer in layers) for i in range(len(periods))]
    if not periods or not any(totals):
        return _empty(chart_id, title, "Nothing finished in these periods yet.")
    chart = _Chart(chart_id, title, desc)
    top, step = nice_ceiling(max(totals))
    y = _y_axis(chart, top, step, fmt)
    slot = PLOT_W / len(periods)
    width = max(slot * 0.7, 1.0)
    labels = []
    for i, day in enumerate(periods):
        cx = LEFT + slot * (i + 0.5)
        labels.append((cx, day.isoformat()))
        base = 0.0
        for layer in layers:
            value = layer.values[i]
            if value <= 0:
                continue
            y0, y1 = y(base), y(base + value)
            chart.parts.append(
                f'<rect class="mark" x="{cx - width / 2:.1f}" y="{y1:.1f}" width="{width:.1f}" '
                f'height="{y0 - y1:.1f}" fill="{layer.colour}"><title>{day.isoformat()}, '
                f"{escape(layer.name)}: {escape(fmt(value))}</title></rect>"
            )
            base += value
    for layer in layers:
        chart.legend.append((layer.name, layer.colour))
    _x_labels(chart, labels)
    return chart.render()


def stacked_area(
    chart_id: str, title: str, desc: str, days_: Sequence[date], layers: Sequence[Layer]
) -> str:
    """Bands stacked over days, the first layer at the bottom (a cumulative flow diagram)."""
    totals = [sum(layer.values[i] for layer in layers) for i in range(len(days_))]
    if not days_ or not any(totals):
        return _empty(chart_id, title, "No items in this period yet.")
    chart = _Chart(chart_id, title, desc)
    top, step = nice_ceiling(max(totals))
    y = _y_axis(chart, top, step, number)
    x = _time_x(days_[0], days_[-1]) if len(days_) > 1 else (lambda _d: LEFT + PLOT_W / 2)
    _x_labels(chart, [(x(d), d.isoformat()) for d in days_])
    base = [0.0] * len(days_)
    for layer in layers:
        upper = [b + v for b, v in zip(base, layer.values, strict=True)]
        if any(layer.values):
            outline = [f"{x(d):.1f},{y(u):.1f}" for d, u in zip(days_, upper, strict=True)]
            back = [
                f"{x(d):.1f},{y(b):.1f}" for d, b in reversed(list(zip(days_, base, strict=True)))
            ]
            if len(days_) == 1:  # one day: a thin band, so it still shows
                px = x(days_[0])
                outline = [f"{px - 3:.1f},{y(upper[0]):.1f}", f"{px + 3:.1f},{y(upper[0]):.1f}"]
                back = [f"{px + 3:.1f},{y(base[0]):.1f}", f"{px - 3:.1f},{y(base[0]):.1f}"]
            chart.parts.append(
                f'<polygon class="mark" fill="{layer.colour}" fill-opacity="0.85" '
                f'points="{" ".join(outline + back)}"><title>{escape(layer.name)}: '
                f"{number(layer.values[-1])} on {days_[-1].isoformat()}</title></polygon>"
            )
        chart.legend.append((layer.name, layer.colour))
        base = upper
    return chart.render()


def target_bars(
    chart_id: str,
    title: str,
    desc: str,
    rows: Sequence[tuple[str, float | None, float | None]],
) -> str:
    """Per flow type, the actual share (bar) against its target (a marker)."""
    if not any(a is not None or t is not None for _, a, t in rows):
        return _empty(chart_id, title, "No finished items and no targets yet.")
    chart = _Chart(chart_id, title, desc)
    band = PLOT_H / len(rows)

    def x(share: float) -> float:
        return LEFT + 40 + share * (PLOT_W - 60)

    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        chart.parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{TOP}" y2="{TOP + PLOT_H}" '
            f'class="grid"/><text x="{x(tick):.1f}" y="{TOP + PLOT_H + 16}" '
            f'text-anchor="middle" class="tick">{percent(tick)}</text>'
        )
    for i, (flow_type, actual, target) in enumerate(rows):
        top = TOP + band * i
        colour = FLOW_COLOURS.get(flow_type, "#555")
        chart.parts.append(
            f'<text x="{LEFT + 34}" y="{top + band / 2 + 4:.1f}" text-anchor="end" '
            f'class="tick">{escape(flow_type)}</text>'
        )
        if actual is not None:
            said = f"{flow_type}: actual {percent(actual)}"
            if target is not None:
                said += f", target {percent(target)}, deviation {(actual - target) * 100:+.0f} pts"
            chart.parts.append(
                f'<rect class="mark" x="{x(0):.1f}" y="{top + band * 0.2:.1f}" '
                f'width="{max(x(actual) - x(0), 1.5):.1f}" height="{band * 0.6:.1f}" '
                f'fill="{colour}"><title>{escape(said)}</title></rect>'
            )
        if target is not None:
            chart.parts.append(
                f'<line class="mark target" x1="{x(target):.1f}" x2="{x(target):.1f}" '
                f'y1="{top + band * 0.08:.1f}" y2="{top + band * 0.92:.1f}" stroke="#111" '
                f'stroke-width="3"><title>{escape(flow_type)}: target {percent(target)}'
                "</title></line>"
            )
    chart.legend.extend([("actual (bar)", "#2f6fd0"), ("target (line)", "#111111")])
    return chart.render()


def _jitter(key: str, spread: float) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return (digest[0] / 255 - 0.5) * spread


def scatter(
    chart_id: str,
    title: str,
    desc: str,
    categories: Sequence[str],
    points: Sequence[Point],
    fmt: Format = days,
    references: Sequence[tuple[str, float]] = (),
) -> str:
    """Points per category (spread sideways so equal values stay visible), with optional
    horizontal reference lines (name, value)."""
    if not points:
        return _empty(chart_id, title, "No items in progress.")
    chart = _Chart(chart_id, title, desc)
    top, step = nice_ceiling(max([p.value for p in points] + [v for _, v in references]))
    y = _y_axis(chart, top, step, fmt)
    slot = PLOT_W / len(categories)
    centre = {c: LEFT + slot * (i + 0.5) for i, c in enumerate(categories)}
    _x_labels(chart, [(centre[c], c) for c in categories])
    for i, (name, value) in enumerate(references):
        # labels alternate between the right and the left end, so close lines stay readable
        x, anchor = (LEFT + PLOT_W - 4, "end") if i % 2 else (LEFT + 4, "start")
        chart.parts.append(
            f'<line class="reference" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="#555" stroke-dasharray="5 4"><title>{escape(name)}: '
            f"{escape(fmt(value))}</title></line>"
            f'<text x="{x}" y="{y(value) - 4:.1f}" text-anchor="{anchor}" class="tick">'
            f"{escape(name)} {escape(fmt(value))}</text>"
        )
    for p in points:
        px = centre[p.category] + _jitter(p.key or p.label, slot * 0.6)
        chart.parts.append(
            f'<circle class="mark" cx="{px:.1f}" cy="{y(p.value):.1f}" r="4.5" '
            f'fill="{p.colour}" fill-opacity="0.8"><title>{escape(p.label)}: '
            f"{escape(fmt(p.value))}</title></circle>"
        )
    return chart.render()

"""Charts as inline SVG, drawn on the server: no script, no CDN, readable without colour.

Every chart has a ``<title>`` (screen readers), axis titles with units, and its numbers printed
next to the marks; the pages show the same numbers in a table beside it. Colours come from CSS
classes (``ui.css``), so the charts follow the page's palette.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

from api.ui.fmt import num

FONT = 14  # px in chart units; charts are laid out ~700 px wide, so about the size shown


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    css: str = ""
    href: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Step:
    """One waterfall step: a feature's contribution in score points."""

    label: str
    detail: str
    points: float


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + 1e-9 * step:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _svg(width: int, height: int, title: str, body: list[str], css: str = "chart") -> Markup:
    return Markup(
        f'<svg class="{css}" viewBox="0 0 {width} {height}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    css: str = "",
    size: int = FONT,
    baseline: str = "middle",
) -> str:
    cls = f' class="{css}"' if css else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'dominant-baseline="{baseline}"{cls}>{escape(text)}</text>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, css: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{css}"/>'


def _x_axis(
    ticks: Sequence[float],
    scale: Callable[[float], float],
    top: float,
    bottom: float,
    title: str,
    width: float,
    left: float,
    right: float,
    labels: Sequence[str] | None = None,
) -> list[str]:
    out = []
    for i, t in enumerate(ticks):
        x = scale(t)
        out.append(_line(x, top, x, bottom, "grid"))
        out.append(
            _text(x, bottom + 14, labels[i] if labels else num(t), anchor="middle", css="tick")
        )
    out.append(_line(left, bottom, width - right, bottom, "axis"))
    out.append(
        _text((left + width - right) / 2, bottom + 34, title, anchor="middle", css="axis-title")
    )
    return out


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    axis_title: str,
    lo: float = 0.0,
    hi: float = 100.0,
    marker: float | None = None,
    marker_label: str = "",
    value_fmt: str = "{:.1f}",
    label_width: int = 120,
) -> Markup:
    """Horizontal bars on a fixed scale (ranking scores, responsibility weights)."""
    width, row, top, right = 720, 26, 22, 70
    left = label_width
    bottom = top + row * max(1, len(bars))
    height = bottom + 44

    def sx(v: float) -> float:
        return left + (min(max(v, lo), hi) - lo) / (hi - lo) * (width - left - right)

    body = _x_axis(nice_ticks(lo, hi), sx, top - 6, bottom, axis_title, width, left, right)
    for i, bar in enumerate(bars):
        y = top + i * row
        label = _text(left - 8, y + row / 2, bar.label, anchor="end", css="label")
        if bar.href:
            label = f'<a href="{escape(bar.href)}">{label}</a>'
        body.append(label)
        x0, x1 = sx(lo), sx(bar.value)
        body.append(
            f'<rect x="{x0:.1f}" y="{y + 5:.1f}" width="{max(1.0, x1 - x0):.1f}" '
            f'height="{row - 10}" class="bar {escape(bar.css)}">'
            f"<title>{escape(bar.label)}: {escape(value_fmt.format(bar.value))}"
            f"{escape(bar.note)}</title></rect>"
        )
        body.append(_text(x1 + 5, y + row / 2, value_fmt.format(bar.value), css="value"))
    if marker is not None and lo <= marker <= hi:
        x = sx(marker)
        body.append(_line(x, top - 10, x, bottom, "marker"))
        body.append(
            _text(
                x,
                top - 14,
                marker_label,
                anchor="middle",
                css="marker-label",
                size=FONT - 1,
                baseline="auto",
            )
        )
    return _svg(width, height, title, body)


def waterfall(
    base: float, steps: Sequence[Step], score: float, *, title: str, threshold: float | None = None
) -> Markup:
    """SHAP waterfall: from the base value (the model's expected score) each feature moves the
    score by its exact contribution, ending at the score (base + sum == score)."""
    width, row, top, left, right = 720, 34, 26, 230, 28
    rows = len(steps) + 2
    bottom = top + row * rows
    height = bottom + 46
    visited = [base, score]
    running = base
    for s in steps:
        running += s.points
        visited.append(running)
    if threshold is not None:
        visited.append(threshold)
    span = max(visited) - min(visited)
    pad = max(2.0, 0.2 * span)
    lo, hi = max(0.0, min(visited) - pad), min(100.0, max(visited) + pad)
    ticks = nice_ticks(lo, hi, 6)

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - right)

    body = _x_axis(ticks, sx, top - 6, bottom, "score (points)", width, left, right)
    # Row 0: the base value; rows 1..n: features; last row: the score.
    y = top + row / 2
    body.append(_text(left - 8, y - 7, "Expected score", anchor="end", css="label"))
    body.append(
        _text(left - 8, y + 9, "model's base value", anchor="end", css="detail", size=FONT - 2)
    )
    body.append(f'<circle cx="{sx(base):.1f}" cy="{y:.1f}" r="4" class="dot"/>')
    body.append(_text(sx(base) + 8, y, f"{base:.1f}", css="value"))
    running = base
    for i, s in enumerate(steps, start=1):
        y0 = top + i * row
        start, end = running, running + s.points
        x0, x1 = sorted((sx(start), sx(end)))
        css = "pos" if s.points >= 0 else "neg"
        body.append(_text(left - 8, y0 + row / 2 - 7, s.label, anchor="end", css="label"))
        body.append(
            _text(left - 8, y0 + row / 2 + 9, s.detail, anchor="end", css="detail", size=FONT - 2)
        )
        # Connector from where the previous mark ended to where this bar starts.
        body.append(
            _line(sx(start), y0 - (row / 2 if i == 1 else 7), sx(start), y0 + 7, "connector")
        )
        body.append(
            f'<rect x="{x0:.1f}" y="{y0 + 7:.1f}" width="{max(1.5, x1 - x0):.1f}" '
            f'height="{row - 14}" class="step {css}"><title>{escape(s.label)} '
            f"({escape(s.detail)}): {s.points:+.2f} points</title></rect>"
        )
        text = f"{s.points:+.1f}".replace("-", "−")
        if s.points >= 0:
            body.append(_text(x1 + 5, y0 + row / 2, text, css=f"value {css}"))
        else:
            body.append(_text(x0 - 5, y0 + row / 2, text, anchor="end", css=f"value {css}"))
        running = end
    y = top + (rows - 1) * row + row / 2
    body.append(_text(left - 8, y, "Score", anchor="end", css="label strong"))
    body.append(f'<circle cx="{sx(score):.1f}" cy="{y:.1f}" r="5" class="dot score"/>')
    body.append(_text(sx(score) + 9, y, f"{score:.1f}", css="value strong"))
    body.append(_line(sx(base), top, sx(base), bottom, "base-line"))
    if threshold is not None and lo <= threshold <= hi:
        x = sx(threshold)
        body.append(_line(x, top - 10, x, bottom, "marker"))
        body.append(
            _text(
                x,
                top - 14,
                f"gate {threshold:g}",
                anchor="middle",
                css="marker-label",
                size=FONT - 1,
                baseline="auto",
            )
        )
    return _svg(width, height, title, body)


_TIME_STEPS = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
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
    60 * 86400,
    91 * 86400,
    182 * 86400,
    365 * 86400,
)


def time_ticks(t0: int, t1: int, count: int = 6) -> tuple[list[int], str, str]:
    """Tick instants, their strftime format and the axis title's date context."""
    span = max(1, t1 - t0)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    first = math.ceil(t0 / step) * step
    ticks = list(range(first, t1 + 1, step)) or [t0]
    if step < 60:
        fmt = "%H:%M:%S"
    elif step < 86400:
        fmt = "%H:%M"
    elif step < 30 * 86400:
        fmt = "%m-%d"
    else:
        fmt = "%Y-%m"
    d0 = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d")
    d1 = datetime.fromtimestamp(t1, UTC).strftime("%Y-%m-%d")
    context = d0 if d0 == d1 else (f"{d0} to {d1}" if step < 86400 else "")
    return ticks, fmt, context


BANDS = (
    ("A", 85.0, 100.0),
    ("B", 70.0, 85.0),
    ("C", 55.0, 70.0),
    ("D", 40.0, 55.0),
    ("E", 0.0, 40.0),
)


def history_line(
    points: Sequence[tuple[int, float]], *, title: str, threshold: float | None = None
) -> Markup:
    """Score over time (as-of instants of published scores), bands shaded, gate dashed."""
    width, height, top, left, right, bottom = 720, 280, 16, 56, 44, 220

    t0 = min(p[0] for p in points) if points else 0
    t1 = max(p[0] for p in points) if points else 1
    if t1 == t0:
        t0, t1 = t0 - 1, t1 + 1

    def sx(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (width - left - right)

    def sy(v: float) -> float:
        return bottom - v / 100 * (bottom - top)

    body: list[str] = []
    for name, lo, hi in BANDS:
        body.append(
            f'<rect x="{left}" y="{sy(hi):.1f}" width="{width - left - right}" '
            f'height="{sy(lo) - sy(hi):.1f}" class="band-zone band-{name}"/>'
        )
        body.append(_text(width - right + 6, (sy(lo) + sy(hi)) / 2, name, css="band-name"))
    for grid_score in range(0, 101, 20):
        body.append(_line(left, sy(grid_score), width - right, sy(grid_score), "grid"))
        body.append(_text(left - 6, sy(grid_score), str(grid_score), anchor="end", css="tick"))
    body.append(
        f'<text x="14" y="{(top + bottom) / 2:.1f}" font-size="{FONT}" '
        f'text-anchor="middle" class="axis-title" transform="rotate(-90 14 '
        f'{(top + bottom) / 2:.1f})">score (points)</text>'
    )
    ticks, fmt, context = time_ticks(t0, t1)
    for t in ticks:
        x = sx(t)
        body.append(_line(x, bottom, x, bottom + 4, "axis"))
        body.append(
            _text(
                x,
                bottom + 16,
                datetime.fromtimestamp(t, UTC).strftime(fmt),
                anchor="middle",
                css="tick",
            )
        )
    body.append(_line(left, bottom, width - right, bottom, "axis"))
    axis = "score as of (UTC" + (f", {context}" if context else "") + ")"
    body.append(
        _text((left + width - right) / 2, bottom + 38, axis, anchor="middle", css="axis-title")
    )
    if threshold is not None:
        body.append(_line(left, sy(threshold), width - right, sy(threshold), "marker"))
        body.append(
            _text(
                left + 4,
                sy(threshold) - 8,
                f"gate {threshold:g}",
                css="marker-label",
                size=FONT - 1,
            )
        )
    if points:
        path = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in points)
        body.append(f'<polyline points="{path}" class="series"/>')
        for t, v in points:
            when = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
            body.append(
                f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="3.5" class="dot">'
                f"<title>{v:.1f} points as of {when} UTC</title></circle>"
            )
        t_last, v_last = points[-1]
        body.append(
            _text(
                sx(t_last) - 6, sy(v_last) - 12, f"{v_last:.1f}", anchor="end", css="value strong"
            )
        )
    return _svg(width, height, title, body)


def sparkline(values: Sequence[float]) -> Markup:
    """A tiny trend line (decorative: the change in points is printed beside it)."""
    width, height = 80, 22
    if len(values) < 2:
        return Markup("")
    mid = (max(values) + min(values)) / 2
    half = max(5.0, (max(values) - min(values)) / 2)  # at least +-5 points: no drama from noise
    lo, span = mid - half, 2 * half
    step = width / (len(values) - 1)
    pts = " ".join(
        f"{i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
        for i, v in enumerate(values)
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" aria-hidden="true" '
        f'focusable="false"><polyline points="{pts}"/></svg>'
    )

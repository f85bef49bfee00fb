"""Small bar charts as inline SVG, rendered on the server for the staff dashboard.

No JavaScript and no ``style`` attribute: the charts work under a strict
Content-Security-Policy (``style-src 'self'``, ``script-src 'self'``). Colours
come from CSS classes (``gwrt-s-<series>``) in
``static/gateway_realtime/dashboard.css``; sizes and positions are SVG
presentation attributes. Every bar carries a ``<title>`` (the browser's
tooltip), and each chart a ``<title>`` and ``<desc>`` that name it for
screen readers; the dashboard puts a table of the same figures beside it.

Everything that is text is escaped here: labels come from the ledger (error
types, models) and must not be able to inject markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

#: The drawing's coordinate space; the CSS scales it to the page's width.
WIDTH = 760
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 30
#: At most this many labels under the columns (every n-th day is labelled).
MAX_X_LABELS = 10
#: Horizontal bars: the height of one row and the width of its label column.
ROW_HEIGHT = 22
LABEL_WIDTH = 260
LABEL_CHARS = 38


@dataclass(frozen=True)
class Series:
    """One stacked part of a column: ``key`` names its CSS class (``gwrt-s-<key>``)."""

    key: str
    label: str


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: its label, value and series (its colour)."""

    label: str
    value: float
    series: str


Formatter = Callable[[float], str]


def compact(value: float) -> str:
    """A short figure for an axis or a tooltip: ``950``, ``1.2k``, ``3.4M``, ``0.5``."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}"


def nice_step(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)  # pragma: no cover (the loop ends at 10)


def scale(largest: float, *, integer: bool = True) -> tuple[float, float]:
    """The axis for values up to ``largest``: (its top, the step between gridlines).

    At most four steps of a round size; counts (``integer``) never step by
    less than 1, so an axis of counts is never labelled 0.5.
    """
    step = nice_step(largest / 4)
    if integer:
        step = max(step, 1.0)
    return step * max(1, math.ceil(largest / step - 1e-9)), step


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _open(chart_id: str, title: str, description: str, width: int, height: int) -> list[str]:
    ids = f"{chart_id}-title {chart_id}-desc"
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gwrt-chart" id="{escape(chart_id)}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-labelledby="{escape(ids)}">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>',
    ]


def columns(
    *,
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    values: Sequence[Sequence[float]],
    ticks: Sequence[str] | None = None,
    fmt: Formatter = compact,
    integer: bool = True,
) -> SafeString:
    """A column per label (a day), its ``series`` stacked from the bottom.

    ``values[i][j]`` is column ``i``'s value of ``series[j]``; ``labels``
    name the columns in their tooltips, ``ticks`` (shorter, default the
    labels) under the axis, where at most ``MAX_X_LABELS`` are written. Each column is
    a ``<g class="gwrt-bar">`` holding a full-height transparent rectangle
    (so that its tooltip shows on an empty day too) and a rectangle per
    series with a value above 0.
    """
    totals = [sum(column) for column in values]
    top, step_y = scale(max(totals, default=0), integer=integer)
    ticks = labels if ticks is None else ticks
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(labels), 1)
    gap = min(step * 0.2, 4)
    description = ", ".join(
        f"{part.label} {fmt(sum(column[j] for column in values))}" for j, part in enumerate(series)
    )
    out = _open(chart_id, title, f"{title}. Totals: {description}.", WIDTH, HEIGHT)

    out.append('<g class="gwrt-axis" aria-hidden="true">')
    for tick in range(round(top / step_y) + 1):
        value = step_y * tick
        y = TOP + plot_h - plot_h * value / top
        out.append(
            f'<line class="gwrt-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_num(y)}"'
            f' y2="{_num(y)}"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{_num(y + 4)}" text-anchor="end">{escape(fmt(value))}</text>'
        )
    every = max(1, math.ceil(len(ticks) / MAX_X_LABELS))
    for i, label in enumerate(ticks):
        if i % every == 0:
            x = LEFT + step * (i + 0.5)
            out.append(
                f'<text x="{_num(x)}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    out.append("</g>")

    out.append('<g class="gwrt-bars">')
    for i, (label, column) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + step * i + gap / 2
        width = max(step - gap, 0.5)
        parts = ", ".join(f"{part.label} {fmt(v)}" for part, v in zip(series, column, strict=True))
        out.append(f'<g class="gwrt-bar"><title>{escape(label)}: {escape(parts)}</title>')
        out.append(
            f'<rect class="gwrt-hit" x="{_num(x)}" y="{TOP}" width="{_num(width)}"'
            f' height="{plot_h}"/>'
        )
        base: float = TOP + plot_h
        for part, value in zip(series, column, strict=True):
            if value <= 0:
                continue
            height = plot_h * value / top
            base -= height
            out.append(
                f'<rect class="gwrt-s-{escape(part.key)}" x="{_num(x)}" y="{_num(base)}"'
                f' width="{_num(width)}" height="{_num(height)}"/>'
            )
        out.append("</g>")
    out.append("</g></svg>")
    return mark_safe("".join(out))  # noqa: S308 (every text above is escaped)


def bars(*, chart_id: str, title: str, rows: Sequence[Bar], fmt: Formatter = compact) -> SafeString:
    """A horizontal bar per row, labelled on the left, its value at its end."""
    top, _ = scale(max((row.value for row in rows), default=0), integer=False)
    height = TOP + ROW_HEIGHT * max(len(rows), 1) + 8
    plot_w = WIDTH - LABEL_WIDTH - RIGHT - 48
    description = "; ".join(f"{row.label}: {fmt(row.value)}" for row in rows) or "none"
    out = _open(chart_id, title, f"{title}. {description}.", WIDTH, height)
    out.append('<g class="gwrt-bars">')
    for i, row in enumerate(rows):
        y = TOP + ROW_HEIGHT * i
        label = row.label if len(row.label) <= LABEL_CHARS else row.label[: LABEL_CHARS - 1] + "…"
        width = max(plot_w * row.value / top, 1.0)
        out.append(
            f'<g class="gwrt-bar"><title>{escape(row.label)}: {escape(fmt(row.value))}</title>'
        )
        out.append(
            f'<text class="gwrt-label" x="{LABEL_WIDTH - 8}" y="{y + 15}"'
            f' text-anchor="end">{escape(label)}</text>'
        )
        out.append(
            f'<rect class="gwrt-s-{escape(row.series)}" x="{LABEL_WIDTH}" y="{y + 3}"'
            f' width="{_num(width)}" height="{ROW_HEIGHT - 6}"/>'
        )
        out.append(
            f'<text class="gwrt-value" x="{_num(LABEL_WIDTH + width + 6)}" y="{y + 15}">'
            f"{escape(fmt(row.value))}</text>"
        )
        out.append("</g>")
    out.append("</g></svg>")
    return mark_safe("".join(out))  # noqa: S308 (every text above is escaped)


__all__ = ["Bar", "Series", "bars", "columns", "compact", "nice_step", "scale"]

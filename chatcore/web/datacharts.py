"""An answer's chart spec drawn as inline SVG: bars, lines, a scatter with its fitted line, a correlation heatmap.

The spec is the data service's (``{"kind", "x", "y": [...], "title", "fit"?, "data"?}``); the points come from
``spec["data"]`` when it carries its own (an analysis's figures), else from the answer's rows. Drawn here, not by
Gradio's plots, because a fitted line over a scatter and a heatmap are beyond them and the page loads nothing from
another host; the look follows the Evaluate tab's interval chart (``views.interval_chart``): text in the page's
colour (``currentColor``), faint grid lines, every label escaped.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from typing import Any

from chatcore.web.dataviews import FILLS, STROKES, number

MAX_SERIES = 3
WIDTH, HEIGHT = 780, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 24, 44, 48


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``low``..``high`` (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        low, high = low - (abs(low) or 1) / 2, high + (abs(high) or 1) / 2
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * m for m in (1, 2, 2.5, 5, 10) if power * m >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - 1e-9 * step:
        ticks.append(first + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    return None


def _when(value: Any) -> float | None:
    """A date or timestamp (as the result's JSON writes it) as epoch seconds, or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def chart_data(chart: dict[str, Any], columns: list[dict[str, str]],
               rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """The column names and rows a chart draws: its own ``data`` when it carries it, else the answer's."""
    data = chart.get("data")
    if data:
        names = [c["name"] if isinstance(c, dict) else str(c) for c in data.get("columns") or []]
        return names, data.get("rows") or []
    return [c["name"] for c in columns], rows


def _svg_open(title: str, height: int = HEIGHT) -> list[str]:
    return [f'<svg class="data-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
            f'role="img" aria-label="{html.escape(title)}" font-size="12" fill="currentColor">',
            f'<text x="{LEFT}" y="18" font-weight="600" font-size="14">{html.escape(title)}</text>']


def _legend(names: list[str], x: float, y: float) -> list[str]:
    parts = []
    for i, name in enumerate(names):
        parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="11" height="11" rx="2" fill="{FILLS[i]}" '
                     f'stroke="{STROKES[i]}"/><text x="{x + 16:.1f}" y="{y}">{html.escape(name)}</text>')
        x += 32 + 7.2 * len(name)
    return parts


def bar_chart(title: str, labels: list[str], series: list[tuple[str, list[float | None]]]) -> str:
    """Horizontal bars, one row per category and one bar per series, each with its value at its end."""
    values = [v for _, vs in series for v in vs if v is not None]
    ticks = nice_ticks(min(0.0, *values), max(0.0, *values))
    lo, hi = ticks[0], ticks[-1]
    label_w, plot_w = 190, WIDTH - 190 - 90
    bar_h = 16 if len(series) == 1 else 12
    row_h = bar_h * len(series) + 12
    top = TOP if len(series) > 1 else 32
    height = top + row_h * len(labels) + 30

    def x(v: float) -> float:
        return label_w + plot_w * (v - lo) / (hi - lo or 1)

    parts = _svg_open(title, height)
    if len(series) > 1:
        parts += _legend([name for name, _ in series], label_w, 36)
    axis_y = top + row_h * len(labels)
    for t in ticks:
        parts.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{axis_y}" stroke="currentColor" '
                     f'stroke-opacity="{0.45 if t == 0 else 0.12}"/><text x="{x(t):.1f}" y="{axis_y + 17}" '
                     f'text-anchor="middle" fill-opacity="0.7">{html.escape(number(t))}</text>')
    for r, label in enumerate(labels):
        y = top + r * row_h + 6
        shown = label if len(label) <= 26 else label[:25] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h * len(series) / 2 + 4:.1f}" text-anchor="end">'
                     f'<title>{html.escape(label)}</title>{html.escape(shown)}</text>')
        for s, (name, vs) in enumerate(series):
            value = vs[r]
            if value is None:
                continue
            start, end = sorted((x(0.0 if lo <= 0 <= hi else lo), x(value)))
            by = y + s * bar_h
            parts.append(f'<g class="bar"><title>{html.escape(label)} · {html.escape(name)}: '
                         f'{html.escape(number(value))}</title><rect x="{start:.1f}" y="{by:.1f}" '
                         f'width="{max(end - start, 1):.1f}" height="{bar_h - 2}" rx="3" fill="{FILLS[s]}"/>'
                         f'<text x="{end + 6:.1f}" y="{by + bar_h / 2 + 3:.1f}" font-size="11">'
                         f'{html.escape(number(value))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _axes(parts: list[str], xs: tuple[float, float], ys: list[float], x_label: str, y_label: str,
          x_text: Any) -> tuple[Any, Any]:
    """Grid, ticks and axis titles of an x/y plot; returns the two scale functions."""
    x_lo, x_hi = xs
    y_lo, y_hi = ys[0], ys[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + plot_w * (v - x_lo) / (x_hi - x_lo or 1)

    def sy(v: float) -> float:
        return TOP + plot_h * (1 - (v - y_lo) / (y_hi - y_lo or 1))

    for t in ys:
        parts.append(f'<line x1="{LEFT}" y1="{sy(t):.1f}" x2="{WIDTH - RIGHT}" y2="{sy(t):.1f}" stroke="currentColor" '
                     f'stroke-opacity="0.12"/><text x="{LEFT - 8}" y="{sy(t) + 4:.1f}" text-anchor="end" '
                     f'fill-opacity="0.7">{html.escape(number(t))}</text>')
    for value, text in x_text:
        parts.append(f'<line x1="{sx(value):.1f}" y1="{TOP + plot_h}" x2="{sx(value):.1f}" y2="{TOP + plot_h + 4}" '
                     f'stroke="currentColor" stroke-opacity="0.5"/><text x="{sx(value):.1f}" y="{TOP + plot_h + 18}" '
                     f'text-anchor="middle" fill-opacity="0.7">{html.escape(text)}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
                 f'stroke="currentColor" '
                 f'stroke-opacity="0.5"/><text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle" '
                 f'fill-opacity="0.85">{html.escape(x_label)}</text><text transform="translate(16 {TOP + plot_h / 2}) '
                 f'rotate(-90)" text-anchor="middle" fill-opacity="0.85">{html.escape(y_label)}</text>')
    return sx, sy


def _x_positions(values: list[Any]) -> tuple[list[float | None], list[tuple[float, str]]]:
    """Where each x goes and the ticks to label: numbers on a linear axis, dates on a time axis, else evenly."""
    numbers = [_numeric(v) for v in values]
    if numbers and all(n is not None for n in numbers):
        present = [n for n in numbers if n is not None]
        ticks = nice_ticks(min(present), max(present))
        return numbers, [(t, number(t)) for t in ticks]
    times = [_when(v) for v in values]
    if all(t is not None for t in times):
        low, high = min(times), max(times)  # type: ignore[type-var]
        marks = [low + (high - low) * i / 4 for i in range(5)] if high > low else [low]
        fmt = "%Y-%m-%d" if high - low > 3 * 86400 else "%m-%d %H:%M"
        return times, [(m, datetime.fromtimestamp(m, timezone.utc).strftime(fmt)) for m in marks]  # type: ignore[misc]
    step = max(1, len(values) // 8)
    labels = [str(v)[:14] for v in values]
    return [float(i) for i in range(len(values))], [(float(i), labels[i]) for i in range(0, len(values), step)]


def line_chart(title: str, x_name: str, x_values: list[Any], series: list[tuple[str, list[float | None]]]) -> str:
    """One line per series over an ordered x, its points marked (each with its values on hover)."""
    positions, x_ticks = _x_positions(x_values)
    xs = [p for p in positions if p is not None]
    values = [v for _, vs in series for v in vs if v is not None]
    ys = nice_ticks(min(values), max(values))
    parts = _svg_open(title)
    if len(series) > 1:
        parts += _legend([name for name, _ in series], LEFT, 36)
    x_range = (min(x_ticks[0][0], min(xs)), max(x_ticks[-1][0], max(xs)))
    sx, sy = _axes(parts, x_range, ys, x_name, series[0][0] if len(series) == 1 else "", x_ticks)
    for s, (name, vs) in enumerate(series):
        points = [(sx(p), sy(v), x, v) for p, v, x in zip(positions, vs, x_values) if p is not None and v is not None]
        path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f} {py:.1f}" for i, (px, py, _, _) in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="{STROKES[s]}" stroke-width="2.2"/>')
        for px, py, x, v in points[:400]:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{FILLS[s]}" stroke="{STROKES[s]}">'
                         f'<title>{html.escape(x_name)} {html.escape(str(x))} · {html.escape(name)}: '
                         f'{html.escape(number(v))}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def scatter_chart(title: str, x_name: str, y_name: str, points: list[tuple[float, float]],
                  fit: dict[str, Any] | None = None) -> str:
    """Points of two measures, with the fitted line ``y = intercept + slope x`` when there is one."""
    x_ticks = nice_ticks(min(p[0] for p in points), max(p[0] for p in points))
    ys = nice_ticks(min(p[1] for p in points), max(p[1] for p in points))
    parts = _svg_open(title)
    sx, sy = _axes(parts, (x_ticks[0], x_ticks[-1]), ys, x_name, y_name, [(t, number(t)) for t in x_ticks])
    for x, y in points[:5000]:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{FILLS[0]}" fill-opacity="0.75" '
                     f'stroke="{STROKES[0]}" stroke-width="0.8"><title>{html.escape(number(x))}, '
                     f'{html.escape(number(y))}</title></circle>')
    slope, intercept = (fit or {}).get("slope"), (fit or {}).get("intercept")
    if _numeric(slope) is not None and _numeric(intercept) is not None:
        x0, x1 = x_ticks[0], x_ticks[-1]
        # Clip the line to the plot: where it would leave the y range, it is cut there.
        y0, y1 = intercept + slope * x0, intercept + slope * x1
        parts.append(f'<line class="fit" x1="{sx(x0):.1f}" y1="{sy(min(max(y0, ys[0]), ys[-1])):.1f}" '
                     f'x2="{sx(x1):.1f}" y2="{sy(min(max(y1, ys[0]), ys[-1])):.1f}" stroke="#dc2626" '
                     f'stroke-width="2" stroke-dasharray="6 4"/><text x="{WIDTH - RIGHT}" y="36" text-anchor="end" '
                     f'fill="#dc2626">fit: {html.escape(y_name)} = {html.escape(number(intercept))} '
                     f'{"+" if slope >= 0 else "−"} {html.escape(number(abs(slope)))} × '
                     f'{html.escape(x_name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _heat_colour(value: float | None) -> str:
    """-1 deep red, 0 white, +1 deep blue (a correlation's sign and strength)."""
    if value is None:
        return "transparent"
    v = max(-1.0, min(1.0, value))
    r, g, b = (37, 99, 235) if v >= 0 else (220, 38, 38)
    alpha = abs(v) * 0.85
    return f"rgba({r},{g},{b},{alpha:.2f})"


def heatmap_html(title: str, row_name: str, names: list[str], rows: list[list[Any]], value_names: list[str]) -> str:
    """A matrix (a correlation's) as a table of coloured cells: blue for positive, red for negative."""
    index = {n: i for i, n in enumerate(names)}
    label_at = index.get(row_name, 0)
    head = "".join(f"<th>{html.escape(v)}</th>" for v in value_names)
    body = []
    for row in rows:
        cells = []
        for name in value_names:
            value = _numeric(row[index[name]]) if name in index else None
            strong = " strong" if value is not None and abs(value) >= 0.6 else ""
            cells.append(f'<td class="heat{strong}" style="background:{_heat_colour(value)}">'
                         f'{html.escape(number(value) if value is not None else "")}</td>')
        body.append(f"<tr><th>{html.escape(str(row[label_at]))}</th>{''.join(cells)}</tr>")
    return (f'<div class="data-heatmap"><div class="chart-title">{html.escape(title)}</div><table><thead><tr><th></th>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _scales_differ(series: list[tuple[str, list[float | None]]], ratio: float = 5.0) -> bool:
    """Whether the series' largest magnitudes differ by more than ``ratio``: one axis would flatten the small ones."""
    sizes = [max((abs(v) for v in vs if v is not None), default=0.0) for _, vs in series]
    present = [s for s in sizes if s > 0]
    return bool(present) and max(present) > ratio * min(present)


def chart_html(chart: dict[str, Any] | None, columns: list[dict[str, str]], rows: list[list[Any]]) -> str:
    """The answer's chart as HTML, or ``""`` when it has none or its columns are not in the data."""
    if not chart or not chart.get("x"):
        return ""
    names, data = chart_data(chart, columns, rows)
    index = {n: i for i, n in enumerate(names)}
    y_names = [y for y in chart.get("y") or [] if y in index][:MAX_SERIES]
    x_name = chart["x"]
    if x_name not in index or not y_names or not data:
        return ""
    title = chart.get("title") or f"{', '.join(y_names)} by {x_name}"
    kind = chart.get("kind")
    if kind == "heatmap":
        return heatmap_html(title, x_name, names, data, [y for y in chart.get("y") or [] if y in index])
    x_values = [row[index[x_name]] for row in data]
    series = [(y, [_numeric(row[index[y]]) for row in data]) for y in y_names]
    if not any(v is not None for _, vs in series for v in vs):
        return ""
    if kind in ("bar", "line") and len(series) > 1 and _scales_differ(series):
        # Measures of different sizes (a mean of 77 beside a rate of 0.7) get a chart each, not a shared axis.
        return "".join(chart_html({**chart, "y": [name], "title": f"{name} by {x_name}"}, columns, rows)
                       for name, _ in series)
    if kind == "bar":
        return bar_chart(title, [str(v) for v in x_values], series)
    if kind == "line":
        return line_chart(title, x_name, x_values, series)
    if kind == "scatter":
        points = [(x, y) for x, y in zip((_numeric(v) for v in x_values), series[0][1])
                  if x is not None and y is not None]
        return scatter_chart(title, x_name, y_names[0], points, chart.get("fit")) if points else ""
    return ""

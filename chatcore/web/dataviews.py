"""How the Library tab's Data area shows things: the tables list, profile cards with small histograms, answers
(narrative with unverified numbers flagged, statistics, record) and their charts, all as plain HTML strings.

Pure functions over plain data (no gradio, no store). Charts are inline SVG in the style of the Evaluate tab's
interval chart (``views.interval_chart``): drawn here because they need what Gradio's plots lack (a fitted line
over a scatter, a heatmap) and nothing may load from another host. Every value from a table is escaped: a cell
can hold any text.
"""

from __future__ import annotations

import html
import math
import re
from datetime import datetime, timezone
from typing import Any

TABLE_HEADERS = ["Table", "Rows", "Columns", "Collection", "File"]
# Bar fills and the darker strokes of lines and points, one per series (at most three are drawn).
FILLS = ("#60a5fa", "#fbbf24", "#34d399")
STROKES = ("#1d4ed8", "#b45309", "#047857")
KIND_LABELS = {"query": "query", "ask": "question", "groupby": "group-by summary",
               "correlation": "correlation matrix", "compare": "two-group comparison",
               "regression": "linear regression"}


def number(value: Any) -> str:
    """A value as a profile or chart shows it: integers with separators from 10,000 (a year stays 2007), floats
    to about four figures."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
        if abs(value) >= 1e5:
            return f"{value:,.0f}"
        if abs(value) >= 1:  # about four significant figures, trailing zeros after the point dropped
            decimals = max(4 - len(str(int(abs(value)))), 1 if abs(value) < 1e4 else 0)
            text = f"{value:,.{decimals}f}" if abs(value) >= 10_000 else f"{value:.{decimals}f}"
            return text.rstrip("0").rstrip(".") if "." in text else text
        return f"{value:.4g}"
    return str(value)


def table_row(table: dict[str, Any]) -> list[Any]:
    """A table as a row of the tables list (``TABLE_HEADERS``)."""
    return [table["name"], table.get("rows") or 0, len(table.get("columns") or []), table.get("collection") or "",
            table.get("filename") or ""]


def table_line(table: dict[str, Any]) -> str:
    """``trials · 60 rows × 5 columns · trials.csv (CSV, utf-8) · collection default`` (plain text)."""
    report = table.get("report") or {}
    how = [table.get("kind", "").upper()]
    if report.get("encoding"):
        how.append(report["encoding"])
    if report.get("sheet"):
        how.append(f"sheet {report['sheet']}")
    rows = table.get("rows") or 0
    columns = len(table.get("columns") or [])
    return (f"{table['name']} · {rows:,} row{'s' * (rows != 1)} × {columns} column{'s' * (columns != 1)} · "
            f"{table.get('filename', '')} ({', '.join(h for h in how if h)}) · collection {table.get('collection')}")


def load_notes(table: dict[str, Any], profile: dict[str, Any] | None) -> list[str]:
    """What the load report and the profile warn about: skipped rows, encoding, renames, mixed types, gaps."""
    report = table.get("report") or {}
    notes = []
    if report.get("skipped_rows"):
        lines = ", ".join(str(n) for n in report.get("skipped_lines") or [])
        notes.append(f"{report['skipped_rows']:,} malformed row{'s' * (report['skipped_rows'] != 1)} skipped"
                     + (f" (lines {lines}{', …' if report['skipped_rows'] > len(report['skipped_lines']) else ''})"
                        if lines else ""))
    if report.get("encoding") and report["encoding"].lower().replace("-", "") not in ("utf8", "ascii"):
        notes.append(f"read as {report['encoding']} (not UTF-8)")
    # A header lower-cased is no news; one that had to change (spaces, symbols, a duplicate) is.
    renamed = {k: v for k, v in (report.get("renamed") or {}).items() if k.strip().lower() != v}
    if renamed:
        notes.append("columns renamed for SQL: " + ", ".join(f"{k} → {v}" for k, v in renamed.items()))
    notes += list(report.get("warnings") or [])
    for column in (profile or {}).get("columns", []):
        notes += [f"{column['name']}: {w}" for w in column.get("warnings") or []]
    return notes


# -- the profile card ------------------------------------------------------------------------------------


def _histogram_svg(column: dict[str, Any]) -> str:
    """A column's histogram as a small SVG: one bar per bin, each with its range and count on hover."""
    histogram = column.get("histogram") or {}
    counts, edges = histogram.get("counts") or [], histogram.get("edges") or []
    if not counts:
        return ""
    width, height, gap = 220, 46, 1.5
    top = max(counts) or 1
    step = width / len(counts)
    temporal = column.get("kind") == "temporal"

    def edge(v: float) -> str:
        return datetime.fromtimestamp(v, timezone.utc).strftime("%Y-%m-%d") if temporal else number(v)

    bars = []
    for i, count in enumerate(counts):
        h = 0 if not count else max(height * count / top, 1.5)
        low, high = (edges[i], edges[i + 1]) if i + 1 < len(edges) else (edges[0], edges[-1])
        bars.append(f'<rect x="{i * step + gap / 2:.1f}" y="{height - h:.1f}" width="{step - gap:.1f}" '
                    f'height="{h:.1f}" rx="1.5" fill="{FILLS[0]}"><title>{html.escape(edge(low))} to '
                    f'{html.escape(edge(high))}: {count:,}</title></rect>')
    low, high = edge(edges[0]), edge(edges[-1])
    return (f'<svg class="spark" viewBox="0 0 {width} {height + 14}" width="100%" role="img" '
            f'aria-label="histogram of {html.escape(column["name"])}" font-size="10" fill="currentColor">'
            + "".join(bars) +
            f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="currentColor" stroke-opacity="0.3"/>'
            f'<text x="0" y="{height + 12}" fill-opacity="0.65">{html.escape(low)}</text>'
            f'<text x="{width}" y="{height + 12}" text-anchor="end" fill-opacity="0.65">{html.escape(high)}</text>'
            "</svg>")


def _top_bars(column: dict[str, Any], shown: int = 5) -> str:
    """A text column's most frequent values as bars, with how many other distinct values there are."""
    top = (column.get("top") or [])[:shown]
    if not top:
        return ""
    most = max(n for _, n in top) or 1
    rows = [f'<div class="top-row" title="{html.escape(str(v))}: {n:,}"><span class="top-value">{html.escape(str(v))}'
            f'</span><span class="top-bar"><span style="width:{100 * n / most:.1f}%"></span></span>'
            f'<span class="top-n">{n:,}</span></div>' for v, n in top]
    others = (column.get("distinct") or 0) - len(top)
    if others > 0:
        rows.append(f'<div class="top-more">and {others:,} other value{"s" * (others != 1)}</div>')
    return '<div class="top-values">' + "".join(rows) + "</div>"


def _stats(column: dict[str, Any]) -> str:
    """min, mean, median, max and sd of a numeric column (min and max of a date) as a row of small figures."""
    if column.get("kind") == "numeric" and column.get("min") is not None:
        quartiles = column.get("quartiles") or [None, None, None]
        pairs = [("min", column["min"]), ("mean", column.get("mean")), ("median", quartiles[1]),
                 ("max", column["max"]), ("sd", column.get("std"))]
    elif column.get("kind") == "temporal" and column.get("min") is not None:
        pairs = [("from", column["min"]), ("to", column["max"])]
    else:
        return ""
    cells = "".join(f'<div><span class="label">{k}</span><span class="value">{html.escape(number(v))}</span></div>'
                    for k, v in pairs)
    return f'<div class="stats">{cells}</div>'


def column_card(column: dict[str, Any], rows: int) -> str:
    """One column of the profile: name and type, missing and distinct, its figures, and a histogram or top values."""
    missing = column.get("missing") or 0
    share = f" ({100 * missing / rows:.0f}%)" if rows and missing else ""
    warn = " warn" if column.get("warnings") else ""
    gaps = f'<span class="missing">{missing:,} missing{share}</span>' if missing else "0 missing"
    plot = _histogram_svg(column) if column.get("histogram") else _top_bars(column)
    warnings = "".join(f'<div class="column-warning">{html.escape(w)}</div>' for w in column.get("warnings") or [])
    return (f'<div class="column-card{warn}"><div class="column-head"><span class="column-name">'
            f'{html.escape(column["name"])}</span><span class="column-type {html.escape(column.get("kind", ""))}">'
            f'{html.escape(column.get("type", ""))}</span></div>'
            f'<div class="column-counts">{gaps}'
            f' · {column.get("distinct") or 0:,} distinct</div>{_stats(column)}{plot}{warnings}</div>')


def profile_html(table: dict[str, Any], profile: dict[str, Any] | None) -> str:
    """A table's profile card: its line, what its load warned about, and one card per column."""
    notes = load_notes(table, profile)
    warning = ""
    if notes:
        warning = ('<div class="data-notes"><strong>Load report</strong><ul>'
                   + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></div>")
    columns = (profile or {}).get("columns") or []
    rows = (profile or {}).get("rows") or table.get("rows") or 0
    cards = "".join(column_card(c, rows) for c in columns)
    return (f'<div class="profile-card"><div class="profile-title">{html.escape(table_line(table))}</div>'
            f'{warning}<div class="column-grid">{cards}</div></div>')


# -- answers ---------------------------------------------------------------------------------------------


def answer_label(answer: Any) -> str:
    """A past answer as the picker lists it: ``#4 · group-by summary · response by condition · 2026-01-02 10:30``."""
    what = answer.question or " ".join((answer.sql or "").split())
    what = what if len(what) <= 70 else what[:69] + "…"
    when = (answer.created or "")[:16].replace("T", " ")
    return f"#{answer.id} · {KIND_LABELS.get(answer.kind, answer.kind)} · {what} · {when}"


def answer_line(answer: Any) -> str:
    """The answer's heading (Markdown, every value escaped): what was asked, how, and how many rows came back."""
    from chatcore.web.views import plain

    kind = KIND_LABELS.get(answer.kind, answer.kind)
    title = plain(answer.question) if answer.question else "SQL query" if answer.kind == "query" else kind.capitalize()
    rows = f"{answer.row_count:,} row{'s' * (answer.row_count != 1)}"
    if answer.truncated:
        rows += f" (the first {len(answer.rows):,}: the rest were cut at the row limit)"
    tables = ", ".join(plain(t["name"]) for t in answer.tables) or "no table"
    return f"**{title}**  \n<sub>answer {answer.id} · {kind} · {rows} · from {tables}</sub>"


def _number_pattern(text: str) -> re.Pattern[str]:
    """A number as written, not inside a longer one (``5`` does not match in ``0.25``)."""
    return re.compile(r"(?<![\d.])" + re.escape(text) + r"(?![\d])")


def narrative_html(narrative: str | None, unverified: list[str]) -> str:
    """The narrative with each number the result does not hold marked ``unverified``, as the library marks
    citations it could not check; ``""`` when there is none."""
    if not narrative:
        return ""
    spans: list[tuple[int, int]] = []
    for value in unverified:
        spans += [(m.start(), m.end()) for m in _number_pattern(str(value)).finditer(narrative)]
    out, at = [], 0
    for start, end in sorted(spans):
        if start < at:
            continue
        out += [html.escape(narrative[at:start]), '<mark class="unverified" title="not in the result: unverified">',
                html.escape(narrative[start:end]), "</mark>"]
        at = end
    out.append(html.escape(narrative[at:]))
    flag = ""
    if unverified:
        listed = ", ".join(html.escape(str(v)) for v in unverified)
        flag = (f'<div class="unverified-line"><span class="badge unverified">unverified</span> '
                f'{len(unverified)} number{"s" * (len(unverified) != 1)} in this text '
                f'{"are" if len(unverified) != 1 else "is"}'
                f' not in the result: {listed}</div>')
    else:
        flag = ('<div class="verified-line"><span class="badge verified">verified</span> every number in this text is '
                'in the result</div>')
    return f'<div class="narrative"><div class="text">{"".join(out)}</div>{flag}</div>'


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, inner in value.items():
            out += _flatten(inner, f"{prefix} · {key}" if prefix else str(key))
        return out
    return [(prefix, value)]


def statistics_html(statistics: dict[str, Any] | None) -> str:
    """An analysis's figures (test statistics, p-values, effect sizes, fit) as a two-column table."""
    if not statistics:
        return ""
    rows = []
    for key, value in _flatten(statistics):
        shown = ", ".join(number(v) for v in value) if isinstance(value, list) else number(value)
        rows.append(f"<tr><th>{html.escape(key.replace('_', ' '))}</th><td>{html.escape(shown)}</td></tr>")
    return f'<table class="data-statistics"><caption>Statistics</caption>{"".join(rows)}</table>'


def record_html(answer: Any) -> str:
    """The reproducibility record: each table read with its hash, the result's hash, and how it ran."""
    tables = "".join(f"<tr><th>table {html.escape(t['name'])}</th><td><code>{html.escape(t['sha256'])}</code></td></tr>"
                     for t in answer.tables)
    extra = "".join(f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{html.escape(number(v))}</td></tr>"
                    for k, v in _flatten(answer.record or {}))
    params = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                     for k, v in (answer.params or {}).items())
    return (f'<table class="data-record">{tables}<tr><th>result</th><td><code>{html.escape(answer.result_sha256)}'
            f'</code></td></tr><tr><th>rows</th><td>{answer.row_count:,}{" (truncated)" if answer.truncated else ""}'
            f'</td></tr>{params}{extra}<tr><th>saved</th><td>{html.escape(answer.created or "")}</td></tr></table>')


def display_rows(rows: list[list[Any]]) -> list[list[Any]]:
    """Result rows for the table component: a missing value shows as an empty cell, and a float without the
    binary noise of its last digits (0.775, not 0.7750000000000001; the CSV keeps every digit)."""
    return [["" if v is None else float(f"{v:.12g}") if isinstance(v, float) else v for v in row] for row in rows]

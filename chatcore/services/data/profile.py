"""A table's profile, computed by DuckDB without any model: per column its type, gaps, spread and shape.

One pass of aggregates gives every column's missing and distinct counts and, for numbers, min, max, mean,
standard deviation and quartiles; then one small query per column gives a 12-bin histogram (numbers and
dates) or the top values (text, booleans). The profile is what a model sees of a table, never its rows.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb

from chatcore.services.data.sandbox import plain
from chatcore.services.data.warehouse import quote_identifier

BINS = 12
TOP = 8
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "FLOAT", "DOUBLE", "REAL")


def column_kind(duck_type: str) -> str:
    """``numeric``, ``temporal``, ``boolean`` or ``text`` for a DuckDB type name."""
    upper = duck_type.upper()
    if upper in _NUMERIC or upper.startswith("DECIMAL"):
        return "numeric"
    if upper.startswith(("DATE", "TIMESTAMP", "TIME")):
        return "temporal"
    if upper == "BOOLEAN":
        return "boolean"
    return "text"


def _aggregates(column: str, kind: str) -> list[str]:
    q = quote_identifier(column)
    parts = [f"count({q})", f"approx_count_distinct({q})"]
    if kind == "numeric":
        # The list form sorts each column once: as fast as approx_quantile's, and exact.
        parts += [f"min({q})", f"max({q})", f"avg({q})", f"stddev_samp({q})", f"quantile_cont({q}, [0.25, 0.5, 0.75])"]
    elif kind == "temporal":
        parts += [f"min({q})", f"max({q})", f"min(epoch({q}))", f"max(epoch({q}))"]
    return parts


def _mostly_numbers(connection: duckdb.DuckDBPyConnection, table: str, names: list[str]) -> dict[str, int]:
    """How many values of each text column that is mostly numbers read as numbers (a few stray words in it).

    Casting every value of every text column is the dearest part of a profile, so a sample of 10,000 rows
    picks the candidates first and only those are counted in full.
    """
    if not names:
        return {}
    counts = ", ".join(f"count(TRY_CAST({quote_identifier(n)} AS DOUBLE)), count({quote_identifier(n)})"
                       for n in names)
    sample = connection.execute(f"SELECT {counts} FROM {quote_identifier(table)} USING SAMPLE 10000 ROWS").fetchone()
    candidates = [n for i, n in enumerate(names) if sample[2 * i + 1] and sample[2 * i] >= sample[2 * i + 1] / 2]
    if not candidates:
        return {}
    full = connection.execute("SELECT " + ", ".join(f"count(TRY_CAST({quote_identifier(n)} AS DOUBLE))"
                                                    for n in candidates) + f" FROM {quote_identifier(table)}").fetchone()
    return {n: int(v) for n, v in zip(candidates, full)}


def _value_sql(column: str, kind: str) -> str:
    q = quote_identifier(column)
    return f"epoch({q})" if kind == "temporal" else f"CAST({q} AS DOUBLE)"


def _histograms(connection: duckdb.DuckDBPyConnection, table: str,
                spans: list[tuple[str, str, float, float, int]]) -> dict[str, dict[str, Any]]:
    """Every column's counts in BINS equal-width bins, in one scan: ``spans`` are (name, kind, low, high, count)."""
    selects, names = [], []
    for name, kind, low, high, _ in spans:
        if high > low:
            width = (high - low) / BINS
            value = _value_sql(name, kind)
            selects.append(f"histogram(least(CAST(floor(({value} - {low!r}) / {width!r}) AS INTEGER), {BINS - 1}))")
            names.append(name)
    found = connection.execute(f"SELECT {', '.join(selects)} FROM {quote_identifier(table)}").fetchone() \
        if selects else ()
    by_name = dict(zip(names, found))
    histograms = {}
    for name, kind, low, high, count in spans:
        if high == low:
            histograms[name] = {"edges": [low, high], "counts": [count]}
            continue
        width = (high - low) / BINS
        counts = [0] * BINS
        for bin_index, n in (by_name[name] or {}).items():
            if bin_index is not None:
                counts[int(bin_index)] = int(n)
        histograms[name] = {"edges": [low + i * width for i in range(BINS + 1)], "counts": counts}
    return histograms


def _top(connection: duckdb.DuckDBPyConnection, table: str, column: str) -> list[list[Any]]:
    q = quote_identifier(column)
    return [[plain(v), int(n)] for v, n in connection.execute(
        f"SELECT {q}, count(*) AS n FROM {quote_identifier(table)} WHERE {q} IS NOT NULL GROUP BY {q}"
        f" ORDER BY n DESC, {q} LIMIT {TOP}").fetchall()]


def profile_table(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, Any]:
    """The profile of ``table``: ``{"rows", "columns": [{name, type, kind, missing, distinct, ...}]}``.

    Three kinds of scan: one of every column's aggregates, one of every histogram, and one group-by per text
    column for its top values (a text column's cast to numbers is counted on a sample first).
    """
    described = connection.execute(f"DESCRIBE {quote_identifier(table)}").fetchall()
    columns = [{"name": r[0], "type": r[1], "kind": column_kind(r[1])} for r in described]
    rows = int(connection.execute(f"SELECT count(*) FROM {quote_identifier(table)}").fetchone()[0])
    selects = ["count(*)"]
    spans: list[tuple[int, int]] = []
    for column in columns:
        parts = _aggregates(column["name"], column["kind"])
        spans.append((len(selects), len(selects) + len(parts)))
        selects += parts
    values = connection.execute(f"SELECT {', '.join(selects)} FROM {quote_identifier(table)}").fetchone()
    numbers = _mostly_numbers(connection, table, [c["name"] for c in columns if c["kind"] == "text"])
    ranges: list[tuple[str, str, float, float, int]] = []
    for column, (start, end) in zip(columns, spans):
        got = values[start:end]
        column["missing"] = rows - int(got[0])
        column["distinct"] = min(int(got[1]), int(got[0]))
        column["warnings"] = []
        if column["kind"] == "numeric":
            low, high, mean, std, quartiles = got[2:7]
            column.update(min=plain(low), max=plain(high), mean=plain(mean), std=plain(std),
                          quartiles=[plain(v) for v in quartiles] if quartiles else None)
            if low is not None and math.isfinite(float(low)) and math.isfinite(float(high)):
                ranges.append((column["name"], "numeric", float(low), float(high), int(got[0])))
        elif column["kind"] == "temporal":
            column.update(min=plain(got[2]), max=plain(got[3]))
            if got[4] is not None:
                ranges.append((column["name"], "temporal", float(got[4]), float(got[5]), int(got[0])))
        else:
            column["top"] = _top(connection, table, column["name"])
            numeric, present = numbers.get(column["name"], 0), int(got[0])
            if column["kind"] == "text" and present and present / 2 <= numeric < present:
                column["warnings"].append(
                    f"mixes numbers and text: {present - numeric:,} of {present:,} values are not numbers, "
                    "so the column is text (TRY_CAST(... AS DOUBLE) reads the numbers)")
        if rows and column["missing"] == rows:
            column["warnings"].append("every value is missing")
    histograms = _histograms(connection, table, ranges)
    for column in columns:
        if column["kind"] in ("numeric", "temporal"):
            column["histogram"] = histograms.get(column["name"])
    return {"rows": rows, "columns": columns}


def describe_for_model(name: str, profile: dict[str, Any], *, top: int = 5) -> str:
    """A table's schema and profile as the lines a model reads before writing SQL (never its rows)."""
    lines = [f"TABLE {name} ({profile['rows']:,} rows)"]
    for c in profile["columns"]:
        line = f"  {c['name']} {c['type']}"
        if c["kind"] == "numeric" and c.get("min") is not None:
            line += f"  -- from {_short(c['min'])} to {_short(c['max'])}, mean {_short(c['mean'])}"
        elif c["kind"] == "temporal" and c.get("min") is not None:
            line += f"  -- from {c['min']} to {c['max']}"
        elif c.get("top"):
            values = ", ".join(repr(v) for v, _ in c["top"][:top])
            line += f"  -- {c['distinct']:,} distinct, e.g. {values}"
        if c["missing"]:
            line += f"; {c['missing']:,} missing"
        lines.append(line)
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

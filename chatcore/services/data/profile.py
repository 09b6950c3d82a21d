"""A table's profile, computed by DuckDB without any model: per column its type, gaps, spread and shape.

One pass of aggregates gives every column's missing and distinct counts and, for numbers, min, max, mean,
standard deviation and quartiles; then one small query per column gives a 12-bin histogram (numbers and
dates) or the top values (text, booleans). The profile is what a model sees of a table, never its rows.
"""

from __future__ import annotations

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
        parts += [f"min({q})", f"max({q})", f"avg({q})", f"stddev_samp({q})",
                  f"quantile_cont({q}, [0.25, 0.5, 0.75])"]
    elif kind == "temporal":
        parts += [f"min({q})", f"max({q})"]
    elif kind == "text":
        # How many values would read as numbers: a column that is mostly numbers holds a few stray words.
        parts += [f"count(TRY_CAST({q} AS DOUBLE))", f"max(length({q}))"]
    return parts


def _histogram(connection: duckdb.DuckDBPyConnection, table: str, column: str, low: Any, high: Any,
               kind: str) -> dict[str, Any] | None:
    """Counts in BINS equal-width bins between ``low`` and ``high`` (epoch seconds for dates)."""
    q = quote_identifier(column)
    value = f"epoch({q})" if kind == "temporal" else f"CAST({q} AS DOUBLE)"
    bounds = connection.execute(f"SELECT min({value}), max({value}) FROM {quote_identifier(table)}").fetchone()
    low_v, high_v = bounds
    if low_v is None or high_v is None:
        return None
    if low_v == high_v:
        return {"edges": [low_v, high_v], "counts": [connection.execute(
            f"SELECT count({q}) FROM {quote_identifier(table)}").fetchone()[0]]}
    width = (high_v - low_v) / BINS
    rows = connection.execute(
        f"SELECT least(CAST(floor(({value} - ?) / ?) AS INTEGER), ?) AS bin, count(*) FROM {quote_identifier(table)}"
        f" WHERE {q} IS NOT NULL GROUP BY bin ORDER BY bin", [low_v, width, BINS - 1]).fetchall()
    counts = [0] * BINS
    for bin_index, count in rows:
        counts[int(bin_index)] = int(count)
    return {"edges": [low_v + i * width for i in range(BINS + 1)], "counts": counts}


def _top(connection: duckdb.DuckDBPyConnection, table: str, column: str) -> list[list[Any]]:
    q = quote_identifier(column)
    return [[plain(v), int(n)] for v, n in connection.execute(
        f"SELECT {q}, count(*) AS n FROM {quote_identifier(table)} WHERE {q} IS NOT NULL GROUP BY {q}"
        f" ORDER BY n DESC, {q} LIMIT {TOP}").fetchall()]


def profile_table(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, Any]:
    """The profile of ``table``: ``{"rows", "columns": [{name, type, kind, missing, distinct, ...}]}``."""
    described = connection.execute(f"DESCRIBE {quote_identifier(table)}").fetchall()
    columns = [{"name": r[0], "type": r[1], "kind": column_kind(r[1])} for r in described]
    selects = ["count(*)"]
    spans: list[tuple[int, int]] = []
    for column in columns:
        parts = _aggregates(column["name"], column["kind"])
        spans.append((len(selects), len(selects) + len(parts)))
        selects += parts
    values = connection.execute(f"SELECT {', '.join(selects)} FROM {quote_identifier(table)}").fetchone()
    rows = int(values[0])
    for column, (start, end) in zip(columns, spans):
        got = values[start:end]
        column["missing"] = rows - int(got[0])
        column["distinct"] = min(int(got[1]), int(got[0]))
        column["warnings"] = []
        if column["kind"] == "numeric":
            low, high, mean, std, quartiles = got[2:7]
            column.update(min=plain(low), max=plain(high), mean=plain(mean), std=plain(std),
                          quartiles=[plain(v) for v in quartiles] if quartiles else None)
            column["histogram"] = _histogram(connection, table, column["name"], low, high, "numeric")
        elif column["kind"] == "temporal":
            column.update(min=plain(got[2]), max=plain(got[3]))
            column["histogram"] = _histogram(connection, table, column["name"], got[2], got[3], "temporal")
        else:
            column["top"] = _top(connection, table, column["name"])
            if column["kind"] == "text":
                numeric, present = int(got[2]), int(got[0])
                if present and present / 2 <= numeric < present:
                    column["warnings"].append(
                        f"mixes numbers and text: {present - numeric:,} of {present:,} values are not numbers, "
                        "so the column is text (TRY_CAST(... AS DOUBLE) reads the numbers)")
        if rows and column["missing"] == rows:
            column["warnings"].append("every value is missing")
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

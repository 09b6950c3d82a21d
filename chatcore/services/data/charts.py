"""Which chart a result's shape fits: a bar per category, a line over ordered x, or a scatter of two measures.

A chart is a plain spec (``{"kind", "x", "y", "title"}``) that each front end draws its own way; ``None`` when
no chart would help (one row, no numeric column, or too many categories to read).
"""

from __future__ import annotations

from typing import Any

from chatcore.services.data.profile import column_kind

MAX_BARS = 40
MAX_POINTS = 5000


def _is_sorted(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    try:
        return all(a < b for a, b in zip(present, present[1:]))
    except TypeError:
        return False


def choose_chart(columns: list[dict[str, str]], rows: list[list[Any]], *, title: str = "") -> dict[str, Any] | None:
    """A chart spec for a result, or ``None`` when its shape fits none."""
    if len(rows) < 2 or len(columns) < 2:
        return None
    kinds = [column_kind(c["type"]) for c in columns]
    numeric = [i for i, k in enumerate(kinds) if k == "numeric"]
    if not numeric:
        return None
    x = 0
    x_values = [row[x] for row in rows]
    y = [columns[i]["name"] for i in numeric if i != x][:3]
    if not y:
        return None
    spec = {"x": columns[x]["name"], "y": y, "title": title}
    if kinds[x] == "temporal" or (kinds[x] == "numeric" and _is_sorted(x_values)):
        return {**spec, "kind": "line"} if len(rows) <= MAX_POINTS else None
    if kinds[x] == "numeric":
        return {**spec, "kind": "scatter", "y": y[:1]} if len(rows) <= MAX_POINTS else None
    if len(rows) > MAX_BARS:
        return None
    return {**spec, "kind": "bar"}

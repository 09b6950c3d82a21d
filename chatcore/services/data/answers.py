"""An answer from data: the query (or computation) that ran, its result, a chart, a narrative, and its record."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("query", "ask", "groupby", "correlation", "compare", "regression")


@dataclass
class Answer:
    """What every front end shows for a question of a table, and what is stored to reproduce it.

    ``sql`` is the query that produced ``rows`` (for a computation, the query that fetched its data; the
    computation's figures are in ``statistics`` and in ``rows`` too). ``tables`` are ``{id, name, sha256}`` of
    the tables it read; ``result_sha256`` the hash of ``columns`` and ``rows``; ``unverified`` the numbers
    of ``narrative`` that the result does not hold.
    """

    kind: str
    sql: str
    columns: list[dict[str, str]]
    rows: list[list[Any]]
    row_count: int
    result_sha256: str
    tables: list[dict[str, Any]]
    truncated: bool = False
    question: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    chart: dict[str, Any] | None = None
    narrative: str | None = None
    statistics: dict[str, Any] | None = None
    unverified: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    created: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Answer":
        """An answer as ``storage.data`` returns it."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in row.items() if k in names}
        values["params"] = values.get("params") or {}
        values["unverified"] = values.get("unverified") or []
        values["record"] = values.get("record") or {}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (the API's body and ``--json``)."""
        return asdict(self)

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    def to_csv(self) -> str:
        """The result as CSV, header first (what "Download CSV" and ``--csv`` write)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.names)
        writer.writerows(["" if v is None else v for v in row] for row in self.rows)
        return buffer.getvalue()

"""Analyses without a model: group-by summaries, a correlation matrix, a two-group comparison, a regression.

Small models are weak at SQL, so these never depend on one. Each gives the same kind of answer as a question
does: the query that fetched its data (shown, editable), a result table, a chart, and a narrative built from
the numbers in that table only.
"""

from __future__ import annotations

from typing import Any

from chatcore.services.data.answers import Answer

ANALYSES = ("groupby", "correlation", "compare", "regression")


def run_analysis(service: Any, owner: str, table: dict[str, Any], kind: str, *, save: bool = True,
                 **params: Any) -> Answer:
    """Run the analysis ``kind`` on ``table`` (a ``storage.data`` row) with its ``params``."""
    raise NotImplementedError("being written (issue 22)")

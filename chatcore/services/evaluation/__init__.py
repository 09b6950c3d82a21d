"""Evaluation: test sets, scorers, runs on one or more models, reports with intervals, and the blind arena."""

from __future__ import annotations

from typing import Any


def for_server(manager: Any, store: Any, library: Any = None) -> tuple[Any, Any]:
    """The ``Evaluations`` and the ``Arena`` a server shares between its page and its API (one of each, so a
    run started in one is followed and cancelled from the other)."""
    from chatcore.services.evaluation.arena import Arena
    from chatcore.services.evaluation.service import Evaluations

    return (Evaluations(store, manager.wait_for, library=library, hold=manager.hold, known=manager.known),
            Arena(store, manager.wait_for, hold=manager.hold))

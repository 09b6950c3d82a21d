"""A question answered by a model writing SQL over the tables in scope: it sees their schemas and profiles,
never their rows; its SQL is checked with EXPLAIN, and an error goes back to it for a retry or two."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from chatcore.services.data.answers import Answer


def ask(service: Any, owner: str, question: str, *, tables: Sequence[str], model: str | None = None,
        seed: int | None = None, retries: int = 2, on_step: Callable[[str], None] | None = None,
        save: bool = True) -> Answer:
    """The model's SQL for ``question``, run in the sandbox, with a chart and a checked narrative."""
    raise NotImplementedError("being written (issue 22)")

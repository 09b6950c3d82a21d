"""The ``chatcore`` command invoked in-process, as the CLI tests drive it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result


def invoker(monkeypatch: Any, *, cache: Path, model: str | Path | None = None) -> Callable[..., Result]:
    """``invoke("docs", "list", ...)`` runs ``chatcore`` with a private model cache and, when given, a model
    (a path that does not exist makes any model load fail loudly); exceptions propagate."""
    from chatcore.cli import main

    monkeypatch.setenv("CHATCORE_CACHE", str(cache))
    if model is not None:
        monkeypatch.setenv("CHATCORE_MODEL", str(model))
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(main, list(args), catch_exceptions=False, **kw)

"""A ``Workspace`` (the web app's service object) over a given engine, with its own home and database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatcore.core.settings import Settings
from chatcore.services.models import ModelManager
from chatcore.web.workspace import Workspace
from storage import Store


def make_workspace(tmp_path: Path, engine: Any, *, model: str = "tiny", stream_interval: float = 0.0) -> Workspace:
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=model, device="cpu", dtype="float32")
    manager = ModelManager(settings, loader=lambda s, progress: engine)
    manager.start()
    manager.wait()
    return Workspace(manager, Store(settings.db_path), stream_interval=stream_interval)


def refusal(call: Any) -> str:
    """The message a page handler refuses with (``gr.Error``); a generator handler is run to its end."""
    import gradio as gr
    import pytest

    with pytest.raises(gr.Error) as refused:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
    return refused.value.message

"""Shared fixtures: isolated ChatCore homes and caches, and a tiny model directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import save_tiny


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own CHATCORE_HOME, so no test touches the user's history."""
    home = tmp_path / "home"
    monkeypatch.setenv("CHATCORE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved as safetensors with its tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The local engine over the tiny model, loaded through the real loader."""
    from chatcore.engine import LocalEngine
    from chatcore.settings import Settings

    settings = Settings(home=tmp_path_factory.mktemp("home"), cache=tmp_path_factory.mktemp("cache"),
                        model=str(tiny_model_dir), device="cpu", dtype="float32")
    return LocalEngine.load(settings)

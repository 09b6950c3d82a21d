"""Shared fixtures: isolated ChatCore homes and caches, and a tiny model directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatcore.testing.tiny import save_tiny


@pytest.fixture(autouse=True, scope="session")
def kernel_builds() -> Path:
    """One build of the C++ kernels for the whole run (and the next ones), whatever cache a test uses.

    It is a re-creatable build product keyed by source, torch and CPU, so sharing it isolates nothing away.
    """
    directory = Path(os.environ.get("CHATCORE_KERNELS") or Path.home() / ".cache" / "chatcore" / "kernels")
    os.environ["CHATCORE_KERNELS"] = str(directory)
    return directory


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
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
    from chatcore.core.settings import Settings
    from chatcore.engine.loader import load_engine

    settings = Settings(home=tmp_path_factory.mktemp("home"), cache=tmp_path_factory.mktemp("cache"),
                        model=str(tiny_model_dir), device="cpu", dtype="float32")
    return load_engine(settings)


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir: Path):
    """The transformers-loop engine (the fallback for non-Llama models) over the same tiny model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatcore.engine.base import ModelInfo, context_window
    from chatcore.engine.hf import TransformersEngine

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    info = ModelInfo(name="tiny-hf", device="cpu", dtype="float32", context_window=context_window(model, tokenizer),
                     weights_sha256="0" * 64, parameters=sum(p.numel() for p in model.parameters()))
    return TransformersEngine(model, tokenizer, info)


@pytest.fixture(params=["tiny_engine", "hf_engine"])
def any_engine(request: pytest.FixtureRequest):
    """Each decoder in turn: ChatCore's fast Llama path and the transformers loop."""
    return request.getfixturevalue(request.param)

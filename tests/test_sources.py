"""Model specs resolve to the right kind of source, and cached models are listed with their size."""

from __future__ import annotations

import pytest

from chatcore.core.errors import ModelError
from chatcore.core.settings import Settings
from chatcore.engine import sources


def test_specs_resolve_by_kind(tiny_model_dir, tmp_path):
    assert sources.resolve("smollm2-135m-instruct").kind == "packaged"
    assert sources.resolve("SmolLM2-135M-Instruct").kind == "packaged"
    assert sources.resolve(str(tiny_model_dir)).kind == "directory"
    assert sources.resolve("HuggingFaceTB/SmolLM2-360M-Instruct").kind == "hub"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert sources.resolve(str(gguf)).kind == "gguf"


@pytest.mark.parametrize("spec", ["", "   ", "no such thing", "../../etc/passwd"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ModelError):
        sources.resolve(spec)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        sources.resolve(str(tmp_path))


def test_corrupt_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    settings = Settings(home=tmp_path / "h", cache=tmp_path / "c")
    with pytest.raises(ModelError, match="could not read GGUF file"):
        sources.ensure_local(str(bad), settings, progress=lambda m: None)
    assert not any((tmp_path / "c" / "models").glob("*"))  # nothing half-written in the cache


def test_list_cached_counts_parameters(tiny_model_dir, tmp_path):
    import shutil

    settings = Settings(home=tmp_path / "h", cache=tmp_path / "c")
    target = settings.models_dir / "tiny"
    shutil.copytree(tiny_model_dir, target)
    (target / sources.MANIFEST).write_text('{"source": "test"}')
    [model] = sources.list_cached(settings)
    assert model.name == "tiny" and model.source == "test"
    assert model.parameters > 10_000 and model.size_bytes > model.parameters * 4 - 1
    assert len(sources.weights_hash(target)) == 64

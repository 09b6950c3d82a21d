"""Which decoder answers: ChatCore's fast Llama decoder where it can, the transformers loop elsewhere,
or a remote OpenAI-compatible server when the settings say so."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from chatcore.core.errors import ModelError
from chatcore.core.settings import Settings
from chatcore.engine import sources
from chatcore.engine.base import Backend
from chatcore.engine.device import resolve_device, resolve_dtype

Progress = Callable[[str], None]


def load_engine(settings: Settings, progress: Progress | None = None) -> Backend:
    """Fetch (if needed) and load ``settings.model`` onto ``settings.device`` in ``settings.dtype``."""
    from transformers import AutoTokenizer

    from chatcore.engine.fast.engine import load_fast
    from chatcore.engine.hf import TransformersEngine

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    directory = Path(sources.ensure_local(settings.model, settings, progress))
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=settings.trust_remote_code)
        fast = load_fast(settings, directory, tokenizer, device, dtype, progress)
        if fast is not None:
            return fast
        return TransformersEngine.from_pretrained(settings, directory, tokenizer, device, dtype)
    except (OSError, ValueError) as exc:
        hint = "" if settings.allow_pickle else " (only safetensors weights load unless --allow-pickle is given)"
        raise ModelError(f"could not load model {settings.model!r} from {directory}: {exc}{hint}") from exc


def load_backend(settings: Settings, progress: Progress | None = None) -> Backend:
    """The backend ``settings`` ask for: the local decoder, or a remote server (``ModelManager``'s loader)."""
    if settings.backend == "local":
        return load_engine(settings, progress)
    if settings.backend == "openai":
        from chatcore.engine.remote import RemoteBackend

        return RemoteBackend.connect(settings, progress)
    raise ModelError(f"unknown backend {settings.backend!r}; use 'local' or 'openai'")

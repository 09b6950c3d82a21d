"""Sentence embeddings for the library's dense retrieval: a transformers encoder, mean-pooled and normalised.

Optional: retrieval works without one (BM25). A user configures one per collection as a Hugging Face id (from
the local cache, or the hub where it is reachable) or a local directory; sentence-transformers models such as
``sentence-transformers/all-MiniLM-L6-v2`` or ``BAAI/bge-small-en-v1.5`` load as plain encoders.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import torch

from chatcore.core.errors import ModelError

MAX_TOKENS = 512


class Encoder:
    """Turns texts into L2-normalised float32 vectors (one row per text)."""

    def __init__(self, name: str, directory: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        if not (directory / "config.json").is_file():  # else transformers answers with a page about sentencepiece
            raise ModelError(f"cannot load the embedding model {name!r}: {directory} has no config.json; "
                             "is it a model directory?")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory)
            self.model = AutoModel.from_pretrained(directory).eval()
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the embedding model {name!r}: {exc}") from exc
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()  # one forward pass at a time: torch's threads already use every core

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Mean-pooled last hidden states over the attention mask, each row of unit length."""
        rows = []
        with self._lock:
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                       max_length=min(MAX_TOKENS, self.tokenizer.model_max_length or MAX_TOKENS),
                                       return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                rows.append(torch.nn.functional.normalize(pooled.float(), dim=-1).numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


def locate(name: str) -> Path:
    """A local directory for ``name``: the directory itself, or a Hugging Face snapshot (cache first)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "tokenizer*"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as exc:
        raise ModelError(f"embedding model {name!r} is neither a local directory nor in the Hugging Face cache, "
                         f"and the hub cannot be reached ({type(exc).__name__})") from exc


@functools.lru_cache(maxsize=4)
def load_encoder(name: str) -> Encoder:
    """The encoder for ``name``, loaded once per process."""
    return Encoder(name, locate(name))

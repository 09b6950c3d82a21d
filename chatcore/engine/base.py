"""What every decoder shares: the facts of its weights, the backend contract, and the first and last
steps of an answer (fit the prompt and draw the seed; assemble text; report usage and timing)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

from chatcore.core.chat import FittedPrompt, Message, build_messages, fit_to_window
from chatcore.core.events import Event, Finished, Started
from chatcore.core.params import GenerationParams


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the weights behind every answer, recorded for reproducibility."""

    name: str
    device: str
    dtype: str
    context_window: int
    weights_sha256: str
    parameters: int


class Backend(Protocol):
    """Anything that answers a chat: the local decoders or a remote OpenAI-compatible server. Local ones also
    have ``count_tokens(text)``; remote ones cannot count, so callers look it up with ``getattr``."""

    @property
    def context_window(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    def stream(self, history: Sequence[Message | dict[str, Any]], params: GenerationParams, *,
               system: str | None = None, cancel: threading.Event | None = None) -> Iterator[Event]: ...


class LocalDecoder:
    """What both local decoders share: a tokenizer, and the facts of their weights in ``info``."""

    tokenizer: Any
    info: ModelInfo

    @property
    def context_window(self) -> int:
        return self.info.context_window

    @property
    def model_name(self) -> str:
        return self.info.name

    def count_tokens(self, text: str) -> int:
        """Tokens that ``text`` takes, without special tokens."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))


def begin_answer(
    tokenizer: Any, history: Sequence[Message | dict[str, Any]], params: GenerationParams, system: str | None,
    window: int,
) -> tuple[FittedPrompt, Started]:
    """What every decoder does first: fit the conversation to the window and draw the seed."""
    fitted = fit_to_window(tokenizer, build_messages(history, system), window=window,
                           max_new_tokens=params.max_new_tokens)
    seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**63)
    return fitted, Started(len(fitted.input_ids), window, fitted.dropped_messages, seed)


def finished_event(
    text: "TextAssembler", reason: str, *, start: float, first_token_at: float | None, fitted: FittedPrompt,
    seed: int, info: ModelInfo, **extra: Any,
) -> Finished:
    """The final event: usage, timing (first token, decode rate after it) and the facts of the weights."""
    end = time.perf_counter()
    n = text.token_count
    decode_rate = (n - 1) / (end - first_token_at) if first_token_at and n > 1 and end > first_token_at else None
    return Finished(
        text=text.text, finish_reason=reason, prompt_tokens=len(fitted.input_ids), completion_tokens=n,  # type: ignore[arg-type]
        ttft_ms=(first_token_at - start) * 1000 if first_token_at else None, decode_tok_s=decode_rate,
        total_ms=(end - start) * 1000, model=info.name, seed=seed, dropped_messages=fitted.dropped_messages,
        extra={"device": info.device, "dtype": info.dtype, "weights_sha256": info.weights_sha256, **extra},
    )


class TextAssembler:
    """Turns tokens into text deltas: holds back half-decoded characters and possible stop-string starts."""

    def __init__(self, tokenizer: Any, stop: Sequence[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self._emitted = 0
        self.text = ""

    @property
    def token_count(self) -> int:
        return len(self._ids)

    def add(self, token_id: int) -> tuple[str, bool]:
        """Add a token; returns the text now safe to show and whether a stop string was hit."""
        self._ids.append(token_id)
        full = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        cut = min((i for i in (full.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text = full[:cut]
            return self._take(len(self.text)), True
        self.text = full
        safe = len(full.rstrip("\ufffd"))  # U+FFFD at the end: a multi-byte character is still incomplete
        # Hold back the longest tail that could still grow into a stop string.
        hold = max((k for s in self._stop for k in range(1, len(s)) if full[:safe].endswith(s[:k])), default=0)
        safe -= hold
        return self._take(safe), False

    def flush(self) -> str:
        """Whatever was held back, at the end of the answer."""
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        delta = self.text[self._emitted : upto]
        self._emitted = upto
        return delta


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends an answer: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def context_window(model: Any, tokenizer: Any) -> int:
    """The model's context length: its position limit, capped by a sane tokenizer limit."""
    window = getattr(model.config, "max_position_embeddings", None) or 2048
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < window:
        window = tok_limit
    return int(window)


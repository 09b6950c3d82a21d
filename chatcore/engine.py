"""The local decoder: prefill once, then one token per step, streaming typed events.

Several threads may stream at once: each request has its own KV cache and random generator, and
model steps interleave under one lock, so every stream advances token by token.
"""

from __future__ import annotations

import inspect
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from chatcore.chat import FittedPrompt, Message, build_messages, fit_to_window
from chatcore.device import resolve_device, resolve_dtype
from chatcore.errors import ModelError
from chatcore.events import Event, Finished, Started, TextDelta
from chatcore.params import GenerationParams
from chatcore.sampling import sample_next
from chatcore.settings import Settings


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the weights behind every answer, recorded for reproducibility."""

    name: str
    device: str
    dtype: str
    context_window: int
    weights_sha256: str
    parameters: int


class LocalEngine:
    """A causal language model from transformers, decoded by ChatCore's own loop."""

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self._step_lock = threading.Lock()
        self._eos_ids = _eos_token_ids(model, tokenizer)
        accepted = inspect.signature(model.forward).parameters
        self._takes_logits_to_keep = "logits_to_keep" in accepted
        # transformers renamed ``past_key_values`` to ``cache`` (5.x); speak whichever this version takes.
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"

    @classmethod
    def load(cls, settings: Settings, progress=None) -> "LocalEngine":
        """Fetch (if needed) and load ``settings.model`` onto ``settings.device`` in ``settings.dtype``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from chatcore import sources

        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        directory = sources.ensure_local(settings.model, settings, progress)
        safe = None if settings.allow_pickle else True  # None lets transformers fall back to pickles
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=settings.trust_remote_code)
            fast = _load_fast(settings, directory, tokenizer, device, dtype, progress)
            if fast is not None:
                return fast
            model = AutoModelForCausalLM.from_pretrained(
                directory, dtype=dtype, use_safetensors=safe, trust_remote_code=settings.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            hint = "" if settings.allow_pickle else " (only safetensors weights load unless --allow-pickle is given)"
            raise ModelError(f"could not load model {settings.model!r} from {directory}: {exc}{hint}") from exc
        model.to(device)
        info = ModelInfo(
            name=settings.model,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            context_window=context_window(model, tokenizer),
            weights_sha256=sources.weights_hash(Path(directory)),
            parameters=sum(p.numel() for p in model.parameters()),
        )
        return cls(model, tokenizer, info)

    @property
    def context_window(self) -> int:
        return self.info.context_window

    @property
    def model_name(self) -> str:
        return self.info.name

    def count_tokens(self, text: str) -> int:
        """Tokens that ``text`` takes, without special tokens."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def stream(
        self,
        history: Sequence[Message | dict[str, Any]],
        params: GenerationParams,
        *,
        system: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Answer the last user message of ``history``: ``Started``, ``TextDelta``s, then ``Finished``."""
        start = time.perf_counter()
        fitted, started = begin_answer(self.tokenizer, history, params, system, self.context_window)
        yield started
        seed = started.seed
        device = self.model.device
        generator = torch.Generator(device=device).manual_seed(seed)
        seen = torch.tensor([fitted.input_ids], device=device)  # [1, S]: prompt and answer, for the penalty
        text = _TextAssembler(self.tokenizer, params.stop)
        reason, first_token_at, cache = "length", None, None
        inputs = seen
        for _ in range(params.max_new_tokens):
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            # Inference mode is thread-local and a consumer may resume this generator on another thread
            # (Gradio does): enter it per step, never across a yield.
            with torch.inference_mode():
                with self._step_lock:
                    logits, cache = self._forward(inputs, cache)  # logits: [1, V]
                token = sample_next(
                    logits, seen, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                    repetition_penalty=params.repetition_penalty, generator=generator,
                )
                inputs = token.view(1, 1)
                if params.repetition_penalty != 1.0:  # only the penalty reads it
                    seen = torch.cat([seen, inputs], dim=1)
            token_id = int(token)
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if token_id in self._eos_ids:
                reason = "stop"
                break
            delta, stopped = text.add(token_id)
            if delta:
                yield TextDelta(delta)
            if stopped:
                reason = "stop"
                break
        tail = text.flush()
        if tail:
            yield TextDelta(tail)
        yield finished_event(text, reason, start=start, first_token_at=first_token_at, fitted=fitted, seed=seed,
                             info=self.info)

    def _forward(self, input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """One model call; the first one prefills the whole prompt. input_ids: [1, S] -> logits [1, V]."""
        keep = {"logits_to_keep": 1} if self._takes_logits_to_keep else {}  # skip the [S, V] prefill logits
        out = self.model(input_ids=input_ids, use_cache=True, **{self._cache_arg: cache}, **keep)
        return out.logits[:, -1, :], getattr(out, self._cache_arg)


def _load_fast(settings: Settings, directory: Any, tokenizer: Any, device: torch.device, dtype: torch.dtype,
               progress: Any) -> Any:
    """ChatCore's own decoder (chatcore.fast) for the Llama family; None means: use the transformers loop."""
    from chatcore.fast.engine import load_fast

    return load_fast(settings, Path(directory), tokenizer, device, dtype, progress)


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
    text: "_TextAssembler", reason: str, *, start: float, first_token_at: float | None, fitted: FittedPrompt,
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


class _TextAssembler:
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


def _eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
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


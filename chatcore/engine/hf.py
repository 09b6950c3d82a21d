"""The transformers decoder: any causal language model, prefilled once, then one token per step.

It serves the models ChatCore's fast decoder does not (``chatcore.engine.fast``); ``chatcore.engine.loader``
chooses. Several threads may stream at once: each request has its own KV cache and random generator, and
model steps interleave under one lock, so every stream advances token by token.
"""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from chatcore.core.chat import Message
from chatcore.core.events import Event, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.engine import sources
from chatcore.engine.base import (
    LocalDecoder,
    ModelInfo,
    TextAssembler,
    begin_answer,
    context_window,
    eos_token_ids,
    finished_event,
)
from chatcore.engine.sampling import sample_next


class TransformersEngine(LocalDecoder):
    """A causal language model from transformers, decoded by ChatCore's own loop."""

    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self._step_lock = threading.Lock()
        self.eos_ids = frozenset(eos_token_ids(model, tokenizer))  # public: tests switch end-of-text off
        accepted = inspect.signature(model.forward).parameters
        self._takes_logits_to_keep = "logits_to_keep" in accepted
        # transformers renamed ``past_key_values`` to ``cache`` (5.x); speak whichever this version takes.
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"

    @classmethod
    def from_pretrained(cls, settings: Settings, directory: Path, tokenizer: Any, device: torch.device,
                        dtype: torch.dtype) -> "TransformersEngine":
        """Load ``directory``'s weights with transformers onto ``device`` in ``dtype``."""
        from transformers import AutoModelForCausalLM

        safe = None if settings.allow_pickle else True  # None lets transformers fall back to pickles
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype, use_safetensors=safe, trust_remote_code=settings.trust_remote_code
        )
        model.to(device)
        info = ModelInfo(
            name=settings.model,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            context_window=context_window(model, tokenizer),
            weights_sha256=sources.weights_hash(directory),
            parameters=sum(p.numel() for p in model.parameters()),
        )
        return cls(model, tokenizer, info)

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
        text = TextAssembler(self.tokenizer, params.stop)
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
            if token_id in self.eos_ids:
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



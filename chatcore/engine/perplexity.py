"""Perplexity of a causal language model on a text, with a sliding window over long texts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from chatcore.core.errors import ParameterError


@dataclass(frozen=True)
class PerplexityResult:
    """exp(mean negative log-likelihood) over every scored token."""

    perplexity: float
    tokens: int  # tokens scored (all but the first)
    mean_nll: float


def perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    window: int = 1024,
    stride: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Score ``text``: each window re-reads ``window - stride`` tokens of context and scores the rest."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < 2:
        raise ParameterError("text", "the text needs at least two tokens to measure perplexity")
    window = max(2, min(window, getattr(model.config, "max_position_embeddings", window)))
    stride = stride or window // 2
    device = next(model.parameters()).device
    total_nll, scored, previous_end = 0.0, 0, 0
    starts = list(range(0, len(ids) - 1, stride))
    with torch.inference_mode():
        for n, begin in enumerate(starts, 1):
            end = min(begin + window, len(ids))
            chunk = torch.tensor([ids[begin:end]], device=device)  # [1, S]
            logits = model(input_ids=chunk).logits.float()  # [1, S, V]
            # Score only the tokens the previous window did not; the first token of the text has no context.
            first = max(previous_end - begin, 1)
            targets = chunk[0, first:]
            nll = F.cross_entropy(logits[0, first - 1 : -1], targets, reduction="sum")
            total_nll += float(nll)
            scored += targets.numel()
            previous_end = end
            if progress:
                progress(n, len(starts))
            if end == len(ids):
                break
    mean = total_nll / scored
    return PerplexityResult(math.exp(mean), scored, mean)

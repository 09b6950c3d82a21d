"""Sampling as a chain of small pure functions over a batch of next-token logits."""

from __future__ import annotations

import torch


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make already-seen tokens less likely (the CTRL rule that transformers uses).

    logits: [B, V]; seen: [B, T] token ids of prompt and answer so far.
    """
    if penalty == 1.0:
        return logits
    picked = torch.gather(logits, 1, seen)
    # Dividing a negative logit would raise it, so negative ones are multiplied instead.
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return logits.scatter(1, seen, picked)


def logits_to_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering; returns probabilities. logits: [B, V]."""
    logits = logits / max(temperature, 1e-5)
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked before it already cover top_p; the best one always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.softmax(logits.float(), dim=-1)


def sample_next(
    logits: torch.Tensor,
    seen: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pick the next token for each row. logits: [B, V] -> [B]."""
    logits = apply_repetition_penalty(logits.float(), seen, repetition_penalty)
    if temperature == 0.0:
        return torch.argmax(logits, dim=-1)
    probs = logits_to_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

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


# Top-p without top-k first looks among this many best tokens, which nearly always hold the nucleus;
# sorting the whole vocabulary (49k tokens for the default model) costs milliseconds a token.
NUCLEUS_CANDIDATES = 1024


def candidates(logits: torch.Tensor, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tokens sampling can pick from, best first: values [B, C], ids [B, C], and the log of the
    total probability mass (over the top-k tokens, or the whole vocabulary) that top-p is measured in."""
    vocab = logits.size(-1)
    if top_k and top_k < vocab:
        values, ids = torch.topk(logits, top_k, dim=-1)
        return values, ids, torch.logsumexp(values, dim=-1, keepdim=True)
    total = torch.logsumexp(logits, dim=-1, keepdim=True)
    if top_p < 1.0 and NUCLEUS_CANDIDATES < vocab:
        values, ids = torch.topk(logits, NUCLEUS_CANDIDATES, dim=-1)
        if bool((torch.logsumexp(values, dim=-1, keepdim=True) - total).exp().ge(top_p).all()):
            return values, ids, total
    if top_p < 1.0:
        values, ids = torch.sort(logits, descending=True, dim=-1)
        return values, ids, total
    return logits, torch.arange(vocab, device=logits.device).expand_as(logits), total


def nucleus_probs(values: torch.Tensor, log_total: torch.Tensor, top_p: float) -> torch.Tensor:
    """Probabilities over sorted candidate values [B, C] after top-p: a token is dropped when the tokens
    ranked before it already cover top_p of the mass; the best one always stays."""
    if top_p < 1.0:
        probs = (values - log_total).exp()
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        values = values.masked_fill(drop, float("-inf"))
    return torch.softmax(values, dim=-1)


def logits_to_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering; returns probabilities. logits: [B, V]."""
    values, ids, log_total = candidates(logits.float() / max(temperature, 1e-5), top_k, top_p)
    probs = torch.zeros_like(logits, dtype=torch.float32)
    return probs.scatter(-1, ids, nucleus_probs(values, log_total, top_p))


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
    values, ids, log_total = candidates(logits / max(temperature, 1e-5), top_k, top_p)
    choice = torch.multinomial(nucleus_probs(values, log_total, top_p), 1, generator=generator)
    return ids.gather(-1, choice).squeeze(-1)

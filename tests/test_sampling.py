"""Sampling filters: the candidate shortcut computes exactly what sorting the whole vocabulary would."""

from __future__ import annotations

import pytest
import torch

from chatcore.engine import sampling


def _reference_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, top-k, then top-p, by masking over the full sorted vocabulary."""
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("spread", [1.0, 8.0])  # flat logits (the nucleus needs the full sort) and peaked ones
@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (0, 0.9), (50, 1.0), (50, 0.95), (3000, 0.5), (0, 0.3)])
def test_filtered_probabilities_equal_the_full_sort(spread, top_k, top_p):
    logits = torch.randn(3, 5000, generator=torch.Generator().manual_seed(0)) * spread
    got = sampling.logits_to_probs(logits, 0.7, top_k, top_p)
    torch.testing.assert_close(got, _reference_probs(logits, 0.7, top_k, top_p), atol=1e-6, rtol=1e-4)


def test_sampled_tokens_stay_inside_the_nucleus():
    logits = torch.randn(1, 5000, generator=torch.Generator().manual_seed(1)) * 8
    allowed = _reference_probs(logits, 1.0, 0, 0.8)[0] > 0
    generator = torch.Generator().manual_seed(2)
    seen = torch.zeros(1, 1, dtype=torch.long)
    picks = {int(sampling.sample_next(logits, seen, temperature=1.0, top_k=0, top_p=0.8, repetition_penalty=1.0,
                                      generator=generator)) for _ in range(200)}
    assert picks and all(allowed[p] for p in picks)
    assert len(picks) > 1  # it samples, not argmax


def test_greedy_is_the_argmax_after_the_repetition_penalty():
    logits = torch.tensor([[1.0, 3.0, 2.9]])
    seen = torch.tensor([[1]])
    kwargs = dict(temperature=0.0, top_k=0, top_p=1.0, generator=None)
    assert int(sampling.sample_next(logits, seen, repetition_penalty=1.0, **kwargs)) == 1
    assert int(sampling.sample_next(logits, seen, repetition_penalty=1.3, **kwargs)) == 2

"""Log-likelihood scoring: lm-evaluation-harness's token split, and sums equal to a direct torch computation."""

from __future__ import annotations

import pytest
import torch

from chatcore.core.errors import ModelError
from chatcore.engine.loglikelihood import encode_pair, loglikelihoods

PAIRS = [
    ("Question: Which gas do plants take in?\nAnswer:", " carbon dioxide"),
    ("Question: Which gas do plants take in?\nAnswer:", " oxygen"),
    ("Question: How many legs has an insect?\nAnswer: ", "six"),  # a trailing space moves to the continuation
    ("The boiling point of water at sea level is", " 100 degrees Celsius, or 212 degrees Fahrenheit"),
]


def direct(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """The log-probability of the continuation's tokens, one sequence at a time, straight from the logits."""
    context_ids = tokenizer.encode(context.rstrip(), add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    tail = whole[len(context_ids):]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([whole])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = [logprobs[len(context_ids) - 1 + i, token] for i, token in enumerate(tail)]
    greedy = all(int(logprobs[len(context_ids) - 1 + i].argmax()) == token for i, token in enumerate(tail))
    return float(sum(picked)), greedy


def test_trailing_space_moves_to_the_continuation(hf_engine):
    head, tail = encode_pair(hf_engine.tokenizer, "Answer: ", "six")
    assert head == hf_engine.tokenizer.encode("Answer:", add_special_tokens=False)
    assert head + tail == hf_engine.tokenizer.encode("Answer: six", add_special_tokens=False)


def test_an_empty_continuation_is_refused(hf_engine):
    with pytest.raises(ModelError, match="adds no token"):
        encode_pair(hf_engine.tokenizer, "Answer:", "")


def test_transformers_loop_equals_a_direct_computation(hf_engine):
    results = loglikelihoods(hf_engine, PAIRS)
    for (context, continuation), result in zip(PAIRS, results):
        expected, greedy = direct(hf_engine.model, hf_engine.tokenizer, context, continuation)
        assert result.logprob == pytest.approx(expected, abs=1e-4)
        assert result.greedy == greedy
        assert result.tokens == len(encode_pair(hf_engine.tokenizer, context, continuation)[1])


def test_fast_decoder_batched_equals_a_direct_computation(tiny_engine):
    """The fast decoder scores a padded batch; its float32 weights are the transformers model's."""
    results = loglikelihoods(tiny_engine, PAIRS)
    for (context, continuation), result in zip(PAIRS, results):
        expected, _ = direct(tiny_engine.model, tiny_engine.tokenizer, context, continuation)
        assert result.logprob == pytest.approx(expected, abs=1e-3)


def test_progress_counts_every_pair(hf_engine):
    seen = []
    loglikelihoods(hf_engine, PAIRS, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(PAIRS), len(PAIRS))


QUESTIONS = [
    ("Question: Which gas do plants take in?\nAnswer:", [" oxygen", " carbon dioxide", " helium", " neon"]),
    ("Question: How many legs has an insect?\nAnswer:", [" six", " eight legs and two antennae"]),
    ("The boiling point of water at sea level is", [" 100 degrees Celsius", " 212 degrees Celsius", " cold"]),
]


def test_packed_choices_equal_each_pair_scored_alone(tiny_engine):
    """The fast decoder packs a question's choices after one context; each equals its own full pass."""
    from chatcore.engine.loglikelihood import choice_loglikelihoods

    packed = choice_loglikelihoods(tiny_engine, QUESTIONS)
    for (context, choices), results in zip(QUESTIONS, packed):
        assert len(results) == len(choices)
        for choice, result in zip(choices, results):
            expected, greedy = direct(tiny_engine.model, tiny_engine.tokenizer, context, choice)
            assert result.logprob == pytest.approx(expected, abs=1e-3)
            assert result.tokens == len(encode_pair(tiny_engine.tokenizer, context, choice)[1])
            assert result.greedy == greedy


def test_choices_on_the_transformers_loop_are_scored_as_pairs(hf_engine):
    from chatcore.engine.loglikelihood import choice_loglikelihoods

    results = choice_loglikelihoods(hf_engine, QUESTIONS)
    flat = loglikelihoods(hf_engine, [(c, x) for c, xs in QUESTIONS for x in xs])
    assert [r.logprob for rs in results for r in rs] == pytest.approx([r.logprob for r in flat], abs=1e-6)


def test_a_question_longer_than_a_packed_row_is_scored_as_pairs(tiny_engine, monkeypatch):
    from chatcore.engine import loglikelihood
    from chatcore.engine.loglikelihood import choice_loglikelihoods

    whole = choice_loglikelihoods(tiny_engine, QUESTIONS)
    monkeypatch.setattr(loglikelihood, "PACKED_ROW_TOKENS", 14)  # the first two questions no longer fit a row
    mixed = choice_loglikelihoods(tiny_engine, QUESTIONS)
    assert [r.logprob for rs in mixed for r in rs] == pytest.approx([r.logprob for rs in whole for r in rs], abs=1e-3)

"""Log-likelihoods of continuations after a context, computed as lm-evaluation-harness computes them.

Multiple-choice scoring by likelihood (lm-eval's ``acc`` and ``acc_norm``) needs the model's probability
of each choice's tokens after the question. Only an app that owns its decoder can offer it: an
OpenAI-compatible server returns no prompt log-probabilities.

The rules follow lm-eval's ``HFLM`` so that the same items give the same numbers:
- a context's trailing spaces move to the continuation, and the continuation's tokens are those of
  ``context + continuation`` past the tokens of ``context`` alone (``_encode_pair``);
- no special tokens are added (``add_special_tokens=False``), and the input is cut from the left to the
  model's window plus one;
- a continuation is greedy when every one of its tokens is the argmax at its position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from chatcore.core.errors import ModelError

# Rows of one forward pass are capped by their padded size, so a batch of long items cannot take the
# machine's memory; the logits [B, S, V] dominate (V = 49,152 for the default model).
BATCH_LOGIT_ELEMENTS = 64 * 1024 * 1024

Logits = Callable[[torch.Tensor], torch.Tensor]  # tokens [B, S] -> logits [B, S, V]


@dataclass(frozen=True)
class Continuation:
    """The log-likelihood of one continuation's tokens after its context."""

    logprob: float
    greedy: bool
    tokens: int


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The context's and the continuation's token ids, split as lm-evaluation-harness splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    head = tokenizer.encode(context, add_special_tokens=False)
    if not continuation or len(whole) <= len(head):
        raise ModelError(f"the continuation {continuation!r} adds no token to its context")
    return head, whole[len(head):]


def logits_of(backend: Any) -> Logits:
    """How ``backend`` computes logits for a batch: the weights exactly as they answer (quantized or not)."""
    decoder = getattr(backend, "decoder", None)
    if decoder is not None and hasattr(decoder, "score"):  # the fast engine: its own forward, no cache
        return decoder.score
    model = getattr(backend, "model", None)
    if model is not None and hasattr(model, "forward"):  # the transformers loop
        return lambda tokens: model(input_ids=tokens).logits
    raise ModelError("log-likelihood scoring needs a local model: a remote server does not return the "
                     "log-probabilities of a prompt; use a generating scorer (choice, exact, f1) instead")


def loglikelihoods(backend: Any, pairs: Sequence[tuple[str, str]], *,
                   progress: Callable[[int, int], None] | None = None) -> list[Continuation]:
    """The log-likelihood of each ``(context, continuation)``, in order, on ``backend``'s local weights."""
    tokenizer, window = backend.tokenizer, backend.context_window
    logits_fn = logits_of(backend)
    device = _device(backend)
    encoded = []
    for context, continuation in pairs:
        head, tail = encode_pair(tokenizer, context, continuation)
        encoded.append(((head + tail)[-(window + 1):][:-1], tail))  # the input, as lm-eval cuts it
    vocab = _vocab_size(backend)
    # Longest first, like lm-eval: the first batch is the largest, so memory trouble shows at once.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    results: list[Continuation | None] = [None] * len(encoded)
    done, position = 0, 0
    with torch.inference_mode():
        while position < len(order):
            longest = len(encoded[order[position]][0])
            rows = max(1, BATCH_LOGIT_ELEMENTS // max(1, longest * vocab))
            batch = order[position:position + rows]
            position += len(batch)
            tokens = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, index in enumerate(batch):  # right-padded: causal attention never reads the padding
                ids = encoded[index][0]
                tokens[row, :len(ids)] = torch.tensor(ids)
            logprobs = torch.log_softmax(logits_fn(tokens.to(device)).float(), dim=-1).cpu()
            for row, index in enumerate(batch):
                inputs, tail = encoded[index]
                scored = logprobs[row, len(inputs) - len(tail):len(inputs)]  # [T, V]: the continuation's positions
                target = torch.tensor(tail)
                results[index] = Continuation(
                    logprob=float(scored.gather(1, target[:, None]).sum()),
                    greedy=bool((scored.argmax(dim=-1) == target).all()), tokens=len(tail))
            done += len(batch)
            if progress:
                progress(done, len(encoded))
    return results  # type: ignore[return-value]


def _device(backend: Any) -> torch.device:
    decoder = getattr(backend, "decoder", None)
    if decoder is not None and hasattr(decoder, "device"):
        return decoder.device
    return next(backend.model.parameters()).device


def _vocab_size(backend: Any) -> int:
    config = getattr(backend, "config", None) or getattr(getattr(backend, "model", None), "config", None)
    return int(getattr(config, "vocab_size", 0) or len(backend.tokenizer))

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

# Tokens in one packed forward pass (questions with their choices side by side, padded to the longest).
PACKED_BATCH_TOKENS = 4096

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


def choice_loglikelihoods(backend: Any, requests: Sequence[tuple[str, Sequence[str]]], *,
                          progress: Callable[[int, int], None] | None = None) -> list[list[Continuation]]:
    """Each context's continuations (a question's choices), scored as ``loglikelihoods`` scores pairs.

    On the fast decoder the context is computed once per question: its choices sit side by side after it
    in one packed sequence, each seeing the context and itself, and only the positions that predict a
    choice's tokens go through the output layer. For four one-word choices after a 20-token question that
    is ~30 tokens instead of lm-eval's ~90. Other backends score the pairs one by one.
    """
    decoder = getattr(backend, "decoder", None)
    if decoder is None or not hasattr(decoder, "score_packed"):
        flat = [(context, continuation) for context, continuations in requests for continuation in continuations]
        results = iter(loglikelihoods(backend, flat, progress=progress))
        return [[next(results) for _ in continuations] for _, continuations in requests]
    tokenizer, window = backend.tokenizer, backend.context_window
    packed: list[tuple[int, list[int], list[list[int]]]] = []  # (request, context ids, each continuation's ids)
    out: list[list[Continuation] | None] = [None] * len(requests)
    too_long = []
    for index, (context, continuations) in enumerate(requests):
        pairs = [encode_pair(tokenizer, context, continuation) for continuation in continuations]
        head, tails = pairs[0][0], [tail for _, tail in pairs]
        if any(h != head for h, _ in pairs) or len(head) + sum(map(len, tails)) > window:
            too_long.append(index)  # rare: scored as pairs, cut from the left as lm-eval cuts them
        else:
            packed.append((index, head, tails))
    for index, results in zip(too_long, choice_loglikelihoods_as_pairs(backend, [requests[i] for i in too_long])):
        out[index] = results
    packed.sort(key=lambda entry: -(len(entry[1]) + sum(map(len, entry[2]))))
    done, position = len(too_long), 0
    with torch.inference_mode():
        while position < len(packed):
            longest = len(packed[position][1]) + sum(map(len, packed[position][2]))
            batch = packed[position:position + max(1, PACKED_BATCH_TOKENS // longest)]
            position += len(batch)
            for (index, _, _), results in zip(batch, _score_packed(decoder, batch, longest)):
                out[index] = results
            done += len(batch)
            if progress:
                progress(done, len(requests))
    return out  # type: ignore[return-value]


def choice_loglikelihoods_as_pairs(backend: Any, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[Continuation]]:
    """``choice_loglikelihoods`` one (context, continuation) pair at a time."""
    flat = [(context, continuation) for context, continuations in requests for continuation in continuations]
    results = iter(loglikelihoods(backend, flat)) if flat else iter(())
    return [[next(results) for _ in continuations] for _, continuations in requests]


def _score_packed(decoder: Any, batch: list[tuple[int, list[int], list[list[int]]]],
                  length: int) -> list[list[Continuation]]:
    """One forward pass over a batch of packed questions (right-padded to ``length``)."""
    size = len(batch)
    tokens = torch.zeros((size, length), dtype=torch.long)
    positions = torch.zeros((size, length), dtype=torch.long)
    segment = torch.full((size, length), -2, dtype=torch.long)  # -1: the context; n: continuation n; -2: padding
    rows, targets, owners = [], [], []  # the places whose logits predict a continuation token, and that token
    for b, (_, head, tails) in enumerate(batch):
        n = len(head)
        tokens[b, :n] = torch.tensor(head)
        positions[b, :n] = torch.arange(n)
        segment[b, :n] = -1
        start = n
        for c, tail in enumerate(tails):
            tokens[b, start:start + len(tail)] = torch.tensor(tail)
            positions[b, start:start + len(tail)] = torch.arange(n, n + len(tail))
            segment[b, start:start + len(tail)] = c
            # The first token is predicted by the context's last place, each later one by the token before it.
            places = [n - 1] + list(range(start, start + len(tail) - 1))
            rows += [(b, place) for place in places]
            targets += tail
            owners += [(b, c)] * len(tail)
            start += len(tail)
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    # A token sees the context and its own continuation, causally; padding sees only itself (no empty row).
    mask = causal & ((key == -1) | (key == query)) & (query != -2)
    mask |= torch.eye(length, dtype=torch.bool)
    device = decoder.device
    logits = decoder.score_packed(tokens.to(device), positions.to(device), mask[:, None].to(device),
                                  torch.tensor(rows, device=device))
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    target = torch.tensor(targets)
    picked = logprobs.gather(1, target[:, None])[:, 0]
    greedy = logprobs.argmax(dim=-1) == target
    sums: dict[tuple[int, int], list[float]] = {}
    hits: dict[tuple[int, int], bool] = {}
    for owner, value, hit in zip(owners, picked.tolist(), greedy.tolist()):
        sums.setdefault(owner, []).append(value)
        hits[owner] = hits.get(owner, True) and hit
    return [[Continuation(sum(sums[(b, c)]), hits[(b, c)], len(tail)) for c, tail in enumerate(tails)]
            for b, (_, _, tails) in enumerate(batch)]


def _device(backend: Any) -> torch.device:
    decoder = getattr(backend, "decoder", None)
    if decoder is not None and hasattr(decoder, "device"):
        return decoder.device
    return next(backend.model.parameters()).device


def _vocab_size(backend: Any) -> int:
    config = getattr(backend, "config", None) or getattr(getattr(backend, "model", None), "config", None)
    return int(getattr(config, "vocab_size", 0) or len(backend.tokenizer))

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

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from chatcore.core.errors import ModelError

# Rows of one forward pass are capped by their padded size, so a batch of long items cannot take the
# machine's memory; the logits [B, S, V] dominate (V = 49,152 for the default model).
BATCH_LOGIT_ELEMENTS = 64 * 1024 * 1024

# Packed multiple choice: places in one row (several questions, each with its choices side by side) and in
# one forward pass. Rows are kept short because masked attention over a row costs its length squared.
PACKED_ROW_TOKENS = 256
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

    On the fast decoder a question's context is computed once: its choices sit side by side after it, each
    seeing the context and itself, and several questions share a row, each seeing only itself. As in
    lm-eval, a choice's last token is never input (it predicts nothing scored), and only the places that
    predict a choice's tokens go through the output layer. Four one-word choices after a 20-token question
    cost ~20 tokens instead of lm-eval's ~90. Other backends score the pairs one by one.
    """
    decoder = getattr(backend, "decoder", None)
    if decoder is None or not hasattr(decoder, "score_packed"):
        return choice_loglikelihoods_as_pairs(backend, requests, progress=progress)
    tokenizer, window = backend.tokenizer, backend.context_window
    questions: list[tuple[int, list[int], list[list[int]]]] = []  # (request, context ids, each choice's ids)
    out: list[list[Continuation] | None] = [None] * len(requests)
    too_long = []
    for index, (context, continuations) in enumerate(requests):
        pairs = [encode_pair(tokenizer, context, continuation) for continuation in continuations]
        head, tails = pairs[0][0], [tail for _, tail in pairs]
        if any(h != head for h, _ in pairs) or _packed_length(head, tails) > min(window, PACKED_ROW_TOKENS):
            too_long.append(index)  # rare: scored as pairs, cut from the left as lm-eval cuts them
        else:
            questions.append((index, head, tails))
    for index, results in zip(too_long, choice_loglikelihoods_as_pairs(backend, [requests[i] for i in too_long])):
        out[index] = results
    rows = _fill_rows(questions)
    done, per_call = len(too_long), max(1, PACKED_BATCH_TOKENS // PACKED_ROW_TOKENS)
    with torch.inference_mode():
        for start in range(0, len(rows), per_call):
            batch = rows[start:start + per_call]
            for (index, _, _), results in _score_packed(decoder, batch):
                out[index] = results
            done += sum(len(row) for row in batch)
            if progress:
                progress(done, len(requests))
    return out  # type: ignore[return-value]


def choice_loglikelihoods_as_pairs(backend: Any, requests: Sequence[tuple[str, Sequence[str]]], *,
                                   progress: Callable[[int, int], None] | None = None) -> list[list[Continuation]]:
    """``choice_loglikelihoods`` one (context, continuation) pair at a time, as lm-eval computes them."""
    flat = [(context, continuation) for context, continuations in requests for continuation in continuations]
    results = iter(loglikelihoods(backend, flat, progress=progress)) if flat else iter(())
    return [[next(results) for _ in continuations] for _, continuations in requests]


Question = tuple[int, list[int], list[list[int]]]


def _packed_length(head: list[int], tails: list[list[int]]) -> int:
    """The places a question takes in a row: its context, then each choice but its last token."""
    return len(head) + sum(len(tail) - 1 for tail in tails)


def _fill_rows(questions: list[Question]) -> list[list[Question]]:
    """Questions into rows of about equal length (at most ``PACKED_ROW_TOKENS`` places), longest first into the
    first row with room: rows are padded to the longest, so equal rows waste least."""
    if not questions:
        return []
    sizes = [_packed_length(head, tails) for _, head, tails in questions]
    count = math.ceil(sum(sizes) / PACKED_ROW_TOKENS)
    capacity = min(PACKED_ROW_TOKENS, max(max(sizes), math.ceil(sum(sizes) / count * 1.1)))
    rows: list[list[Question]] = []
    room: list[int] = []
    for question in sorted(questions, key=lambda q: -_packed_length(q[1], q[2])):
        size = _packed_length(question[1], question[2])
        slot = next((i for i, free in enumerate(room) if free >= size), None)
        if slot is None:
            rows.append([])
            room.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(question)
        room[slot] -= size
    return rows


def _score_packed(decoder: Any, rows: list[list[Question]]) -> list[tuple[Question, list[Continuation]]]:
    """One forward pass over rows of packed questions (right-padded to the longest row)."""
    length = max(sum(_packed_length(h, t) for _, h, t in row) for row in rows)
    size = len(rows)
    tokens = torch.zeros((size, length), dtype=torch.long)
    positions = torch.zeros((size, length), dtype=torch.long)
    question_of = torch.full((size, length), -1, dtype=torch.long)  # which question of the row; -1: padding
    segment = torch.full((size, length), -1, dtype=torch.long)  # -1: the context; n: choice n
    places, targets, owners = [], [], []  # the places whose logits predict a choice's token, and that token
    for r, row in enumerate(rows):
        start = 0
        for q, (_, head, tails) in enumerate(row):
            n = len(head)
            tokens[r, start:start + n] = torch.tensor(head)
            positions[r, start:start + n] = torch.arange(n)
            question_of[r, start:start + n] = q
            context_end, start = start + n, start + n
            for c, tail in enumerate(tails):
                inputs = tail[:-1]  # the last token is only predicted, never input
                end = start + len(inputs)
                tokens[r, start:end] = torch.tensor(inputs, dtype=torch.long)
                positions[r, start:end] = torch.arange(n, n + len(inputs))
                question_of[r, start:end] = q
                segment[r, start:end] = c
                # The first token is predicted by the context's last place, each later one by the token before.
                places += [(r, context_end - 1)] + [(r, place) for place in range(start, end)]
                targets += tail
                owners += [(r, q, c)] * len(tail)
                start = end
    causal = torch.ones((length, length), dtype=torch.bool).tril()
    same_question = question_of[:, :, None] == question_of[:, None, :]
    key_segment, query_segment = segment[:, None, :], segment[:, :, None]
    # A place sees its own question's context and its own choice, causally; padding sees only itself.
    mask = causal & same_question & ((key_segment == -1) | (key_segment == query_segment))
    mask |= torch.eye(length, dtype=torch.bool)
    device = decoder.device
    logits = decoder.score_packed(tokens.to(device), positions.to(device), mask[:, None].to(device),
                                  torch.tensor(places, device=device))
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    target = torch.tensor(targets)
    picked = logprobs.gather(1, target[:, None])[:, 0].tolist()
    greedy = (logprobs.argmax(dim=-1) == target).tolist()
    sums: dict[tuple[int, int, int], float] = {}
    hits: dict[tuple[int, int, int], bool] = {}
    for owner, value, hit in zip(owners, picked, greedy):
        sums[owner] = sums.get(owner, 0.0) + value
        hits[owner] = hits.get(owner, True) and hit
    return [(question, [Continuation(sums[(r, q, c)], hits[(r, q, c)], len(tail))
                        for c, tail in enumerate(question[2])])
            for r, row in enumerate(rows) for q, question in enumerate(row)]


def _device(backend: Any) -> torch.device:
    decoder = getattr(backend, "decoder", None)
    if decoder is not None and hasattr(decoder, "device"):
        return decoder.device
    return next(backend.model.parameters()).device


def _vocab_size(backend: Any) -> int:
    config = getattr(backend, "config", None) or getattr(getattr(backend, "model", None), "config", None)
    return int(getattr(config, "vocab_size", 0) or len(backend.tokenizer))

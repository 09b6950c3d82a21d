"""Continuous batching: one worker thread owns the decoder; requests join the running batch.

Each request holds a slot of the static KV cache. Every loop the worker admits waiting requests
(prefilling them into free slots: those that arrive together in one call where the decoder can), then
runs one decode step for all running slots together and hands every request its next token.
Cancelling or finishing frees the slot before the next step.

Prefixes are reused. Each slot remembers which tokens its cache holds (a prompt and the answer fed
after it), and a step only writes to the slots it decodes, so a finished request's keys and values
stay valid. A new prompt is prefilled only from where it stops matching the longest of them: the next
turn of a conversation resends its whole history, and requests share a system prompt and a chat
template. The matching prefix is copied first when another slot holds it.

The cache starts as uninitialised memory (``torch.empty``), and torch's step reads every one of its
rows up to the batch's common length, past what a short request ever wrote. Masked-out positions
still enter the arithmetic (a NaN key gives a NaN score, and 0 * NaN is NaN for a value), so before
each step the scheduler makes sure every position the step reads holds finite numbers: each slot
keeps a high-water mark below which it is finite (written by a request, or zeroed once), and the
range up to the step's length is zeroed where a slot's mark is below it. The C++ step reads only
positions that requests wrote, so an engine on it passes no ``clear``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from chatcore.core.params import GenerationParams
from chatcore.engine.sampling import sample_next

# Attention reads the cache up to the longest running sequence, rounded up to this many positions,
# so the step's shapes change rarely.
LENGTH_BUCKET = 128
# A prefix held by another slot is copied when it saves at least this many tokens of prefill over the
# new request's own slot (a copy is one small tensor copy per layer; a token's prefill costs more).
MIN_COPIED_PREFIX = 4


@dataclass
class Done:
    """The last item a request's queue receives: why it ended, or the error that ended it."""

    reason: str  # "stop", "length", "cancelled" or "error"
    error: BaseException | None = None


@dataclass
class Request:
    prompt: list[int]
    params: GenerationParams
    generator: torch.Generator
    cancel: threading.Event | None  # the caller's stop button
    eos_ids: frozenset[int]
    out: "queue.SimpleQueue[int | Done]" = field(default_factory=queue.SimpleQueue)
    abandoned: threading.Event = field(default_factory=threading.Event)  # the consumer stopped listening
    slot: int = -1
    pos: int = 0  # cache position the next fed token is written to
    last: int = 0  # the token to feed next
    produced: int = 0
    reused: int = 0  # leading prompt tokens whose keys and values a slot already held
    seen: torch.Tensor | None = None  # [1, T] prompt and answer, for the repetition penalty

    @property
    def stopped(self) -> bool:
        return self.abandoned.is_set() or (self.cancel is not None and self.cancel.is_set())


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run this thread's torch ops on itself alone (the setting is per thread; the others keep theirs).

    Why: sampling is a few small ops a token. On torch's thread team each one wakes the team, whose
    threads then spin for a while on the cores the decoder's own workers need; with a browser or
    another busy process on the machine, a parallel op also waits for a team thread the OS has put
    aside. One thread does the whole sampling in a fraction of a millisecond.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _plain_greedy(request: Request) -> bool:
    """Greedy with no repetition penalty: the next token is the argmax of the logits."""
    return request.params.temperature == 0.0 and request.params.repetition_penalty == 1.0


class Scheduler:
    """Runs ``prefill(tokens [1, S], slot, start) -> logits [1, V]`` (the tokens go to positions start..)
    and ``decode(tokens [B], pos [B], slots [B], length) -> logits [B, V]`` for up to ``slots``
    concurrent requests on one worker thread. ``clear(slot, start, end)`` zeroes cache positions ahead of
    a step that reads them (``None``: it never does). ``copy(source, target, n)`` copies a slot's cache
    positions below n to another; without it only a request's own slot's prefix is reused.
    ``prefill_together([(tokens [1, S], slot, start), ...]) -> logits [n, V]`` prefills the prompts that
    arrive together in one call, up to ``together_rows`` tokens in all; without it, one call each."""

    def __init__(self, prefill: Callable, decode: Callable, *, slots: int, length: int,
                 clear: Callable[[int, int, int], None] | None, device: torch.device,
                 argmax: Callable[[torch.Tensor], list[int]] | None = None,
                 copy: Callable[[int, int, int], None] | None = None, reuse_prefixes: bool = True,
                 prefill_together: Callable[[list[tuple[torch.Tensor, int, int]]], torch.Tensor] | None = None,
                 together_rows: int = 0) -> None:
        self._prefill, self._decode, self._clear, self._copy = prefill, decode, clear, copy
        self._prefill_together, self.together_rows = prefill_together, together_rows
        self._argmax = argmax or (lambda logits: logits.argmax(dim=-1).tolist())
        self.slots, self.length, self.device = slots, length, device
        self.reuse_prefixes = reuse_prefixes
        self._waiting: "queue.SimpleQueue[Request]" = queue.SimpleQueue()
        self._running: dict[int, Request] = {}  # slot -> request
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._finite = [0] * slots  # cache positions below this in each slot hold finite numbers
        self._held: list[list[int]] = [[] for _ in range(slots)]  # the tokens at each slot's positions 0..
        self._started = [0] * slots  # when each slot's last request started, by _admitted
        self._admitted = 0
        self.steps = 0  # decode steps run, and the rows they carried (for the batching tests)
        self.rows = 0
        self.prefilled = 0  # prompt tokens run through the model, and those a held prefix spared
        self.reused = 0
        self.prefill_calls = 0  # calls that prefilled prompts (several prompts may share one)

    def submit(self, request: Request) -> Request:
        """Queue a request; its tokens arrive on ``request.out``, ending with a ``Done``."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="chatcore-decoder", daemon=True)
                self._thread.start()
        self.enqueue(request)
        self._wake.set()
        return request

    def enqueue(self, request: Request) -> Request:
        """Queue a request without waking or starting the worker: for driving the scheduler by hand
        (``admit`` and ``step``, as tests do to be deterministic)."""
        self._waiting.put(request)
        return request

    @property
    def running(self) -> int:
        return len(self._running)

    # The worker ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self.admit()
            if not self._running:
                self._wake.wait()
                self._wake.clear()
                continue
            self.step()

    def admit(self) -> None:
        """Take waiting requests into free slots and prefill them: those that arrive together in as few
        calls as ``prefill_together`` allows, except that a prompt sharing a beginning with one of them
        waits for it, to copy what it computed."""
        free = [s for s in range(self.slots) if s not in self._running]
        together: list[tuple[Request, int, int]] = []  # (request, slot, start): taken, not yet prefilled
        while free:
            try:
                request = self._waiting.get_nowait()
            except queue.Empty:
                break
            if request.stopped:
                request.out.put(Done("cancelled"))
                continue
            matched = self._matched(request)
            if together and self._continues_one_of(request, together, max(matched)):
                free += self._prefill_taken(together)
                together, matched = [], self._matched(request)
            slot = self._pick_slot(matched, free)
            free.remove(slot)
            try:
                start = self._take(request, slot, matched)
            except Exception as exc:  # noqa: BLE001 - reported to the one request it broke
                request.out.put(Done("error", exc))
                free.append(slot)
                continue
            rows = sum(len(r.prompt) - s for r, _, s in together) + len(request.prompt) - start
            if together and rows > self.together_rows:
                free += self._prefill_taken(together)
                together = []
            together.append((request, slot, start))
            if self._prefill_together is None:
                free += self._prefill_taken(together)
                together = []
        if together:
            self._prefill_taken(together)

    def _matched(self, request: Request) -> list[int]:
        """How much of the prompt each slot holds (nothing, with reuse off), worked out once for choosing a
        slot and a prefix."""
        return [common_prefix(tokens, request.prompt) if self.reuse_prefixes else 0 for tokens in self._held]

    def _continues_one_of(self, request: Request, together: list[tuple[Request, int, int]], held: int) -> bool:
        """Whether the prompt shares more with a taken, not yet prefilled prompt than with any slot's
        cache (``held`` tokens): then it is worth waiting for that prompt's keys and values."""
        return self.reuse_prefixes and any(
            common_prefix(other.prompt, request.prompt) >= held + MIN_COPIED_PREFIX for other, _, _ in together)

    def _pick_slot(self, matched: list[int], free: list[int]) -> int:
        """The free slot that holds the longest prefix of the prompt (``matched[slot]`` tokens of it),
        else the one whose request started longest ago: what the other free slots hold stays for the
        requests that continue it."""
        def shared(slot: int) -> int:
            return matched[slot] if matched[slot] >= MIN_COPIED_PREFIX else 0

        return max(free, key=lambda slot: (shared(slot), -self._started[slot]))

    def _take(self, request: Request, slot: int, matched: list[int]) -> int:
        """Give the request ``slot`` with the longest held prefix of its prompt in it; returns that
        prefix's length, where its prefill starts."""
        request.seen = torch.tensor([request.prompt], device=self.device)
        start = self._reuse_prefix(len(request.prompt), slot, matched)
        self._held[slot] = request.prompt[:start]  # the prefill overwrites what the slot held past start
        return start

    def _prefill_taken(self, taken: list[tuple[Request, int, int]]) -> list[int]:
        """Prefill taken requests (one call when there are several and ``prefill_together``), start them;
        returns the slots of those that failed, free again."""
        try:
            self.prefill_calls += 1
            if len(taken) > 1 and self._prefill_together is not None:
                logits = self._prefill_together([(request.seen[:, start:], slot, start)
                                                 for request, slot, start in taken])
            else:
                [(request, slot, start)] = taken
                logits = self._prefill(request.seen[:, start:], slot, start)  # [1, V]
        except Exception as exc:  # noqa: BLE001 - reported to the requests it broke
            for request, _, _ in taken:
                request.out.put(Done("error", exc))
            return [slot for _, slot, _ in taken]
        failed = []
        for row, (request, slot, start) in enumerate(taken):
            try:
                self._start(request, slot, start, logits[row : row + 1])
            except Exception as exc:  # noqa: BLE001 - _emit (sampling) may fail after the slot was taken
                self._running.pop(slot, None)
                request.out.put(Done("error", exc))
                failed.append(slot)
        return failed

    def _start(self, request: Request, slot: int, start: int, logits: torch.Tensor) -> None:
        """The request's prompt is in its slot's cache: it runs from the next step, with its first token
        sampled from ``logits`` [1, V]."""
        n = len(request.prompt)
        self._held[slot] = list(request.prompt)
        self._admitted += 1
        self._started[slot] = self._admitted
        self._finite[slot] = max(self._finite[slot], n)  # the prompt's positions are written now
        self.prefilled += n - start
        self.reused += start
        request.slot, request.pos, request.reused = slot, n, start
        self._running[slot] = request
        self._emit(request, logits)

    def _reuse_prefix(self, n: int, slot: int, matched: list[int]) -> int:
        """Put the longest held prefix of an n-token prompt (``matched[s]`` tokens of it in slot s) into
        ``slot``'s cache; returns its length.

        The last prompt token is always run: its logits choose the first new token.
        """
        limit = max(0, n - 1)
        source, best = slot, min(limit, matched[slot])
        if self._copy is not None:
            for other in range(self.slots):
                shared = min(limit, matched[other])
                if other != slot and shared >= best + MIN_COPIED_PREFIX:
                    source, best = other, shared
        if source != slot:
            self._held[slot] = []  # a copy that fails half-way leaves nothing known
            self._copy(source, slot, best)  # positions below best of a running request never change
        self._finite[slot] = max(self._finite[slot], best)
        return best

    def step(self) -> None:
        """One decode step for every running request (the worker's; public to drive it by hand)."""
        for slot in [s for s, r in self._running.items() if r.stopped]:
            self._finish(self._running[slot], "cancelled")
        if not self._running:
            return
        # Only the running slots: a free slot's cache keeps the prefix it holds for a later request.
        running = sorted(self._running.items())
        positions = [request.pos for _, request in running]
        length = min(self.length, -(-(max(positions) + 1) // LENGTH_BUCKET) * LENGTH_BUCKET)
        try:
            for slot, _ in running:  # the step may read positions < length of every row
                self._make_finite(slot, length)
            tokens, positions, slots = torch.tensor([[request.last for _, request in running], positions,
                                                     [slot for slot, _ in running]], device=self.device)
            logits = self._decode(tokens, positions, slots, length)  # [B, V]
        except Exception as exc:  # noqa: BLE001 - every running request gets the error
            for request in list(self._running.values()):
                self._finish(request, "error", exc)
            return
        self.steps += 1
        self.rows += len(running)
        # Plain greedy rows (the common case) share one argmax instead of one sampling call each.
        greedy = self._argmax(logits) if any(_plain_greedy(request) for _, request in running) else None
        for row, (slot, request) in enumerate(running):
            self._held[slot].append(request.last)  # the step wrote its keys and values at request.pos
            request.pos += 1
            try:
                self._emit(request, logits[row : row + 1], greedy[row] if greedy and _plain_greedy(request) else None)
            except Exception as exc:  # noqa: BLE001 - a dead decoder thread would leave every request hanging
                self._finish(request, "error", exc)

    def _make_finite(self, slot: int, end: int) -> None:
        """Zero cache positions of ``slot`` below ``end`` that nothing has written yet.

        Never touches what the running request wrote: its prompt raised the mark at ``_start``, and
        each step raises it past the position the step writes. Positions a request wrote stay finite
        after it ends (stale, but masked out and harmless), so each position is cleared at most once
        over the cache's life.
        """
        if self._clear is None:  # the step never reads past what requests wrote
            return
        if end > self._finite[slot]:
            self._clear(slot, self._finite[slot], end)
            self._finite[slot] = end

    def _emit(self, request: Request, logits: torch.Tensor, chosen: int | None = None) -> None:
        """Sample the request's next token from logits [1, V] (unless ``chosen`` already is), hand it
        over, and end the request if due."""
        if request.stopped:
            self._finish(request, "cancelled")
            return
        p = request.params
        if chosen is None:
            with _one_thread():
                chosen = int(sample_next(logits, request.seen, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                                         repetition_penalty=p.repetition_penalty, generator=request.generator))
        token_id = chosen
        request.produced += 1
        if token_id in request.eos_ids:
            self._finish(request, "stop")
            return
        request.out.put(token_id)
        if request.produced >= p.max_new_tokens or request.pos >= self.length:
            self._finish(request, "length")
            return
        request.last = token_id
        if p.repetition_penalty != 1.0:
            request.seen = torch.cat([request.seen, torch.tensor([[token_id]], device=request.seen.device)], dim=1)

    def _finish(self, request: Request, reason: str, error: BaseException | None = None) -> None:
        self._running.pop(request.slot, None)
        request.out.put(Done(reason, error))

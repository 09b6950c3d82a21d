"""CUDA graphs for torch's one-token step: each shape is captured once, then replayed every step.

Why: a step of a Llama launches a few dozen small kernels per layer. On a GPU each launch costs the
CPU several microseconds, more than most of those kernels take, so an eager step waits on Python and
the driver while the GPU idles. A graph replays the whole step with one launch.

A graph's shapes are fixed, so they are bucketed and few graphs serve every step:

- rows go up to the next power of two (at most the cache's slots), padded with copies of the last
  row. A copy feeds the same token to the same slot at the same position, so it writes the very key
  and value the row writes, and its logits are dropped: padding changes nothing;
- attention reads the cache up to the next power of two from ``MIN_SPAN`` (at most the cache's
  length), past the positions the scheduler made finite for its own, finer length; the whole cache
  is zeroed once, so those positions hold zeros, masked out like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

MIN_SPAN = 256  # the shortest attention span a graph is captured for

StepFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def bucket(n: int, floor: int, ceiling: int) -> int:
    """The smallest power of two that is at least ``n`` and ``floor``, capped at ``ceiling``."""
    return min(ceiling, max(floor, 1 << max(0, n - 1).bit_length()))


@dataclass
class _Shape:
    """One bucket's fixed input buffers, its output, and (on CUDA) the graph that connects them."""

    inputs: torch.Tensor  # [3, rows]: tokens, positions, slots
    logits: torch.Tensor | None = None  # [rows, V], written by each replay
    graph: Any = None  # torch.cuda.CUDAGraph


class StepGraphs:
    """``decode(tokens [B], pos [B], slots [B], length) -> logits [B, V]`` through one CUDA graph per
    (rows, span) bucket. ``step(tokens, pos, slots, mask)`` is the torch step to capture (the model's
    ``torch_step``, or a compiled copy of it).

    With ``capture=False`` it runs the same padded, bucketed step eagerly: what the tests check on a
    machine without a GPU.
    """

    def __init__(self, decoder: Any, step: StepFunction | None = None, *, capture: bool = True) -> None:
        self.decoder = decoder
        self._step = step or decoder.torch_step
        self._capture = capture
        self._shapes: dict[tuple[int, int], _Shape] = {}
        self._pads: dict[tuple[int, int], torch.Tensor] = {}
        self._pool = torch.cuda.graph_pool_handle() if capture else None
        self._cache: Any = None
        self._zero_cache()

    @property
    def captured(self) -> list[tuple[int, int]]:
        """The (rows, span) buckets that have a graph (or, without capture, that ran)."""
        return sorted(self._shapes)

    def _zero_cache(self) -> None:
        """Zero every cache buffer (see the module's note on spans); forget graphs of an older cache."""
        cache = self.decoder.layers[0].attn.cache
        if cache is self._cache:
            return
        self._shapes.clear()
        with torch.inference_mode():
            for block in self.decoder.layers:
                for tensor in block.attn.cache.buffers():
                    tensor.zero_()
        self._cache = cache

    def warm_up(self, span: int = MIN_SPAN) -> None:
        """Capture every row bucket for short contexts now, before a request waits on a capture.

        The captures write keys and values at position 0 of the first slots: a later prefill overwrites them.
        """
        rows, top = 1, self.decoder.slots
        while True:
            zeros = torch.zeros(rows, dtype=torch.long, device=self.decoder.device)
            self(zeros, zeros, torch.arange(rows, device=self.decoder.device), span)
            if rows >= top:
                break
            rows = min(top, rows * 2)

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor, length: int) -> torch.Tensor:
        self._zero_cache()
        b = tokens.shape[0]
        key = (bucket(b, 1, self.decoder.slots), bucket(length, MIN_SPAN, self.decoder.length))
        shape = self._shapes.get(key)
        fresh = shape is None
        if fresh:
            shape = self._shapes[key] = _Shape(torch.empty(3, key[0], dtype=torch.long, device=self.decoder.device))
        with torch.inference_mode():
            given = torch.stack([tokens, pos, slots])
            shape.inputs.copy_(given if b == key[0] else given.index_select(1, self._pad(b, key[0])))
            if not self._capture:
                shape.logits = self.run(shape.inputs, key[1])
            elif fresh:
                try:
                    self._record(shape, key[1])
                except BaseException:
                    del self._shapes[key]  # a half-made graph must never be replayed
                    raise
            else:
                shape.graph.replay()
            # A copy: the next replay overwrites the graph's output while the caller may still read it.
            return shape.logits[:b].clone()

    def _pad(self, b: int, rows: int) -> torch.Tensor:
        """Row indices 0..b-1, then b-1 again up to ``rows``: the padding rows copy the last real row."""
        if (b, rows) not in self._pads:
            self._pads[b, rows] = torch.arange(rows, device=self.decoder.device).clamp_(max=b - 1)
        return self._pads[b, rows]

    def run(self, inputs: torch.Tensor, span: int) -> torch.Tensor:
        """The step on inputs [3, rows] (tokens, positions, slots) over ``span`` positions, launched
        directly: what a capture records."""
        tokens, pos, slots = inputs
        return self._step(tokens, pos, slots, self.decoder.mask(pos, span))

    def _record(self, shape: _Shape, span: int) -> None:
        """Capture the step for this bucket, and run it once: its first result is the graph's output.

        The warm-up runs on a side stream (as torch's capture requires) with the real inputs, so the
        keys and values it writes are the ones the step writes anyway.
        """
        side = torch.cuda.Stream(self.decoder.device)
        side.wait_stream(torch.cuda.current_stream(self.decoder.device))
        with torch.cuda.stream(side):
            self.run(shape.inputs, span)
        torch.cuda.current_stream(self.decoder.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's use of the GPU (a perplexity check, say) must not break the capture.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            shape.logits = self.run(shape.inputs, span)
        graph.replay()
        shape.graph = graph

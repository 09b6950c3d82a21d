"""How the fast decoder computes a step: one small class per kind behind one interface, :class:`Step`.

- :class:`TorchStep`: torch's ops, eagerly; every other kind falls back to it;
- :class:`CompiledStep`: torch's one-token step compiled by ``torch.compile``;
- :class:`CudaGraphStep`: torch's step (compiled or not) replayed through CUDA graphs;
- :class:`NativeStep`: ChatCore's C++ step (``csrc/native.cpp``) over packed weights on the CPU.

A model carries its own step (``Transformer.step``): torch's, or the C++ one once
:func:`attach_native` gives it one. An engine runs the step :func:`choose_step` picks once at load;
nothing after that asks which kind it has.
"""

from __future__ import annotations

import sys
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import torch

from chatcore.engine.fast import native
from chatcore.engine.fast.graphs import StepGraphs
from chatcore.engine.fast.quant import NATIVE_DENSE_PREFILL, NativeLinear

# Prompts up to this many tokens prefill through the C++ step (no per-layer Python, no GEMM set-up);
# longer ones through bfloat16 GEMMs where those are fast (NATIVE_DENSE_PREFILL: AMX or AVX-512 BF16),
# whose matrix units win once there are enough rows. Elsewhere every prompt prefills through the C++
# step. It is also how many prompt tokens one call takes together.
NATIVE_PREFILL_ROWS = 128

# A chatcore.engine.fast.model.Transformer, not imported: the model imports this module for its default step.
Model = Any
Prompts = list[tuple[torch.Tensor, int, int]]  # (tokens [1, S], slot, start) each, distinct slots
T = TypeVar("T")


class Step(ABC):
    """A model's step: prompts into slots of the KV cache, and one new token for each of several slots.

    Every method runs under ``torch.inference_mode``.
    """

    kernels = "torch"  # whose kernels decode, as the engine reports it
    reads_unwritten = True  # whether it reads cache positions no request wrote (masked, so they must be finite)
    together_rows = 0  # prompt tokens that one prefill_together call takes to the kernels at once; 0: none

    @property
    def compiled(self) -> bool:
        """Whether torch.compile's step runs (it may fall back to torch's eager one)."""
        return False

    @abstractmethod
    def prefill(self, tokens: torch.Tensor, slot: int, start: int = 0) -> torch.Tensor:
        """One prompt (or a chunk of it), tokens [1, S], into ``slot`` from position ``start`` -> last logits [1, V]."""

    def prefill_together(self, prompts: Prompts) -> torch.Tensor:
        """Several prompts -> last logits [n, V]; here one prefill each."""
        with torch.inference_mode():
            return torch.cat([self.prefill(tokens, slot, start) for tokens, slot, start in prompts])

    @abstractmethod
    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor | None,
               length: int) -> torch.Tensor:
        """Row b feeds tokens[b] to slot slots[b] (``None``: b) at position pos[b], attending to cache
        positions < length. tokens, pos, slots: [B] -> logits [B, V]."""

    def argmax(self, logits: torch.Tensor) -> list[int]:
        """The largest logit's index in each row of logits [B, V] (the first of ties)."""
        return logits.argmax(dim=-1).tolist()


class TorchStep(Step):
    """torch's ops, eagerly: the step wherever nothing faster runs, and what the others fall back to."""

    def __init__(self, model: Model) -> None:
        # Weak: a model holds its own step, and a cycle would keep its weights until a garbage collection.
        self.model = weakref.proxy(model)

    @property
    def function(self) -> Callable[..., torch.Tensor]:
        """torch's one-token step (tokens, pos, slots, mask) -> logits, which compiling and graphs wrap."""
        return self.model.torch_step

    def prefill(self, tokens: torch.Tensor, slot: int, start: int = 0) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.torch_prefill(tokens, slot, start)

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor | None,
               length: int) -> torch.Tensor:
        model = self.model
        with torch.inference_mode():
            return model.torch_step(tokens, pos, model.gathered(slots), model.mask(pos, length))


class CompiledStep(Step):
    """torch's one-token step compiled by ``torch.compile`` (fused kernels); prompts prefill eagerly.

    Building it raises where there is no compiler; a compiled step that fails later says so once and
    decodes eagerly from then on.
    """

    def __init__(self, model: Model, eager: TorchStep) -> None:
        self.model, self.eager = model, eager
        self.function = torch.compile(model.torch_step, dynamic=True)
        self._working = True

    @property
    def compiled(self) -> bool:
        return self._working

    def prefill(self, tokens: torch.Tensor, slot: int, start: int = 0) -> torch.Tensor:
        return self.eager.prefill(tokens, slot, start)

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor | None,
               length: int) -> torch.Tensor:
        if self._working:
            mask = self.model.mask(pos, length)
            with torch.inference_mode():
                try:
                    return self.function(tokens, pos, self.model.gathered(slots), mask)
                except Exception as exc:  # noqa: BLE001 - a failed compile must not cost the answer
                    print(f"chatcore: compiled decode step failed ({type(exc).__name__}: {exc}); "
                          "decoding eagerly", file=sys.stderr)
                    self._working = False
        return self.eager.decode(tokens, pos, slots, length)

    def warm_up(self) -> None:
        """Compile now, before any request holds a slot: one graph for a single row, one for several."""
        for rows in (1, 2):  # torch specialises size 1, so batches need their own (dynamic) graph
            zeros = torch.zeros(rows, dtype=torch.long, device=self.model.device)
            self.decode(zeros, zeros, torch.arange(rows, device=self.model.device), min(128, self.model.length))


class CudaGraphStep(Step):
    """torch's step, compiled or not (``fallback``), replayed through CUDA graphs (:mod:`graphs`).

    A failed capture or replay says so once and leaves the graphs for ``fallback``.
    """

    def __init__(self, model: Model, fallback: TorchStep | CompiledStep) -> None:
        self.fallback = fallback
        self.graphs: StepGraphs | None = StepGraphs(model, fallback.function)

    @property
    def kernels(self) -> str:  # type: ignore[override]
        return "cuda-graphs" if self.graphs is not None else self.fallback.kernels

    @property
    def compiled(self) -> bool:
        return self.fallback.compiled

    def warm_up(self) -> bool:
        """Capture the graphs of short contexts now; returns whether that worked."""
        if self.graphs is not None:
            self._guarded(self.graphs.warm_up)
        return self.graphs is not None

    def _guarded(self, run: Callable[[], T]) -> T | None:
        """``run()``; on failure, say so once and drop the graphs (``None``)."""
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - a failed capture must not cost the answer
            print(f"chatcore: CUDA graphs failed ({type(exc).__name__}: {exc}); decoding without them",
                  file=sys.stderr)
            self.graphs = None
            return None

    def prefill(self, tokens: torch.Tensor, slot: int, start: int = 0) -> torch.Tensor:
        return self.fallback.prefill(tokens, slot, start)

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor | None,
               length: int) -> torch.Tensor:
        graphs = self.graphs
        if graphs is not None:  # None once a capture failed
            rows = torch.arange(tokens.shape[0], device=tokens.device) if slots is None else slots
            logits = self._guarded(lambda: graphs(tokens, pos, rows, length))
            if logits is not None:
                return logits
        return self.fallback.decode(tokens, pos, slots, length)


class NativeStep(Step):
    """ChatCore's C++ step over the model's packed weights, norms and KV cache (shared, not copied).

    It decodes every step and prefills prompts of up to NATIVE_PREFILL_ROWS tokens, several in one
    call (their rows share each read of the weights, as a batch's tokens do); longer prompts prefill
    through torch's bfloat16 GEMMs where the layers keep dense copies for them (``torch_prefill``),
    else through the step too. It reads exactly the cache positions requests wrote.
    """

    kernels = "native"
    reads_unwritten = False
    together_rows = NATIVE_PREFILL_ROWS

    def __init__(self, model: Model, extension: ModuleType) -> None:
        self.model = weakref.proxy(model)  # weak: see TorchStep
        self.extension = extension
        # ``kernel.forward(tokens, slots, positions, logit_rows)``: rows at any slots and positions.
        self.kernel = build_decoder(extension, model)

    def prefill(self, tokens: torch.Tensor, slot: int, start: int = 0) -> torch.Tensor:
        s = tokens.shape[1]
        with torch.inference_mode():
            if s > NATIVE_PREFILL_ROWS and NATIVE_DENSE_PREFILL:
                return self.model.torch_prefill(tokens, slot, start)
            return self.kernel.forward(tokens[0], torch.full((s,), slot), torch.arange(start, start + s),
                                       torch.tensor([s - 1]))

    def prefill_together(self, prompts: Prompts) -> torch.Tensor:
        """Prompts of NATIVE_PREFILL_ROWS tokens in all in one call; more, one prefill each."""
        rows = sum(tokens.shape[1] for tokens, _, _ in prompts)
        if rows > NATIVE_PREFILL_ROWS:
            return super().prefill_together(prompts)
        with torch.inference_mode():
            slots = torch.cat([torch.full((tokens.shape[1],), slot) for tokens, slot, _ in prompts])
            positions = torch.cat([torch.arange(start, start + tokens.shape[1]) for tokens, _, start in prompts])
            last = torch.tensor([tokens.shape[1] for tokens, _, _ in prompts]).cumsum(0) - 1
            return self.kernel.forward(torch.cat([tokens[0] for tokens, _, _ in prompts]), slots, positions, last)

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor | None,
               length: int) -> torch.Tensor:
        with torch.inference_mode():  # it reads exactly positions <= pos of each row, whatever ``length``
            return self.kernel.decode(tokens, pos, slots)

    def argmax(self, logits: torch.Tensor) -> list[int]:
        return self.extension.argmax(logits).tolist()


def attach_native(extension: ModuleType, model: Model) -> bool:
    """Give ``model`` (its cache set up) the C++ step of ``extension`` (what :func:`native.load` returns).

    Only when every linear is a ``NativeLinear`` and the cache is bfloat16, or int8 (see ``KVCache``)
    with heads of 64 or 128; returns whether it did.
    """
    linears = [model.output] + [linear for block in model.layers
                                for linear in (block.attn.wqkv, block.attn.wo, block.mlp.w13, block.mlp.w2)]
    if not all(isinstance(linear, NativeLinear) for linear in linears):  # the ones build_decoder reads
        return False
    if model.device.type != "cpu" or model.dtype != torch.bfloat16 or not model.slots:
        return False
    if model.layers[0].attn.cache.quantized and not native.int8_cache_fits(model.cfg.head_dim):
        return False
    model.step = NativeStep(model, extension)
    return True


def build_decoder(extension: ModuleType, model: Model, kernel: Callable[[Any], Any] | None = None) -> Any:
    """``extension``'s C++ ``Decoder`` over ``model``'s native linears, norms and KV cache (shared, not copied).

    ``kernel(linear)`` gives each ``NativeLinear``'s C++ object (default: its own ``kernel``; another
    build of the extension needs its own objects over the same buffers). The result's
    ``decode(tokens [B], positions [B])`` gives float32 logits [B, V].
    """
    kernel = kernel or (lambda linear: linear.kernel)
    cfg = model.cfg
    decoder = extension.Decoder(model.embed.weight.detach(), model.norm.weight.detach(), kernel(model.output),
                                model.cos, model.sin, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.intermediate,
                                cfg.norm_eps)
    for block in model.layers:
        decoder.add_layer(block.attn_norm.weight.detach(), block.mlp_norm.weight.detach(), kernel(block.attn.wqkv),
                          kernel(block.attn.wo), kernel(block.mlp.w13), kernel(block.mlp.w2),
                          block.attn.cache.k, block.attn.cache.v, block.attn.cache.k_scale, block.attn.cache.v_scale)
    return decoder


def choose_step(model: Model, compile_step: bool = False, graphs: bool = False) -> Step:
    """The step an engine runs, chosen once: the model's C++ step where it has one (nothing to compile or
    capture); else torch's, compiled with ``compile_step``, replayed through CUDA graphs with ``graphs``.

    A compiler or a capture that fails here says so, and the next simpler kind is chosen.
    """
    if isinstance(model.step, NativeStep):
        return model.step
    step: TorchStep | CompiledStep = TorchStep(model)
    if compile_step:
        try:
            step = CompiledStep(model, step)
        except Exception as exc:  # noqa: BLE001 - no compiler here: the eager step still works
            print(f"chatcore: torch.compile unavailable ({exc}); decoding eagerly", file=sys.stderr)
    if graphs:
        replayed = CudaGraphStep(model, step)
        if replayed.warm_up():
            return replayed
    if isinstance(step, CompiledStep):
        step.warm_up()
    return step

"""Weight-only quantized linears: ChatCore's own q4/q8 kernels where the CPU has them, else torch's
packed CPU kernels (int8 per channel, int4 per group).

Decoding one token reads every weight once, so on CPU its speed is set by bytes per weight.
Activations stay bfloat16 (the kernels are fast for bf16 inputs, slow for float32 ones).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from chatcore.engine.fast import native

MODES = ("none", "int8", "int4")
# Above this many rows (prompt tokens in a prefill) a layer with a dense bf16 copy multiplies with it:
# oneDNN's bf16 GEMM (AMX where present) is several times faster than the packed kernels for long
# prompts, while one-token steps read the small packed weights.
DENSE_ROWS = 32
# Whether the CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX). Elsewhere oneDNN
# emulates them: on a 2-core AVX2 EPYC a 1,000-token prefill took 11.4 s in bf16 GEMMs, against ~2 s
# for float32 ones, so there a dense copy (torch's packed layers keep one) is widened to float32 for
# each long prefill. Keeping float32 copies instead saves only that widening (~1% of the prefill).
FAST_BF16_MATMUL = bool({"avx512_bf16", "amx_bf16"} & native.cpu_flags())
# Whether ChatCore's own q4/q8 layers keep that dense copy. Only where bf16 GEMMs are fast: elsewhere the
# C++ step prefills long prompts through the packed kernels, whose integer products beat float32 GEMMs
# (1.5x for the layers of a 1,000-token prompt on a 2-core AVX2 EPYC), and the copy (212 MB for
# SmolLM2-135M) is saved.
NATIVE_DENSE_PREFILL = FAST_BF16_MATMUL


class PackedLinear(nn.Module):
    """What every quantized linear shares: its packed weight in the two buffers named by ``BUFFERS``
    (the work worth caching on disk), an optional dense bf16 copy for long prefills, and a ``forward``
    that multiplies many rows through the dense copy and the rest through the kernel (``_matmul``)."""

    BUFFERS: tuple[str, str]

    def __init__(self, weight: torch.Tensor, dense: torch.Tensor | None,
                 packed: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("dense", dense)  # optional bf16 weight for long prefills
        for name, tensor in zip(self.BUFFERS, packed):
            self.register_buffer(name, tensor)

    def packed(self) -> dict[str, torch.Tensor]:
        """The buffers that took work to compute, for the on-disk cache."""
        return {name: getattr(self, name) for name in self.BUFFERS}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.dense
        if dense is not None and x.numel() // x.shape[-1] > DENSE_ROWS:
            if x.dtype == torch.bfloat16 and not FAST_BF16_MATMUL:  # float32 GEMMs are the fast ones here
                return torch.nn.functional.linear(x.float(), dense.float()).to(x.dtype)
            return torch.nn.functional.linear(x, dense.to(x.dtype) if dense.dtype != x.dtype else dense)
        shape = x.shape
        return self._matmul(x.reshape(-1, shape[-1])).view(*shape[:-1], self.out_features)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] -> [M, N] through the packed weight."""
        raise NotImplementedError


class Int8Linear(PackedLinear):
    """y = x @ (w8 * scale).T with w8: [N, K] int8 and one scale per output channel."""

    BUFFERS = ("weight", "scales")

    def __init__(self, weight: torch.Tensor, dense: torch.Tensor | None = None,
                 packed: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        if packed is None:
            w = weight.float()
            scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
            packed = (w / scales[:, None]).round().clamp(-128, 127).to(torch.int8), scales.to(torch.bfloat16)
        super().__init__(weight, dense, packed)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales.to(x.dtype))

    def dequantized(self) -> torch.Tensor:
        return self.weight.float() * self.scales.float()[:, None]


def int4_groups(weight: torch.Tensor, groupsize: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit groups along K: w ~ (q - 8) * scale + zero, with q in 0..15.

    weight: [N, K] -> q [N, K] int32, scales [N, K/g] bf16, zeros [N, K/g] bf16. Scales and zeros are
    rounded to bf16 first and q is chosen against the rounded values, so storage loses no more.
    """
    n, k = weight.shape
    groups = weight.float().reshape(n, k // groupsize, groupsize)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scales = ((high - low).clamp(min=1e-6) / 15).to(torch.bfloat16)
    zeros = (low + scales.float() * 8).to(torch.bfloat16)
    q = (groups - zeros.float()[..., None]) / scales.float()[..., None] + 8
    q = q.round().clamp(0, 15).to(torch.int32).reshape(n, k)
    return q, scales, zeros


class Int4Linear(PackedLinear):
    """4-bit weights in torch's packed CPU layout, dequantized group by group inside the kernel."""

    BUFFERS = ("weight", "scales_and_zeros")

    def __init__(self, weight: torch.Tensor, groupsize: int, dense: torch.Tensor | None = None,
                 packed: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        if packed is None:
            q, scales, zeros = int4_groups(weight, groupsize)
            # scales_and_zeros: [K/g, N, 2], the layout the kernel expects.
            packed = (torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1),
                      torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous())
        super().__init__(weight, dense, packed)
        self.groupsize = groupsize

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight, self.groupsize, self.scales_and_zeros)

    def dequantized(self) -> torch.Tensor:
        """The float weight this layer computes with: multiply the identity through the kernel."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        packed = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight, self.groupsize, self.scales_and_zeros)
        return packed.float().T.contiguous()


class NativeLinear(PackedLinear):
    """A q4 or q8 weight for ChatCore's own kernels (:mod:`chatcore.engine.fast.native`), which the C++
    decode step also reads directly; short inputs multiply through the kernel, long prefills through
    the optional dense bfloat16 copy (without one, through the kernel too)."""

    BUFFERS = ("codes", "scales")

    def __init__(self, weight: torch.Tensor, bits: int, kernels: Any, dense: torch.Tensor | None = None,
                 packed: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        if packed is None:
            packed = native.pack_q4(weight) if bits == 4 else native.pack_q8(weight)
        super().__init__(weight, dense, packed)
        self.bits = bits
        # Holds references to the two buffers above (not copies); the decode step shares it.
        self.kernel = kernels.QLinear(bits, self.codes, self.scales, self.out_features, self.in_features)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel.forward(x).to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        unpack = native.unpack_q4 if self.bits == 4 else native.unpack_q8
        return unpack(self.codes, self.scales, self.out_features)


def int4_groupsize(in_features: int, preferred: int) -> int | None:
    """The largest group size <= preferred that divides K (the kernel needs K % g == 0), else None."""
    for g in (preferred, 128, 64, 32):
        if g <= preferred and in_features % g == 0:
            return g
    return None


def quantize(model: nn.Module, mode: str, groupsize: int = 32, head: str = "output",
             dense_prefill: bool = False, packed: dict[str, torch.Tensor] | None = None,
             kernels: Any = None) -> nn.Module:
    """Replace the model's linears in place with ``mode`` ones; returns it.

    ``kernels`` (the module :func:`chatcore.engine.fast.native.load` returns) selects ChatCore's own q4/q8
    kernels for every layer whose shape they take; without it, torch's packed kernels.

    ``packed`` is a cache of quantized buffers by ``layer.buffer`` name: layers found there are
    rebuilt from it (packing int4 weights takes seconds), and the others are added to it.

    ``dense_prefill`` keeps each layer's bf16 weight too (not the head's: a prefill only needs the last
    position's logits), for fast long prompts at the cost of that memory; ChatCore's own layers keep it
    only where ``NATIVE_DENSE_PREFILL``.

    With int4 the output head (module ``head``) stays int8: it is usually tied to the embedding, which
    checkpoints keep finer than 4 bits; on SmolLM2 a 4-bit head alone costs ~12% perplexity, int8 0.3%.
    """
    if mode == "none":
        return model
    if mode not in MODES:
        raise ValueError(f"unknown quantization {mode!r}; use one of {', '.join(MODES)}")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        weight = linear.weight.detach()
        dense = weight.to(torch.bfloat16) if dense_prefill and name != head else None
        g = int4_groupsize(weight.shape[1], groupsize)
        if kernels is not None and native.supported_shape(weight):
            bits = 8 if mode == "int8" or name == head else 4
            cached = _cached(packed, name, NativeLinear.BUFFERS)
            replacement: nn.Module = NativeLinear(weight, bits, kernels, dense if NATIVE_DENSE_PREFILL else None,
                                                  cached)
        # The packed int4 layout needs N % 16 == 0; other shapes (rare, tiny vocabularies) stay int8.
        elif mode == "int8" or name == head or not g or weight.shape[0] % 16:
            cached = _cached(packed, name, Int8Linear.BUFFERS)
            replacement = Int8Linear(weight, dense, cached)
        else:
            cached = _cached(packed, name, Int4Linear.BUFFERS)
            replacement = Int4Linear(weight, g, dense, cached)
        if packed is not None and cached is None:
            packed.update({f"{name}.{key}": value for key, value in replacement.packed().items()})
        setattr(parent, attr, replacement)
    return model


def _cached(packed: dict[str, torch.Tensor] | None, name: str, keys: tuple[str, str]) -> tuple | None:
    """The layer's cached buffers when all of them are there."""
    if packed is None or any(f"{name}.{key}" not in packed for key in keys):
        return None
    return tuple(packed[f"{name}.{key}"] for key in keys)

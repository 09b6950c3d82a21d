"""A Llama-family decoder written for speed: fused projections, a static KV cache, one-token steps.

Weights come from a transformers ``LlamaForCausalLM`` state dict; the math is the same (RMSNorm,
rotary embeddings from transformers' own rotary module, grouped-query attention, SwiGLU), so in
float32 its greedy tokens equal transformers' ``generate``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chatcore.engine.fast.step import Step, TorchStep


@dataclass(frozen=True)
class FastConfig:
    """The few numbers the decoder needs, read from a transformers config."""

    vocab_size: int
    dim: int  # hidden size
    n_layers: int
    n_heads: int
    n_kv_heads: int  # grouped-query attention: each K/V head serves n_heads // n_kv_heads query heads
    head_dim: int
    intermediate: int  # SwiGLU width
    norm_eps: float
    max_positions: int
    tied_embeddings: bool

    @classmethod
    def from_hf(cls, config: Any) -> "FastConfig":
        heads = config.num_attention_heads
        return cls(
            vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.num_hidden_layers,
            n_heads=heads, n_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate=config.intermediate_size, norm_eps=config.rms_norm_eps,
            max_positions=config.max_position_embeddings,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


def supports(config: Any) -> str | None:
    """``None`` when this decoder computes exactly what transformers would for ``config``, else why not."""
    if getattr(config, "model_type", None) != "llama":
        return f"architecture {getattr(config, 'model_type', None)!r} is not a plain Llama"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "biased projections"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    return None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 as transformers does, then scale in the model's dtype.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, the half-split layout of transformers' Llama. x: [B, H, S, D]; cos, sin: [B, 1, S, D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVCache(nn.Module):
    """Preallocated keys and values for ``slots`` sequences of up to ``length`` tokens each.

    k, v: [slots, n_kv_heads, length, head_dim]. A slot is one running request. In ``dtype``, or with
    ``quantized`` as int8 with a float32 scale per position and head (``k_scale``, ``v_scale``:
    [slots, n_kv_heads, length]): keys as uint8 k + 128, values as int8, the layout the C++ step reads.
    Half the bytes of bfloat16, which is what attention over a long context is bound by.
    """

    def __init__(self, slots: int, n_kv_heads: int, length: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str | None = None, quantized: bool = False) -> None:
        super().__init__()
        shape = (slots, n_kv_heads, length, head_dim)
        self.quantized = quantized
        self.register_buffer("k", torch.empty(shape, dtype=torch.uint8 if quantized else dtype, device=device),
                             persistent=False)
        self.register_buffer("v", torch.empty(shape, dtype=torch.int8 if quantized else dtype, device=device),
                             persistent=False)
        scales = torch.empty(shape[:3], dtype=torch.float32, device=device) if quantized else None
        self.register_buffer("k_scale", scales, persistent=False)
        self.register_buffer("v_scale", None if scales is None else scales.clone(), persistent=False)

    def clear(self, slot: int, start: int, end: int) -> None:
        for tensor in self.buffers():  # a zero scale makes a quantized position zero
            tensor[slot, :, start:end].zero_()

    def copy(self, source: int, target: int, end: int) -> None:
        for tensor in self.buffers():
            tensor[target, :, :end] = tensor[source, :, :end]

    def write(self, index: tuple, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys and values [..., head_dim] at ``index`` (over the first three dimensions)."""
        if not self.quantized:
            self.k[index], self.v[index] = k.to(self.k.dtype), v.to(self.v.dtype)
            return
        for codes, scales, x, offset in ((self.k, self.k_scale, k, 128), (self.v, self.v_scale, v, 0)):
            x = x.to(torch.float32, copy=True)  # in place from here: a prompt's worth of keys per layer
            top = x.abs().amax(dim=-1, keepdim=True)
            # The C++ step's arithmetic (x * (127 / max), rounded to even): torch's prefill writes the very
            # bytes the step would (tests hold it to the step's quantize_heads).
            codes[index] = x.mul_((127 / top).nan_to_num_(posinf=0.0)).round_().add_(offset).to(codes.dtype)
            scales[index] = top.squeeze(-1).div_(127)

    def read(self, index: tuple, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at ``index`` in ``dtype``."""
        if not self.quantized:
            return self.k[index].to(dtype), self.v[index].to(dtype)
        keys = (self.k[index].float() - 128) * self.k_scale[index][..., None]
        values = self.v[index].float() * self.v_scale[index][..., None]
        return keys.to(dtype), values.to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: FastConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_size, self.kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, self.q_size + 2 * self.kv_size, bias=False)  # fused Q, K, V
        self.wo = nn.Linear(self.q_size, cfg.dim, bias=False)
        self.cache: KVCache | None = None

    def _project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        b, s, _ = x.shape
        q, k, v = self.wqkv(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(b, s, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, S, D]
        k = k.view(b, s, self.n_kv, self.head_dim).transpose(1, 2)  # [B, Hkv, S, D]
        v = v.view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def prefill(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot: int, start: int,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """A whole chunk of one sequence. x: [1, S, dim], written to cache positions start..start+S-1.
        With slot -1 (scoring, no cache) x may hold B sequences: [B, S, dim], and ``mask`` ([B, 1, S, S],
        True where a position may attend) replaces the causal one."""
        b, s = x.shape[0], x.shape[1]
        q, k, v = self._project(x, cos, sin)
        cache = self.cache
        end = start + s
        if slot >= 0:  # slot -1: score without touching the cache
            cache.write((slice(slot, slot + 1), slice(None), slice(start, end)), k, v)
        if mask is not None:
            out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, enable_gqa=True)
        elif start == 0:
            out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), is_causal=True, enable_gqa=True)
        else:  # a later chunk sees everything before it and itself causally
            keys, values = cache.read((slice(slot, slot + 1), slice(None), slice(None, end)), q.dtype)
            rows = torch.arange(start, end, device=x.device)[:, None]
            mask = torch.arange(end, device=x.device)[None, :] <= rows  # [S, end]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
        return self.wo(out.transpose(1, 2).reshape(b, s, self.q_size))

    def decode(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: torch.Tensor,
               slots: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """One new token for each of B slots (``None``: slots 0..B-1). x: [B, 1, dim]; pos, slots: [B];
        mask: [B, 1, 1, L]."""
        b = x.shape[0]
        q, k, v = self._project(x, cos, sin)
        cache = self.cache
        rows = torch.arange(b, device=x.device) if slots is None else slots
        cache.write((rows, slice(None), pos), k[:, :, 0], v[:, :, 0])  # [B, Hkv, D] into each slot's position
        length = mask.shape[-1]
        # The first B slots are a view of the cache; any others are gathered (a copy).
        keys, values = cache.read((slice(None, b) if slots is None else slots, slice(None), slice(None, length)),
                                  q.dtype)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
        return self.wo(out.transpose(1, 2).reshape(b, 1, self.q_size))


class FeedForward(nn.Module):
    def __init__(self, cfg: FastConfig) -> None:
        super().__init__()
        self.intermediate = cfg.intermediate
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.intermediate, bias=False)  # fused gate and up
        self.w2 = nn.Linear(cfg.intermediate, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.intermediate, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: FastConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = FeedForward(cfg)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Transformer(nn.Module):
    """The decoder. ``setup_cache`` must run before ``prefill`` / ``decode``, which go through ``step``:
    torch's ops, or the C++ step once :func:`chatcore.engine.fast.step.attach_native` gives it one."""

    def __init__(self, cfg: FastConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.register_buffer("cos", torch.empty(0), persistent=False)  # [T, D]
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.slots = 0
        self.length = 0
        self.rope_source: Any = None  # length -> (cos, sin) [length, D], set by the loader
        self.step: Step = TorchStep(self)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def setup_cache(self, slots: int, length: int, quantized: bool = False) -> None:
        """Allocate the KV cache for ``slots`` sequences of ``length`` tokens each, in the model's dtype or,
        ``quantized``, in int8 (see :class:`KVCache`).

        The memory is left untouched (``torch.empty``), so the OS maps pages only as sequences fill
        them; ``clear`` makes a slot's range finite before a request uses it.
        """
        for block in self.layers:
            block.attn.cache = KVCache(slots, self.cfg.n_kv_heads, length, self.cfg.head_dim, self.dtype, self.device,
                                       quantized)
        cos, sin = self.rope_source(length)
        self.cos, self.sin = cos.to(self.device, self.dtype), sin.to(self.device, self.dtype)
        self.slots, self.length = slots, length
        self.step = TorchStep(self)  # a C++ step held the old cache; attach one again

    def prefill(self, tokens: torch.Tensor, slot: int, start: int = 0) -> torch.Tensor:
        """Run one sequence's prompt (or a chunk of it) into ``slot`` through ``step``. tokens: [1, S] ->
        last logits [1, V]."""
        return self.step.prefill(tokens, slot, start)

    def torch_prefill(self, tokens: torch.Tensor, slot: int, start: int = 0) -> torch.Tensor:
        """``prefill`` in torch's ops."""
        s = tokens.shape[1]
        cos = self.cos[start : start + s][None, None]  # [1, 1, S, D]
        sin = self.sin[start : start + s][None, None]
        x = self.embed(tokens)  # [1, S, dim]
        for block in self.layers:
            x = x + block.attn.prefill(block.attn_norm(x), cos, sin, slot, start)
            x = x + block.mlp(block.mlp_norm(x))
        return self.output(self.norm(x[:, -1:]))[:, 0].float()

    def prefill_together(self, prompts: list[tuple[torch.Tensor, int, int]]) -> torch.Tensor:
        """Several prompts (``(tokens [1, S], slot, start)`` each, distinct slots) -> last logits [n, V],
        in as few calls as ``step`` takes them (the C++ step: one for short prompts)."""
        return self.step.prefill_together(prompts)

    def clear(self, slot: int, start: int, end: int) -> None:
        """Zero cache positions start..end-1 of ``slot`` in every layer."""
        for block in self.layers:
            block.attn.cache.clear(slot, start, end)

    def copy_prefix(self, source: int, target: int, end: int) -> None:
        """Copy cache positions 0..end-1 of slot ``source`` to slot ``target`` in every layer."""
        with torch.inference_mode():
            for block in self.layers:
                block.attn.cache.copy(source, target, end)

    def score(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at every position, without the cache (perplexity, log-likelihoods). tokens: [B, S] -> [B, S, V]."""
        s = tokens.shape[1]
        cos, sin = self._rope(s)
        x = self.embed(tokens)
        for block in self.layers:
            x = x + block.attn.prefill(block.attn_norm(x), cos, sin, -1, 0)
            x = x + block.mlp(block.mlp_norm(x))
        return self.output(self.norm(x)).float()

    def score_packed(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                     rows: torch.Tensor) -> torch.Tensor:
        """Logits at chosen places of packed sequences, without the cache (multiple-choice log-likelihoods).

        Each sequence holds a context and then its continuations side by side: ``mask`` ([B, 1, S, S]) lets
        a continuation's tokens see the context and themselves, not the other continuations, and
        ``positions`` ([B, S]) places each continuation right after the context. Only the places in ``rows``
        ([R, 2]: sequence, index) go through the output layer. tokens: [B, S] -> [R, V].
        """
        cos, sin = self._rope(int(positions.max()) + 1)  # [1, 1, L, D]
        cos, sin = cos[0, 0][positions][:, None], sin[0, 0][positions][:, None]  # [B, 1, S, D]
        x = self.embed(tokens)
        for block in self.layers:
            x = x + block.attn.prefill(block.attn_norm(x), cos, sin, -1, 0, mask=mask)
            x = x + block.mlp(block.mlp_norm(x))
        return self.output(self.norm(x[rows[:, 0], rows[:, 1]])).float()

    def _rope(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cos.shape[0] >= s:
            return self.cos[:s][None, None], self.sin[:s][None, None]
        cos, sin = self.rope_source(s)  # no cache set up, or a longer text than it: compute the tables
        return cos.to(self.device, self.dtype)[None, None], sin.to(self.device, self.dtype)[None, None]

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, length: int,
               slots: torch.Tensor | None = None) -> torch.Tensor:
        """One step: row b feeds tokens[b] to slot slots[b] (default b) at position pos[b], attending to
        cache positions < length, through ``step``. tokens, pos, slots: [B] -> logits [B, V]."""
        return self.step.decode(tokens, pos, slots, length)

    @staticmethod
    def gathered(slots: torch.Tensor | None) -> torch.Tensor | None:
        """``slots`` for torch's step, or ``None`` when they are 0..B-1: attention then reads a view of the
        cache instead of a gathered copy."""
        return None if slots is None or slots.tolist() == list(range(slots.shape[0])) else slots

    @staticmethod
    def mask(pos: torch.Tensor, length: int) -> torch.Tensor:
        """Which of the first ``length`` cache positions each row attends to: [B, 1, 1, L]."""
        # Each slot sees its own positions up to and including the new token.
        return (torch.arange(length, device=pos.device)[None, :] <= pos[:, None])[:, None, None, :]

    def torch_step(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor | None,
                   mask: torch.Tensor) -> torch.Tensor:
        """``decode`` in torch's ops, given ``gathered(slots)`` and ``mask(pos, length)``: the function
        that torch.compile and CUDA graphs wrap."""
        cos = self.cos[pos][:, None, None]  # [B, 1, 1, D]
        sin = self.sin[pos][:, None, None]
        x = self.embed(tokens[:, None])  # [B, 1, dim]
        for block in self.layers:
            x = x + block.attn.decode(block.attn_norm(x), cos, sin, pos, slots, mask)
            x = x + block.mlp(block.mlp_norm(x))
        return self.output(self.norm(x))[:, 0].float()


def rope_tables(hf_config: Any, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, D] from transformers' own rotary module, so every rope variant matches."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rotary = LlamaRotaryEmbedding(hf_config)
    positions = torch.arange(length)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    return cos[0].float(), sin[0].float()


def from_hf_state(hf_config: Any, state: Mapping[str, torch.Tensor], dtype: torch.dtype,
                  consume: bool = False) -> Transformer:
    """Build the decoder from a transformers Llama state dict (weights renamed and fused).

    ``consume`` pops each tensor from ``state`` (a dict, or the engine's ``LazyState``) as it goes, so
    loading never holds two full copies of the weights.
    """
    cfg = FastConfig.from_hf(hf_config)
    with torch.device("meta"):
        model = Transformer(cfg)

    def get(name: str) -> torch.Tensor:
        return (state.pop(name) if consume else state[name]).to(dtype)

    ours: dict[str, torch.Tensor] = {"embed.weight": get("model.embed_tokens.weight"),
                                     "norm.weight": get("model.norm.weight")}
    head = "lm_head.weight"
    ours["output.weight"] = get(head) if head in state and not cfg.tied_embeddings else ours["embed.weight"]
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        ours[f"layers.{i}.attn.wqkv.weight"] = torch.cat(
            [get(p + "self_attn.q_proj.weight"), get(p + "self_attn.k_proj.weight"), get(p + "self_attn.v_proj.weight")])
        ours[f"layers.{i}.attn.wo.weight"] = get(p + "self_attn.o_proj.weight")
        ours[f"layers.{i}.mlp.w13.weight"] = torch.cat([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")])
        ours[f"layers.{i}.mlp.w2.weight"] = get(p + "mlp.down_proj.weight")
        ours[f"layers.{i}.attn_norm.weight"] = get(p + "input_layernorm.weight")
        ours[f"layers.{i}.mlp_norm.weight"] = get(p + "post_attention_layernorm.weight")
    model.load_state_dict(ours, assign=True, strict=True)
    model.cos, model.sin = torch.empty(0), torch.empty(0)  # built on meta above; filled by setup_cache
    model.rope_source = functools.partial(rope_tables, hf_config)
    return model.eval()

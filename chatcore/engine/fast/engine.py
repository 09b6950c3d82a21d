"""The fast engine: ChatCore's own Llama decoder behind the same ``stream()`` as ``TransformersEngine``.

It loads the safetensors weights into :mod:`chatcore.engine.fast.model`, optionally quantizes them
(:mod:`chatcore.engine.fast.quant`), picks once how a step computes (:mod:`chatcore.engine.fast.step`:
the C++ step, or torch's, compiled and replayed through CUDA graphs where that works), and serves every
request through one continuous-batching :class:`~chatcore.engine.fast.scheduler.Scheduler`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from chatcore.core.chat import Message
from chatcore.core.errors import ModelError, ParameterError
from chatcore.core.events import Event, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.core.settings import DEFAULT_CONCURRENCY, Settings
from chatcore.engine import sources
from chatcore.engine.base import (
    LocalDecoder,
    ModelInfo,
    TextAssembler,
    begin_answer,
    context_window,
    eos_token_ids,
    finished_event,
)
from chatcore.engine.fast import native
from chatcore.engine.fast import quant as quantization
from chatcore.engine.fast.model import Transformer, from_hf_state, supports
from chatcore.engine.fast.scheduler import Done, Request, Scheduler
from chatcore.engine.fast.step import NativeStep, attach_native, choose_step

SLOTS = DEFAULT_CONCURRENCY  # concurrent requests decoded together; more wait for a free slot
PPL_TOLERANCE = 1.02  # a quantized model may lose at most 2% perplexity against float32
QUANT_CHOICES = ("auto", "none", "int8", "int4")
KV_CACHE_CHOICES = ("int8", "bfloat16")

# Scored by ``auto`` to check a quantization against float32: plain prose of the kind users ask about.
CALIBRATION_TEXT = (
    "The history of science is the study of how people came to understand the natural world. Early "
    "astronomers recorded the motions of the planets, and physicians described diseases and their "
    "treatments long before anyone could explain them. In the seventeenth century, experiments and "
    "mathematics together changed how knowledge was made: Galileo measured falling bodies, Kepler found "
    "that planets move in ellipses, and Newton showed that one law of gravitation explains both. Chemistry "
    "grew out of alchemy when Lavoisier weighed the products of burning and found that mass is conserved. "
    "In the nineteenth century, Darwin argued that species change through natural selection, and Maxwell "
    "wrote the equations that unite electricity, magnetism and light. The twentieth century brought "
    "relativity, quantum mechanics, the structure of DNA and the first computers. Today researchers share "
    "data across the world, and a question asked in one laboratory is often answered in another. Good "
    "research still depends on careful notes, honest reporting of errors, and the willingness to change "
    "one's mind when the evidence requires it. Students who learn to read papers critically, to repeat "
    "measurements, and to explain their reasoning clearly will find that these habits serve them in any field."
)


def load_fast(settings: Settings, directory: Path, tokenizer: Any, device: torch.device, dtype: torch.dtype,
              progress: Callable[[str], None] | None = None) -> "FastEngine | None":
    """The fast engine for ``directory``, or ``None`` when its model needs the transformers loop."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory, trust_remote_code=settings.trust_remote_code)
    files = sorted(Path(directory).glob("*.safetensors"))
    if supports(config) is not None or not files or device.type not in ("cpu", "cuda"):
        return None
    mode = getattr(settings, "quant", "auto") or "auto"
    if mode not in QUANT_CHOICES:
        raise ParameterError("quant", f"quant must be one of {', '.join(QUANT_CHOICES)}, got {mode!r}")
    int8_cache = _int8_cache(settings)
    if mode in ("int8", "int4") and device.type != "cpu":
        raise ModelError(f"--quant {mode} uses torch's CPU kernels; on {device.type} use --quant none (bfloat16)")
    state = LazyState(files)
    weights_sha = sources.weights_hash(Path(directory))
    kernels = native.load(Path(settings.cache), progress) if device.type == "cpu" and mode != "none" else None
    if mode == "auto":
        mode = choose_quant(config, state, tokenizer, device, dtype, settings, weights_sha, progress, kernels,
                            int8_cache)
    compute = torch.bfloat16 if mode != "none" else dtype
    parameters = state.parameters()
    model = from_hf_state(config, state, compute, consume=True)  # reads each float32 tensor once, to convert it
    quantize_cached(model, mode, Path(settings.cache) / "fast" / f"packed-{weights_sha[:16]}-{mode}.safetensors",
                     kernels)
    model.to(device)
    window = context_window(_ConfigOnly(config), tokenizer)
    setup_step(model, SLOTS, window, kernels, int8_cache)
    label = str(compute).removeprefix("torch.") + ("" if mode == "none" else f"+{mode}")
    info = ModelInfo(name=settings.model, device=str(device), dtype=label, context_window=window,
                     weights_sha256=weights_sha, parameters=parameters)
    del state
    engine = FastEngine(model, tokenizer, info, config=config, directory=Path(directory), quant=mode,
                        compile_step=_want_compile(model, settings.compile, progress))
    return engine


COMPILE_MIN_PARAMETERS = 10_000_000  # below this (test models) compiling costs more than it saves


def _want_compile(model: Transformer, choice: str, progress: Callable[[str], None] | None) -> bool:
    """"1" forces compiling the decode step, "0" turns it off; "auto" compiles real models, not tiny ones.

    A model with the C++ step attached has nothing left to compile. On CUDA the compiled step is what
    the graphs capture: its fused kernels decoded 1.8-1.9x as fast as graphs of the eager step on an H200
    (docs/performance.md).
    """
    if isinstance(model.step, NativeStep):
        return False
    if choice in ("0", "1"):
        want = choice == "1"
    else:
        want = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()) >= COMPILE_MIN_PARAMETERS
    if want:
        sources.say(progress, "compiling the decode step (about a minute the first time, cached afterwards)…")
    return want


class _ConfigOnly:
    """What ``context_window`` reads from a model: its config."""

    def __init__(self, config: Any) -> None:
        self.config = config


def quantize_cached(model: Transformer, mode: str, path: Path, kernels: Any = None) -> None:
    """Quantize with the packed weights cached on disk: packing takes seconds, reading them back does not."""
    from safetensors.torch import load_file, save_file

    if mode == "none":
        return
    # torch's packed layout belongs to its CPU kernels, so that cache is only valid for this torch;
    # ChatCore's own layout is versioned with its kernels.
    kind = f"native{native.FORMAT_VERSION}" if kernels is not None else f"torch{torch.__version__.replace('+', '_')}"
    path = path.with_name(f"{path.stem}-{kind}{path.suffix}")
    try:
        # Cloned: tensors read by safetensors may sit at addresses the packed CPU kernels cannot take
        # (int8 matmuls on such memory crash); clones get torch's aligned allocations.
        packed = {name: tensor.clone() for name, tensor in load_file(str(path)).items()}
    except (OSError, ValueError, RuntimeError):  # absent or damaged: rebuild it
        packed = {}
    known = len(packed)
    quantization.quantize(model, mode, dense_prefill=True, packed=packed, kernels=kernels)
    if len(packed) > known:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            save_file({k: v.contiguous() for k, v in packed.items()}, str(partial))
            os.replace(partial, path)
        except OSError:
            pass  # a read-only cache only costs the packing time next start


class LazyState(Mapping[str, torch.Tensor]):
    """A state dict over safetensors files that reads each tensor when asked for it.

    Why: the float32 checkpoint (540 MB for the default model) was read whole before conversion, and
    loading peaked at twice the memory the engine then keeps. ``pop`` forgets a tensor once converted.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, list[int]] = {}
        for file in files:
            with _open(file) as handle:
                for name in handle.keys():
                    self._where[name], self._shapes[name] = file, handle.get_slice(name).get_shape()

    def __getitem__(self, name: str) -> torch.Tensor:
        # Opened for each tensor: a mapping left open keeps every page read so far resident.
        with _open(self._where[name]) as handle:
            return handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def pop(self, name: str) -> torch.Tensor:
        tensor = self[name]
        del self._where[name]
        return tensor

    def parameters(self) -> int:
        """How many numbers the tensors hold, from the files' headers."""
        return sum(math.prod(self._shapes[name]) for name in self._where)


def _open(file: Path) -> Any:
    from safetensors import safe_open

    return safe_open(str(file), framework="pt")


def choose_quant(config: Any, state: Mapping[str, torch.Tensor], tokenizer: Any, device: torch.device,
                 dtype: torch.dtype, settings: Settings, weights_sha: str,
                 progress: Callable[[str], None] | None = None, kernels: Any = None, int8_cache: bool = True) -> str:
    """``auto``: the fastest quantization whose perplexity stays within 2% of float32's.

    Quantized weights compute in bfloat16, so an explicit float32 dtype (or a GPU) means ``none``.
    The check runs once per model and kernel family, and is remembered in the cache directory.
    """
    if device.type != "cpu" or dtype != torch.float32 or settings.dtype not in ("auto", "bfloat16"):
        return "none"
    # Keyed by the kernels' source and width: the AVX2 and AVX-512 builds round differently, and a cache
    # directory may be shared between machines.
    kind = (f"-native-{native.source_digest()}-{native.instruction_set()}{'' if int8_cache else '-bf16cache'}"
            if kernels is not None else "")
    record = Path(settings.cache) / "fast" / f"quant-{weights_sha[:16]}{kind}.json"
    try:
        return json.loads(record.read_text())["quant"]
    except (OSError, ValueError, KeyError):
        pass
    sources.say(progress, "checking quantized accuracy (once per model)…")
    ids = torch.tensor([tokenizer.encode(CALIBRATION_TEXT, add_special_tokens=False)])
    reference = quantized_perplexity(config, state, ids, "none")
    chosen, scores = "none", {"none": reference}
    for mode in ("int4", "int8"):  # fastest first
        scores[mode] = quantized_perplexity(config, state, ids, mode, kernels, int8_cache)
        if scores[mode] <= reference * PPL_TOLERANCE:
            chosen = mode
            break
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"quant": chosen, "perplexity": scores, "tolerance": PPL_TOLERANCE}))
    except OSError:
        pass
    return chosen


def quantized_perplexity(config: Any, state: Mapping[str, torch.Tensor], ids: torch.Tensor, mode: str,
                         kernels: Any = None, int8_cache: bool = True) -> float:
    """Perplexity of ids [1, S] under the model quantized with ``mode`` (``none``: float32).

    With ``kernels`` every position goes through the C++ one-token step and its KV cache (int8 with
    ``int8_cache``), the path that answers use.
    """
    model = from_hf_state(config, state, torch.float32 if mode == "none" else torch.bfloat16)
    model = quantization.quantize(model, mode, kernels=kernels)
    if kernels is not None and mode != "none":
        setup_step(model, 1, ids.shape[1], kernels, int8_cache)
        if isinstance(model.step, NativeStep):
            return stepwise_perplexity(model, ids)
    return perplexity(model, ids)


def _int8_cache(settings: Settings) -> bool:
    """Whether ``settings`` ask the C++ step for an int8 KV cache (a clear error for a bad choice)."""
    choice = getattr(settings, "kv_cache", "int8") or "int8"
    if choice not in KV_CACHE_CHOICES:
        raise ParameterError("kv_cache", f"kv_cache must be one of {', '.join(KV_CACHE_CHOICES)}, got {choice!r}")
    return choice == "int8"


def setup_step(model: Transformer, slots: int, length: int, kernels: Any, int8_cache: bool = True) -> None:
    """Allocate the KV cache and attach the C++ step where it runs (``kernels``, not ``None``). With the
    step and ``int8_cache`` the cache is int8 where the step can read it (half the bytes that attention
    reads); otherwise in the model's dtype."""
    if kernels is None:
        model.setup_cache(slots, length)
        return
    model.setup_cache(slots, length, quantized=int8_cache and native.int8_cache_fits(model.cfg.head_dim))
    if not attach_native(kernels, model) and model.layers[0].attn.cache.quantized:
        model.setup_cache(slots, length)  # torch's step: its own dtype, not int8 to widen every step


def stepwise_perplexity(model: Transformer, ids: torch.Tensor) -> float:
    """Perplexity of ids [1, S] fed one token at a time through ``model.decode`` (slot 0)."""
    nll = torch.zeros(())
    with torch.inference_mode():
        for position in range(ids.shape[1] - 1):
            logits = model.decode(ids[0, position : position + 1], torch.tensor([position]), position + 1)
            nll += torch.nn.functional.cross_entropy(logits.float(), ids[0, position + 1 : position + 2])
    return float(torch.exp(nll / (ids.shape[1] - 1)))


def perplexity(model: Transformer, ids: torch.Tensor) -> float:
    """exp(mean next-token NLL) of ids [1, S] in one pass (S must fit the model's positions)."""
    with torch.inference_mode():
        logits = model.score(ids)[0, :-1]  # [S-1, V]
        nll = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:])
    return float(torch.exp(nll))


class FastEngine(LocalDecoder):
    """Streams answers from the fast decoder; the interface of ``chatcore.engine.base.Backend``."""

    def __init__(self, decoder: Transformer, tokenizer: Any, info: Any, *, config: Any, directory: Path,
                 quant: str, compile_step: bool = True, graphs: bool | None = None) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.info = info
        self.config = config
        self.quant = quant
        self.directory = directory  # the model's files
        self._hf_model: Any = None
        self._hf_lock = threading.Lock()
        self.eos_ids = frozenset(eos_token_ids(_GenerationConfigOnly(directory, config), tokenizer))
        # CUDA graphs wherever the step runs on CUDA, unless the caller says otherwise (a benchmark's baseline).
        self.step = choose_step(decoder, compile_step, decoder.device.type == "cuda" if graphs is None else graphs)
        step = self.step
        # A step that reads only the positions requests wrote needs nothing cleared ahead of it; one
        # that takes several prompts a call gets the prompts that arrive together.
        self.scheduler = Scheduler(step.prefill, step.decode, slots=decoder.slots, length=decoder.length,
                                   clear=decoder.clear if step.reads_unwritten else None, device=decoder.device,
                                   argmax=step.argmax, copy=decoder.copy_prefix,
                                   prefill_together=step.prefill_together if step.together_rows else None,
                                   together_rows=step.together_rows)

    @property
    def model(self) -> Any:
        """The same weights as a transformers model (float32), loaded on first use: for perplexity and checks."""
        with self._hf_lock:
            if self._hf_model is None:
                from transformers import AutoModelForCausalLM

                self._hf_model = AutoModelForCausalLM.from_pretrained(self.directory, dtype=torch.float32,
                                                                      use_safetensors=True).eval()
            return self._hf_model

    @property
    def kv_cache(self) -> str:
        """How the cache keeps keys and values: "int8", or the dtype's name ("bfloat16", "float32")."""
        cache = self.decoder.layers[0].attn.cache
        return "int8" if cache.quantized else str(cache.k.dtype).removeprefix("torch.")

    @property
    def kernels(self) -> str:
        """Whose kernels decode: ChatCore's C++ step ("native"), torch's replayed through CUDA graphs
        ("cuda-graphs"), or torch's ("torch")."""
        return self.step.kernels

    def stream(
        self,
        history: Sequence[Message | dict[str, Any]],
        params: GenerationParams,
        *,
        system: str | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Event]:
        """Answer the last user message of ``history``: ``Started``, ``TextDelta``s, then ``Finished``."""
        start = time.perf_counter()
        fitted, started = begin_answer(self.tokenizer, history, params, system, self.context_window)
        yield started
        seed = started.seed
        generator = torch.Generator(device=self.decoder.device).manual_seed(seed)
        request = Request(list(fitted.input_ids), params, generator, cancel, self.eos_ids)
        text = TextAssembler(self.tokenizer, params.stop)
        reason, first_token_at = "length", None
        try:
            self.scheduler.submit(request)
            while True:
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    break
                item = request.out.get()
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if isinstance(item, Done):
                    if item.error is not None:
                        raise ModelError(f"decoding failed: {item.error}") from item.error
                    reason = item.reason
                    break
                delta, stopped = text.add(item)
                if delta:
                    yield TextDelta(delta)
                if stopped:
                    reason = "stop"
                    break
        finally:
            request.abandoned.set()  # frees the slot at the next step, whatever ended the stream
        tail = text.flush()
        if tail:
            yield TextDelta(tail)
        yield finished_event(text, reason, start=start, first_token_at=first_token_at, fitted=fitted, seed=seed,
                             info=self.info, engine="chatcore.engine.fast", quant=self.quant, compiled=self.step.compiled,
                             kernels=self.kernels, kv_cache=self.kv_cache, cached_tokens=request.reused)


class _GenerationConfigOnly:
    """What ``eos_token_ids`` reads from a model: its generation config."""

    def __init__(self, directory: Path, config: Any) -> None:
        from transformers import GenerationConfig

        try:
            self.generation_config = GenerationConfig.from_pretrained(directory)
        except OSError:
            self.generation_config = GenerationConfig.from_model_config(config)

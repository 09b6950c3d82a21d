"""ChatCore's fast engine on CUDA against transformers ``generate``, on a random ~1.1B Llama in bfloat16.

No model hub is reachable, so the model is TinyLlama-1.1B's shape with random weights (throughput does
not depend on what the weights say). It is saved to a directory and loaded the way users' models are,
through ``load_engine`` with ``--device cuda``. Measured in one process, rounds interleaved:

- ChatCore as served (the step compiled with ``torch.compile`` and replayed through CUDA graphs; the
  load time includes the compile), the same decoder with graphs of the eager step, and stepping eagerly;
- transformers ``generate`` in bfloat16 on the same weights: the peer.

Reports decode tok/s (128 new tokens), prefill tok/s and time to first token for a 1,000-token prompt,
aggregate tok/s of 8 concurrent streams, peak GPU memory, and the memory-bandwidth bound on decoding
(weight bytes over a measured device-to-device copy rate). Also how far bfloat16 logits are from
float32 ones (see ``accuracy``), and one chat answer through the full ``stream()`` path.

    python -m bench.bench_cuda [--rounds 3] [--layers 22] [--out bench/results/cuda.json]
    bash bench/cuda-check.sh     # the CUDA tests, then this
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import say
from bench.bench_engines import concurrent_streams, timed_request

NEW_TOKENS = 128
PROMPT_TOKENS = 1000
STREAMS = 8
SHORT_TOKENS = 32
RESULTS = Path(__file__).parent / "results" / "cuda.json"
VOCAB = 32000


def build_model(directory: Path, layers: int, device: str) -> Path:
    """Save a random Llama of TinyLlama-1.1B's shape (bfloat16) with a 32,000-token byte-level tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from chatcore.testing.tiny import tiny_tokenizer

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers,
                         num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=0,
                         eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):  # random initialisation of a billion numbers is quick on the GPU
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    tiny_tokenizer(VOCAB).save_pretrained(directory)
    return directory


def _prompts() -> tuple[list[int], list[int], list[list[int]]]:
    """A short prompt, the 1,000-token prompt and 8 distinct short prompts: random ids, fixed seed."""
    g = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(3, VOCAB, (n,), generator=g).tolist()

    return ids(SHORT_TOKENS), ids(PROMPT_TOKENS), [ids(SHORT_TOKENS) for _ in range(STREAMS)]


def copy_bandwidth() -> float:
    """Device memory bandwidth in bytes/s: a 2 GB device-to-device copy, bytes read plus written."""
    source = torch.empty(2**30, dtype=torch.int16, device="cuda").random_()
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        target.copy_(source)
    end.record()
    torch.cuda.synchronize()
    return 2 * source.numel() * source.element_size() * 10 / (start.elapsed_time(end) / 1000)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def measure_chatcore(engine: Any, device: str) -> dict[str, float]:
    """The engine's scheduler, as bench_engines measures it on the CPU: greedy, EOS ignored."""
    short, long_ids, variants = _prompts()

    def run(ids: list[int], n: int) -> tuple[float, float, int]:
        return timed_request(engine.scheduler, ids, n, device)

    def streams() -> float:
        return concurrent_streams(engine.scheduler, variants, NEW_TOKENS, device)

    scheduler = engine.scheduler
    scheduler.reuse_prefixes = False  # every prompt prefilled whole: cold numbers, comparable with the peer's
    run(short, 8)  # warm-up: kernels chosen, short graphs captured
    run(long_ids, 2)
    run(long_ids[:300], NEW_TOKENS)  # a longer span's graphs
    _reset_peak(device)
    ttft, _, _ = run(long_ids, 1)
    _, rest, count = run(short, NEW_TOKENS)
    results = {"decode_tok_s": (count - 1) / rest, "prefill_tok_s": len(long_ids) / ttft, "ttft_ms": ttft * 1000}
    results["batch8_tok_s"] = streams()
    results["peak_gpu_mb"] = _peak_mb(device)
    return results


def measure_transformers(model: Any, device: str) -> dict[str, float]:
    """transformers ``generate`` (bfloat16, its default cache), greedy with EOS ignored."""
    short, long_ids, variants = _prompts()

    def generate(batch: list[list[int]], n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(torch.tensor(batch, device=device), attention_mask=torch.ones(len(batch), len(batch[0]),
                           dtype=torch.long, device=device), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=0)
        _sync(device)
        return time.perf_counter() - start

    generate([short], 8)  # warm-up
    _reset_peak(device)
    ttft = generate([long_ids], 1)
    one = generate([short], 1)
    full = generate([short], NEW_TOKENS)
    batch = generate(variants, NEW_TOKENS)
    return {"decode_tok_s": (NEW_TOKENS - 1) / (full - one), "prefill_tok_s": len(long_ids) / ttft,
            "ttft_ms": ttft * 1000, "batch8_tok_s": STREAMS * NEW_TOKENS / batch,
            "peak_gpu_mb": _peak_mb(device)}


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.float() - reference.float()).norm() / reference.float().norm())


def accuracy(engine: Any, eager: Any, directory: Path, device: str) -> dict[str, float]:
    """How far bfloat16 answers are from float32 ones: relative differences of logits (‖a − b‖ / ‖b‖).

    The 1,000-token prompt's last logits from ChatCore's prefill and from transformers in bfloat16, each
    against transformers in float32; then one 8-row step of the served step (compiled, in graphs)
    against the eager step on the same cache.
    """
    from transformers import AutoModelForCausalLM

    _, long_ids, variants = _prompts()
    ids = torch.tensor([long_ids], device=device)
    results = {}
    with torch.inference_mode():
        exact = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).to(device).eval()
        reference = exact(ids).logits[0, -1]
        del exact
        hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).to(device).eval()
        results["transformers_bf16_vs_fp32"] = _relative(hf(ids).logits[0, -1], reference)
        del hf
        results["chatcore_bf16_vs_fp32"] = _relative(engine.decoder.prefill(ids, slot=0)[0], reference)
        for slot, prompt in enumerate(variants):
            engine.decoder.prefill(torch.tensor([prompt], device=device), slot=slot)
        rows = len(variants)
        tokens = torch.tensor([prompt[-1] for prompt in variants], device=device)
        pos = torch.full((rows,), len(variants[0]), device=device)
        slots = torch.arange(rows, device=device)
        served = engine.step.decode(tokens, pos, slots, len(variants[0]) + 1)
        eager_logits = eager.step.decode(tokens, pos, slots, len(variants[0]) + 1)
        results["served_step_vs_eager_step"] = _relative(served, eager_logits)
    if device == "cuda":
        torch.cuda.empty_cache()
    return results


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def _table(medians: dict[str, dict[str, float]]) -> str:
    keys = ("decode_tok_s", "prefill_tok_s", "ttft_ms", "batch8_tok_s", "peak_gpu_mb")
    lines = [f"{'engine':<24}" + "".join(f"{k:>16}" for k in keys)]
    for name, row in medians.items():
        lines.append(f"{name:<24}" + "".join(f"{row.get(k, float('nan')):>16.1f}" for k in keys))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=22, help="22: TinyLlama-1.1B's depth")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script on a machine without a GPU")
    args = parser.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_cuda needs a CUDA GPU (--device cpu for a dry run)")
    from transformers import AutoModelForCausalLM

    from chatcore.core.params import GenerationParams
    from chatcore.core.settings import Settings
    from chatcore.engine.fast.engine import FastEngine
    from chatcore.engine.loader import load_engine

    report: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else device,
                              "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="chatcore-cuda-"))
    say(f"building a random {args.layers}-layer Llama (TinyLlama-1.1B's shape) in {work}…")
    directory = build_model(work / "model", args.layers, device)
    started = time.perf_counter()
    settings = Settings(home=work / "home", cache=work / "cache", model=str(directory), device=device,
                        dtype="bfloat16", quant="none", compile="auto")
    engine = load_engine(settings, progress=say)  # as served: compiled, captured in graphs on CUDA
    if not isinstance(engine, FastEngine):
        raise SystemExit("the model did not load on the fast path")
    report["chatcore_load_s"] = time.perf_counter() - started  # the compile and the first captures included
    report.update(parameters=engine.info.parameters, kernels=engine.kernels, compiled=engine.step.compiled)
    weight_bytes = sum(p.numel() * p.element_size() for p in engine.decoder.parameters())
    bandwidth = copy_bandwidth() if device == "cuda" else float("nan")
    report["copy_gb_s"] = bandwidth / 1e9
    report["decode_bound_tok_s"] = bandwidth / weight_bytes  # every weight read once per step
    say(f"loaded in {report['chatcore_load_s']:.1f} s: {engine.info.parameters / 1e9:.2f} B parameters, "
        f"kernels {engine.kernels}, compiled {engine.step.compiled}; copy {bandwidth / 1e9:.0f} GB/s, so "
        f"decoding is bound at {report['decode_bound_tok_s']:.0f} tok/s")
    # One chat answer through the whole product path (template, scheduler, graphs, detokenizer).
    finished = list(engine.stream([{"role": "user", "content": "What is a KV cache?"}],
                                  GenerationParams.create(temperature=0.7, seed=3, max_new_tokens=24)))[-1]
    report["stream_extra"] = finished.extra
    say(f"stream(): {finished.completion_tokens} tokens, {finished.finish_reason}, {finished.extra}")

    def variant(compile_step: bool, graphs: bool) -> FastEngine:
        return FastEngine(engine.decoder, engine.tokenizer, engine.info, config=engine.config,
                          directory=engine.directory, quant=engine.quant, compile_step=compile_step, graphs=graphs)

    graphs_only, eager = variant(False, device == "cuda"), variant(False, False)
    report["accuracy"] = accuracy(engine, eager, directory, device)
    say(f"relative differences of logits: {report['accuracy']}")
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).to(device).eval()
    served = "chatcore (compiled, graphs)"
    contenders: dict[str, Callable[[], dict[str, float]]] = {
        served: lambda: measure_chatcore(engine, device),
        "chatcore (graphs only)": lambda: measure_chatcore(graphs_only, device),
        "chatcore (eager step)": lambda: measure_chatcore(eager, device),
        "transformers bf16": lambda: measure_transformers(hf, device),
    }
    rounds = _interleaved(contenders, args.rounds)
    medians = {name: _medians(r) for name, r in rounds.items()}
    ours, peer = medians[served], medians["transformers bf16"]
    report["rounds"] = rounds
    report["ratios"] = {
        "decode_vs_transformers": ours["decode_tok_s"] / peer["decode_tok_s"],
        "ttft_vs_transformers": ours["ttft_ms"] / peer["ttft_ms"],
        "batch8_vs_single_stream": ours["batch8_tok_s"] / ours["decode_tok_s"],
        "decode_vs_graphs_only": ours["decode_tok_s"] / medians["chatcore (graphs only)"]["decode_tok_s"],
        "decode_vs_eager_step": ours["decode_tok_s"] / medians["chatcore (eager step)"]["decode_tok_s"],
        "decode_vs_bandwidth_bound": ours["decode_tok_s"] / report["decode_bound_tok_s"],
    }
    _write(args.out, report, medians)
    return 0


def _interleaved(contenders: dict[str, Callable[[], dict[str, float]]], rounds: int) -> dict[str, list[dict[str, float]]]:
    """Each contender measured ``rounds`` times, taking turns."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for i in range(rounds):
        for name, measure in contenders.items():
            say(f"round {i + 1}/{rounds}: {name}…")
            results[name].append(measure())
    return results


def _write(out: Path, report: dict[str, Any], medians: dict[str, dict[str, float]]) -> None:
    report["engines"] = medians
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(_table(medians))
    print(json.dumps(report["ratios"], indent=2), flush=True)


if __name__ == "__main__":
    sys.exit(main())

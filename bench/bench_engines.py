"""ChatCore's engine against transformers ``generate`` and llama.cpp on the default model, interleaved.

Each measurement runs in its own subprocess (so peak RSS belongs to one engine); rounds alternate the
engines so that noise from other work on the machine hits them alike. Medians go to
``bench/results/latest.json``; a table and the goal ratios go to stdout, progress to stderr.

    python -m bench                 # 3 rounds, all engines
    python -m bench --rounds 5 --engines chatcore,llama.cpp
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import say

ENGINES = ("chatcore", "transformers", "llama.cpp")
NEW_TOKENS = 128
PROMPT_TOKENS = 1000
STREAMS = 8
RESULTS = Path(__file__).parent / "results" / "latest.json"
GGUF = Path.home() / ".cache" / "chatcore" / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "Explain briefly how vaccines train the immune system, with one example."
FILLER = (
    "Researchers keep careful notes of every experiment: the date, the materials, the measurements and "
    "what surprised them. Those notes let others repeat the work and find mistakes. "
)


def _settings():
    from chatcore.core.settings import Settings

    return Settings()


def _model_directory() -> Path:
    """The default model's local directory (downloaded first if needed)."""
    from chatcore.engine import sources

    settings = _settings()
    return sources.ensure_local(settings.model, settings, say)


def _prompts(tokenizer: Any) -> tuple[list[int], list[int], list[list[int]]]:
    """The short chat prompt, the 1,000-token prompt and 8 distinct short prompts, as token ids."""
    def chat(text: str) -> list[int]:
        return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"])

    long_ids = tokenizer.encode(FILLER * 60, add_special_tokens=False)[:PROMPT_TOKENS]
    return chat(QUESTION), long_ids, [chat(f"{QUESTION} (variant {i})") for i in range(STREAMS)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_request(scheduler: Any, ids: list[int], n: int, device: str = "cpu") -> tuple[float, float, int]:
    """Submit one greedy request to a fast engine's scheduler (EOS ignored, so exactly n tokens); returns
    submit->first token, first->last token, and the tokens received."""
    import torch

    from chatcore.core.params import GenerationParams
    from chatcore.engine.fast.scheduler import Done, Request

    params = GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=n)
    request = Request(ids, params, torch.Generator(device=device), None, frozenset())
    start = time.perf_counter()
    scheduler.submit(request)
    first, count = None, 0
    while not isinstance(item := request.out.get(), Done):
        count += 1
        first = first or time.perf_counter()
    if item.error:
        raise item.error
    return first - start, time.perf_counter() - first, count


def concurrent_streams(scheduler: Any, prompts: list[list[int]], n: int, device: str = "cpu") -> float:
    """Aggregate tok/s of ``prompts`` submitted at once, n tokens each, one consumer thread per stream."""
    done: list[int] = []
    start = time.perf_counter()
    threads = [threading.Thread(target=lambda ids=ids: done.append(timed_request(scheduler, ids, n, device)[2]))
               for ids in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - start)


# One engine per process --------------------------------------------------------------------------

def measure_chatcore() -> dict[str, float]:
    from chatcore.engine.fast.engine import FastEngine
    from chatcore.engine.loader import load_engine

    engine = load_engine(_settings(), progress=say)
    if not isinstance(engine, FastEngine):
        raise SystemExit("the default model did not load on the fast path")
    short, long_ids, variants = _prompts(engine.tokenizer)

    def run(ids: list[int], n: int) -> tuple[float, float, int]:
        return timed_request(engine.scheduler, ids, n)

    def streams() -> float:
        return concurrent_streams(engine.scheduler, variants, NEW_TOKENS)

    run(short, 8)  # warm-up
    run(long_ids[:200], 2)
    scheduler = engine.scheduler
    scheduler.reuse_prefixes = False  # a cold prompt: the warm-up holds its first 200 tokens
    ttft, _, _ = run(long_ids, 1)
    results: dict[str, float] = {"prefill_tok_s": len(long_ids) / ttft, "ttft_ms": ttft * 1000}
    # The 8 streams without reusing held prefixes: every prompt prefilled whole, one after another.
    results["batch8_cold_tok_s"] = streams()
    scheduler.reuse_prefixes = True
    _, rest, count = run(short, NEW_TOKENS)
    results["decode_tok_s"] = (count - 1) / rest
    # As served: the variants share the chat template and the question with what the slots hold.
    results["batch8_tok_s"] = streams()
    results["peak_rss_mb"] = _peak_rss_mb()
    results["quant"] = engine.quant  # type: ignore[assignment]
    results["compiled"] = engine.step.compiled  # type: ignore[assignment]
    results["kernels"] = engine.kernels  # type: ignore[assignment]
    if engine.kernels == "native":
        from chatcore.engine.fast import native

        results["instruction_set"] = native.instruction_set()  # type: ignore[assignment]
    return results


def measure_transformers() -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = _model_directory()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    short, long_ids, _ = _prompts(tokenizer)

    def generate(ids: list[int], n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=tokenizer.eos_token_id)
        return time.perf_counter() - start

    generate(short, 8)  # warm-up
    ttft = generate(long_ids, 1)
    one = generate(short, 1)
    full = generate(short, NEW_TOKENS)
    return {"decode_tok_s": (NEW_TOKENS - 1) / (full - one), "prefill_tok_s": len(long_ids) / ttft,
            "ttft_ms": ttft * 1000, "peak_rss_mb": _peak_rss_mb()}


def measure_llama_cpp() -> dict[str, float]:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    short, long_ids, _ = _prompts(AutoTokenizer.from_pretrained(_model_directory()))
    llm = Llama(model_path=str(GGUF), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)

    def generate(ids: list[int], n: int) -> tuple[float, float]:
        """Greedy, EOS ignored: submit->first token, first->n-th token."""
        start = time.perf_counter()
        first = None
        for i, _ in enumerate(llm.generate(ids, top_k=1, temp=0.0, reset=True)):
            first = first or time.perf_counter()
            if i + 1 >= n:
                break
        return first - start, time.perf_counter() - first

    generate(short, 8)  # warm-up
    ttft, _ = generate(long_ids, 1)
    _, rest = generate(short, NEW_TOKENS)
    return {"decode_tok_s": (NEW_TOKENS - 1) / rest, "prefill_tok_s": len(long_ids) / ttft,
            "ttft_ms": ttft * 1000, "peak_rss_mb": _peak_rss_mb()}


MEASURE = {"chatcore": measure_chatcore, "transformers": measure_transformers, "llama.cpp": measure_llama_cpp}


# The driver -------------------------------------------------------------------------------------

def _run_child(engine: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.bench_engines", "--child", engine], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"{engine} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(medians: dict[str, dict[str, Any]]) -> str:
    keys = ("decode_tok_s", "prefill_tok_s", "ttft_ms", "batch8_tok_s", "batch8_cold_tok_s", "peak_rss_mb")
    lines = [f"{'engine':<14}" + "".join(f"{k:>19}" for k in keys)]
    for engine, row in medians.items():
        cells = "".join(f"{row[k]:>19.1f}" if isinstance(row.get(k), (int, float)) else f"{'-':>19}" for k in keys)
        lines.append(f"{engine:<14}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(MEASURE[args.child]()))
        return 0
    engines = [e for e in args.engines.split(",") if e]
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    for r in range(args.rounds):
        order = engines if r % 2 == 0 else engines[::-1]  # alternate who goes first
        for engine in order:
            say(f"[round {r + 1}/{args.rounds}] {engine}: loading and measuring…")
            started = time.perf_counter()
            result = _run_child(engine)
            runs[engine].append(result)
            summary = ", ".join(f"{k} {v:.1f}" for k, v in result.items() if isinstance(v, float))
            say(f"[round {r + 1}/{args.rounds}] {engine}: {summary} ({time.perf_counter() - started:.0f} s)")
    medians: dict[str, dict[str, Any]] = {}
    for engine, results in runs.items():
        row: dict[str, Any] = {}
        for key in results[0]:
            values = [res[key] for res in results]
            row[key] = statistics.median(values) if isinstance(values[0], float) else values[0]
        row["runs"] = results
        medians[engine] = row
    report: dict[str, Any] = {"engines": medians, "rounds": args.rounds, "new_tokens": NEW_TOKENS,
                              "prompt_tokens": PROMPT_TOKENS, "streams": STREAMS, "threads": os.cpu_count()}
    ours, llama = medians.get("chatcore"), medians.get("llama.cpp")
    if ours and llama:
        report["ratios"] = {
            "decode_vs_llama_cpp": ours["decode_tok_s"] / llama["decode_tok_s"],
            "ttft_vs_llama_cpp": ours["ttft_ms"] / llama["ttft_ms"],
            "batch8_vs_single": ours["batch8_tok_s"] / ours["decode_tok_s"],
            "batch8_cold_vs_single": ours["batch8_cold_tok_s"] / ours["decode_tok_s"],
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(_table(medians))
    for name, value in report.get("ratios", {}).items():
        print(f"{name}: {value:.2f}x")
    print(f"(medians of {args.rounds} interleaved rounds; written to {RESULTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time to first token of a long prompt (a question over five retrieved passages) in one process: the
fast engine's prefill as it runs now against torch's prefill over dense bfloat16 copies of the layers
(the path long prompts took on every CPU before), and llama.cpp on the same GGUF where it is installed.

The paths alternate round by round (the order reversed every other round), so that other work on the
machine hits them alike; medians, minima and maxima go to stdout. Accuracy is checked on the same
prompt: each path's last logits against float32 transformers', and the perplexity of the prompt's own
text as each path prefills it.

    python -m bench.bench_prefill                      # 1,000 tokens, 5 rounds
    python -m bench.bench_prefill --tokens 1500 --rounds 7 --no-llama
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import say
from bench.bench_engines import GGUF, timed_request

TEXT = Path("/usr/share/common-licenses/GPL-3")  # plain English prose, not written by this project
QUESTION = "Which freedoms does this license protect, and what must a distributor give the recipients?"


def passages_prompt(tokenizer: Any, tokens: int) -> list[int]:
    """A chat prompt of about ``tokens`` tokens: five numbered passages of TEXT, then QUESTION."""
    words = TEXT.read_text().split()
    per = max(1, tokens * 3 // 4 // 5)  # ~0.75 words a token; refined below
    for _ in range(8):
        passages = [" ".join(words[i * per:(i + 1) * per]) for i in range(5)]
        body = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(passages, 1))
        content = f"Answer from these passages, citing them as [n].\n\n{body}\n\nQuestion: {QUESTION}"
        ids = list(tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"])
        if abs(len(ids) - tokens) <= 10:
            break
        per = max(1, round(per * tokens / len(ids)))
    return ids


def rss_mb() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dense_copies(engine: Any) -> dict[str, torch.Tensor]:
    """Each layer's weight in bfloat16 from the checkpoint (not the head's), by the decoder's module name:
    what the dense prefill multiplies with."""
    from transformers import AutoConfig

    from chatcore.engine.fast.engine import LazyState
    from chatcore.engine.fast.model import from_hf_state

    config = AutoConfig.from_pretrained(engine.directory)
    model = from_hf_state(config, LazyState(sorted(engine.directory.glob("*.safetensors"))), torch.bfloat16)
    return {name: module.weight.detach() for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name != "output"}


def attach(decoder: Any, copies: dict[str, torch.Tensor] | None) -> None:
    """Give each packed layer its dense copy (``None``: take them away)."""
    for name, module in decoder.named_modules():
        if hasattr(module, "dense") and name != "output":
            module.dense = None if copies is None else copies[name]


def llama_ttft(ids: list[int]) -> Callable[[], float] | None:
    """A function timing llama.cpp's first token for ids (2 threads), or None where it is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    if not GGUF.exists():
        return None
    llm = Llama(model_path=str(GGUF), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)

    def run() -> float:
        llm.reset()  # else generate() keeps the prompt it already holds and prefills nothing
        start = time.perf_counter()
        for _ in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            break
        return time.perf_counter() - start

    return run


def accuracy(engine: Any, ids: list[int], copies: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Last logits against float32 transformers' (relative error, same top token) and the prompt's
    perplexity through each path."""
    decoder = engine.decoder
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        reference = engine.model(tokens).logits[0].float()  # [S, V]
        kernel = decoder.step.kernel
        s = len(ids)
        every = kernel.forward(tokens[0], torch.zeros(s, dtype=torch.long), torch.arange(s), torch.arange(s))
        attach(decoder, copies)
        dense = decoder.score(tokens)[0].float()
        attach(decoder, None)

    def nll(logits: torch.Tensor) -> float:
        return float(torch.exp(torch.nn.functional.cross_entropy(logits[:-1], tokens[0, 1:])))

    out: dict[str, Any] = {"perplexity": {"float32": nll(reference), "native": nll(every), "dense": nll(dense)}}
    for name, logits in (("native", every), ("dense", dense)):
        last, ref = logits[-1], reference[-1]
        out[f"last_logits_{name}"] = {"relative_error": float((last - ref).norm() / ref.norm()),
                                      "same_top": bool(last.argmax() == ref.argmax()),
                                      "top5_overlap": len(set(last.topk(5).indices.tolist())
                                                          & set(ref.topk(5).indices.tolist()))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000, help="prompt length")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-llama", action="store_true", help="leave llama.cpp out")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the logit and perplexity checks")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from chatcore.core.settings import Settings
    from chatcore.engine.fast.engine import FastEngine
    from chatcore.engine.loader import load_engine

    engine = load_engine(Settings(), progress=say)
    if not isinstance(engine, FastEngine):
        raise SystemExit("the default model did not load on the fast path")
    decoder = engine.decoder
    ids = passages_prompt(engine.tokenizer, args.tokens)
    say(f"prompt: {len(ids)} tokens; quant {engine.quant}, kernels {engine.kernels}, threads {torch.get_num_threads()}")
    results: dict[str, Any] = {"prompt_tokens": len(ids), "threads": torch.get_num_threads(), "quant": engine.quant,
                               "kernels": engine.kernels, "rss_mb_loaded": rss_mb()}
    # Decode, before anything else is loaded: 64 greedy tokens after a short prompt, through the scheduler.
    short = ids[-40:]
    timed_request(engine.scheduler, short, 8)
    decode = []
    for _ in range(3):
        _, rest, count = timed_request(engine.scheduler, short, 64)
        decode.append((count - 1) / rest)
    results["decode_tok_s"] = {"median": statistics.median(decode), "all": decode}

    copies = dense_copies(engine)
    results["dense_copies_mb"] = sum(t.numel() * t.element_size() for t in copies.values()) / 2**20
    tokens = torch.tensor([ids])
    slot = 0

    def now() -> float:
        start = time.perf_counter()
        decoder.prefill(tokens, slot)
        return time.perf_counter() - start

    def dense() -> float:
        attach(decoder, copies)
        try:
            start = time.perf_counter()
            with torch.inference_mode():
                decoder.torch_prefill(tokens, slot)
            return time.perf_counter() - start
        finally:
            attach(decoder, None)

    paths: dict[str, Callable[[], float]] = {"chatcore": now, "chatcore_dense_bf16": dense}
    llama = None if args.no_llama else llama_ttft(ids)
    if llama is not None:
        paths["llama.cpp"] = llama
    for run in paths.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.rounds):
        order = list(paths) if r % 2 == 0 else list(paths)[::-1]
        for name in order:
            times[name].append(paths[name]())
        say(f"round {r + 1}: " + ", ".join(f"{name} {times[name][-1] * 1000:.0f} ms" for name in paths))
    results["ttft_ms"] = {name: {"median": statistics.median(v) * 1000, "min": min(v) * 1000, "max": max(v) * 1000,
                                 "all": [round(x * 1000, 1) for x in v]} for name, v in times.items()}
    results["prefill_tok_s"] = {name: len(ids) / statistics.median(v) for name, v in times.items()}
    if llama is not None:
        results["ttft_ratio_vs_llama"] = {name: statistics.median(times[name]) / statistics.median(times["llama.cpp"])
                                          for name in paths if name != "llama.cpp"}
    results["rss_mb_peak"] = float(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    if not args.no_accuracy:
        results["accuracy"] = accuracy(engine, ids, copies)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

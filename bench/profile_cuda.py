"""Where a CUDA decode step's time goes: the GPU kernels of one step, grouped, for 1 and 8 rows.

The same random ~1.1B Llama as ``bench_cuda`` (built in memory, not saved), its step compiled and
captured the way the engine serves it. Each step is timed as a graph replay with CUDA events, then
``torch.profiler`` records the kernels of a few replays. Those times are summed by kind (matrix
products, attention, the rest) and set against the replay time and the weights' bandwidth bound.

    python -m bench.profile_cuda [--layers 22] [--eager]    # --eager: graphs of the uncompiled step
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from bench import say

STEPS = 20


def _kind(name: str) -> str:
    """A kernel's family, from its name."""
    low = name.lower()
    if any(word in low for word in ("gemm", "gemv", "cublas", "cutlass", "sm90_xmma", "nvjet", "splitk")):
        return "matrix products"
    if any(word in low for word in ("attention", "fmha", "flash", "softmax", "sdpa")):
        return "attention"
    if "triton" in low:
        return "fused elementwise (triton)"
    return "other"


def _kernels(step) -> tuple[dict[str, float], dict[str, int], dict[str, float]]:
    """GPU time per step (us) by kind, kernel launches by kind (over STEPS steps), and by kernel name."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
    kinds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    top: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            us = event.time_range.elapsed_us() / STEPS
            kinds[_kind(event.name)] += us
            counts[_kind(event.name)] += 1
            top[event.name[:90]] += us
    return kinds, counts, top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--eager", action="store_true", help="capture the uncompiled step")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cuda-profile.json")
    args = parser.parse_args(argv)
    from transformers import LlamaConfig, LlamaForCausalLM

    from chatcore.engine.fast.graphs import StepGraphs
    from chatcore.engine.fast.model import from_hf_state

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=args.layers,
                         num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device("cuda"):
        hf = LlamaForCausalLM(config).to(torch.bfloat16)
    model = from_hf_state(config, hf.state_dict(), torch.bfloat16)
    del hf
    model.setup_cache(8, 4096)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    say("compiling and capturing…" if not args.eager else "capturing…")
    step = None if args.eager else torch.compile(model.torch_step, dynamic=True)
    graphs = StepGraphs(model, step)
    graphs.warm_up()
    report: dict = {"layers": args.layers, "compiled": not args.eager, "weight_gb": weight_bytes / 1e9, "rows": {}}
    for rows in (1, 8):
        tokens = torch.randint(3, 32000, (rows,), device="cuda")
        pos = torch.full((rows,), 200, device="cuda")
        slots = torch.arange(rows, device="cuda")
        for _ in range(3):
            graphs(tokens, pos, slots, 201)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(STEPS):
            graphs(tokens, pos, slots, 201)
        end.record()
        torch.cuda.synchronize()
        step_ms = start.elapsed_time(end) / STEPS
        kinds, counts, top = _kernels(lambda: graphs(tokens, pos, slots, 201))
        source = "graph replays"
        if not counts:  # the profiler saw no kernels inside the graphs: the same step launched directly
            inputs = torch.stack([tokens, pos, slots])
            kinds, counts, top = _kernels(lambda: graphs.run(inputs, 256))
            source = "direct launches of the captured step"
        kernels = sum(counts.values()) / STEPS
        entry = {"step_ms": step_ms, "kernels_per_step": kernels, "profiled": source,
                 "kernel_us_by_kind": dict(kinds), "kernel_count_by_kind": {k: v / STEPS for k, v in counts.items()},
                 "top_kernels_us": dict(sorted(top.items(), key=lambda kv: -kv[1])[:12]),
                 "bandwidth_gb_s_of_weights": weight_bytes / (step_ms / 1000) / 1e9}
        report["rows"][rows] = entry
        say(f"{rows} rows: {step_ms:.3f} ms a step (graph replay), {kernels:.0f} kernels ({source}); "
            f"kernel time by kind (us): { {k: round(v) for k, v in kinds.items()} }; weights read at "
            f"{entry['bandwidth_gb_s_of_weights']:.0f} GB/s")
        for name, us in list(entry["top_kernels_us"].items())[:8]:
            say(f"    {us:8.1f} us  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two builds of the C++ kernels against each other, in one process, over the same weights and cache.

The host these run on drifts by more between two runs than a kernel change gains, so each build's
step is timed in blocks that alternate (A B, then B A, ...) and the medians are compared. Each source
file is built once into ``/tmp/chatcore-ab/<digest>`` with the engine's own compiler flags.

    git show HEAD~1:chatcore/engine/fast/csrc/native.cpp > /tmp/old.cpp
    python -m bench.bench_ab /tmp/old.cpp chatcore/engine/fast/csrc/native.cpp --rows 1,8 --start 100

``--caches bfloat16,int8`` gives each build its own KV cache of that kind (default: int8, as the engine).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from bench import say

BUILDS = Path("/tmp/chatcore-ab")


def build(source: Path) -> Any:
    """The extension module compiled from ``source`` (cached by its digest)."""
    from torch.utils.cpp_extension import load

    from chatcore.engine.fast import native

    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    directory = BUILDS / digest
    directory.mkdir(parents=True, exist_ok=True)
    say(f"building {source} ({digest})…")
    return load(name=f"chatcore_ab_{digest}", sources=[str(source)], build_directory=str(directory),
                extra_cflags=list(native.CFLAGS), verbose=False)


def decoder_for(module: Any, model: Any) -> Any:
    """``module``'s C++ step over ``model``'s packed weights and KV cache (shared, not copied)."""
    from chatcore.engine.fast.step import build_decoder

    def kernel(layer: Any) -> Any:  # this build's own object over the layer's buffers
        return module.QLinear(layer.bits, layer.codes, layer.scales, layer.out_features, layer.in_features)

    return build_decoder(module, model, kernel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs=2, type=Path, help="the two native.cpp files, A then B")
    parser.add_argument("--rows", default="1,8", help="rows a step, comma-separated")
    parser.add_argument("--start", type=int, default=100, help="the position the steps start from")
    parser.add_argument("--steps", type=int, default=32, help="steps a timed block")
    parser.add_argument("--rounds", type=int, default=12, help="blocks per build and row count")
    parser.add_argument("--caches", default="int8,int8", help="each build's KV cache, A then B: int8 or bfloat16")
    args = parser.parse_args(argv)

    from chatcore.core.settings import Settings
    from chatcore.engine.fast.engine import KV_CACHE_CHOICES, FastEngine
    from chatcore.engine.loader import load_engine

    engine = load_engine(Settings(), progress=say)
    if not isinstance(engine, FastEngine) or engine.kernels != "native":
        raise SystemExit("the default model did not load on the native kernels (see `chatcore models`)")
    model = engine.decoder
    rows_list = [int(r) for r in args.rows.split(",")]
    if max(rows_list) > model.slots:
        raise SystemExit(f"at most {model.slots} rows")
    decoders = []
    for source, cache in zip(args.sources, args.caches.split(",")):
        if cache not in KV_CACHE_CHOICES:
            raise SystemExit(f"--caches: one of {', '.join(KV_CACHE_CHOICES)} for each build, got {cache!r}")
        model.setup_cache(max(rows_list), args.start + args.steps + 1, quantized=cache == "int8")  # its own cache
        decoders.append(decoder_for(build(source), model))
    times: dict[tuple[int, int], list[float]] = {(i, r): [] for i in range(2) for r in rows_list}

    def run() -> None:  # on a thread of its own, as the scheduler runs the step
        with torch.inference_mode():
            prompt = torch.arange(100, 100 + args.start)
            for decoder in decoders:
                for slot in range(max(rows_list)):
                    decoder.forward(prompt, torch.full_like(prompt, slot), torch.arange(args.start),
                                    torch.tensor([args.start - 1]))
            for round_ in range(args.rounds):
                for rows in rows_list:
                    for i in (0, 1) if round_ % 2 == 0 else (1, 0):
                        decoders[i].decode(torch.full((rows,), 7), torch.full((rows,), args.start))  # warm
                        began = time.perf_counter()
                        for position in range(args.start, args.start + args.steps):
                            decoders[i].decode(torch.full((rows,), 7), torch.full((rows,), position))
                        times[(i, rows)].append((time.perf_counter() - began) / args.steps * 1000)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    for rows in rows_list:
        a, b = (statistics.median(times[(i, rows)]) for i in range(2))
        print(f"{rows} row(s) from position {args.start}: A {a:.2f} ms, B {b:.2f} ms a step (B/A {b / a:.3f}; "
              f"medians of {args.rounds} blocks of {args.steps} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

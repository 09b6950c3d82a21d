"""The fast engine's one-token step on its own: how it scales with rows and context, and its linears.

What `make bench` cannot separate: the raw C++ step (no scheduler, sampling or Python around it) at
1 and 8 rows, at several context lengths, and the time of each kind of linear over all layers, both
streamed and with one layer's weights kept hot (arithmetic alone). The figures behind
docs/performance.md.

    python -m bench.bench_step
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import torch

from bench import say


def step_ms(decoder: Any, rows: int, start: int, steps: int) -> float:
    """Mean ms of a step for `rows` slots decoding positions start, start+1, ... (after a prompt each)."""
    native = decoder.step.kernel  # the C++ Decoder itself, without the Python around it
    with torch.inference_mode():
        for slot in range(rows):
            decoder.prefill(torch.arange(100, 100 + start)[None], slot)
        native.decode(torch.full((rows,), 7), torch.full((rows,), start))  # warm-up
        began = time.perf_counter()
        for position in range(start, start + steps):
            native.decode(torch.full((rows,), 7), torch.full((rows,), position))
        return (time.perf_counter() - began) / steps * 1000


def linears_ms(decoder: Any, rows: int, repeats: int = 10, hot: bool = False) -> dict[str, float]:
    """Best-of-`repeats` ms of each kind of linear over every layer, for `rows` rows of input. With
    ``hot``, the first layer's linear as many times instead: its weights stay in cache, so the time is
    the kernel's arithmetic alone, and the difference from the streamed figure what reading costs."""
    kinds = {name: [layer.get_submodule(name).kernel for layer in decoder.layers]
             for name in ("attn.wqkv", "attn.wo", "mlp.w13", "mlp.w2")}
    kinds["head"] = [decoder.output.kernel]
    if hot:
        kinds = {name: kernels[:1] * len(kernels) for name, kernels in kinds.items() if name != "head"}
    out = {}
    for name, kernels in kinds.items():
        inputs = [torch.randn(rows, k.in_features) for k in kernels]
        best = float("inf")
        for _ in range(repeats):
            began = time.perf_counter()
            for kernel, x in zip(kernels, inputs):
                kernel.forward(x)
            best = min(best, time.perf_counter() - began)
        out[name] = best * 1000
    return out


def main() -> int:
    from chatcore.core.settings import Settings
    from chatcore.engine.fast.engine import FastEngine
    from chatcore.engine.loader import load_engine

    engine = load_engine(Settings(), progress=say)
    if not isinstance(engine, FastEngine) or engine.kernels != "native":
        raise SystemExit("the default model did not load on the native kernels (see `chatcore models`)")
    decoder = engine.decoder
    results: dict[str, Any] = {}

    def in_worker_thread() -> None:  # where the scheduler runs it
        for rows in (1, 8):
            for start in (40, 400, 1000):
                say(f"step: {rows} row(s) from position {start}…")
                results[f"step_ms rows={rows} from={start}"] = step_ms(decoder, rows, start, 64)

    worker = threading.Thread(target=in_worker_thread)
    worker.start()
    worker.join()
    for rows in (1, 8):
        say(f"linears: {rows} row(s)…")
        for name, ms in linears_ms(decoder, rows).items():
            results[f"linears_ms rows={rows} {name}"] = ms
        for name, ms in linears_ms(decoder, rows, hot=True).items():
            results[f"linears_hot_ms rows={rows} {name}"] = ms
    for key, value in results.items():
        print(f"{key:<40} {value:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

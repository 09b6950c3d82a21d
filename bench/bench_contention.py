"""The fast engine's one-token step while other processes keep the cores busy.

A local assistant shares its machine: the browser showing the answer, an editor, a build. This
measures the raw C++ step (1 and 8 rows) with 0, 1 and 2 busy processes beside it, each either
spinning all the time or half the time (10 ms periods), as the best and worst of 3 rounds of 64 steps.

    python -m bench.bench_contention
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from typing import Any

from bench import say
from bench.bench_step import step_ms

# (busy processes, share of each 10 ms period they spin)
LOADS = ((0, 0.0), (1, 1.0), (1, 0.5), (2, 0.5), (2, 1.0))
PERIOD_S = 0.01


def busy(duty: float) -> None:
    """Spin for `duty` of every 10 ms period, sleep the rest (a process that competes for a core)."""
    while True:
        began = time.perf_counter()
        while time.perf_counter() - began < PERIOD_S * duty:
            pass
        if duty < 1:
            time.sleep(PERIOD_S * (1 - duty))


def step_range_ms(decoder: Any, rows: int, rounds: int = 3) -> tuple[float, float]:
    """Best and worst mean step time (ms) over `rounds` of 64 steps from position 40."""
    means = [step_ms(decoder, rows, 40, 64) for _ in range(rounds)]
    return min(means), max(means)


def main() -> int:
    from chatcore.core.settings import Settings
    from chatcore.engine.fast.engine import FastEngine
    from chatcore.engine.loader import load_engine

    engine = load_engine(Settings(), progress=say)
    if not isinstance(engine, FastEngine) or engine.kernels != "native":
        raise SystemExit("the default model did not load on the native kernels (see `chatcore models`)")
    print(f"{'busy processes':<22} {'1 row (ms)':>14} {'8 rows (ms)':>14}")
    for count, duty in LOADS:
        say(f"{count} busy process(es) at {duty:.0%}…")
        others = [multiprocessing.Process(target=busy, args=(duty,), daemon=True) for _ in range(count)]
        for process in others:
            process.start()
        time.sleep(0.3)  # let them settle on the cores
        result: dict[int, tuple[float, float]] = {}
        # The scheduler runs the step on a thread of its own, not the main one.
        worker = threading.Thread(target=lambda: result.update({rows: step_range_ms(engine.decoder, rows)
                                                                for rows in (1, 8)}))
        worker.start()
        worker.join()
        for process in others:
            process.terminate()
        label = "none" if count == 0 else f"{count} at {duty:.0%}"
        cells = [f"{low:.2f}-{high:.2f}" for low, high in (result[1], result[8])]
        print(f"{label:<22} {cells[0]:>14} {cells[1]:>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ChatCore's acc and acc_norm against lm-evaluation-harness's, item by item, on the example set's multiple choice.

    pip install "lm-eval[hf]"                  # a bench-time tool (the `bench` extra), not a ChatCore dependency
    PYTHONPATH=. python scripts/compare_lm_eval.py [--model MODEL] [--json PATH]

lm-eval runs as its own command (``python -m lm_eval run --model hf ... --device cpu``, float32, the hub and
datasets offline) on a local JSON ``multiple_choice`` task written from the items; its per-choice
log-likelihoods come from ``--log_samples``. ChatCore computes the same choices with
``chatcore.engine.loglikelihood.choice_loglikelihoods`` (what evaluation runs call) on two float32 backends,
its fast engine (each question's choices packed after one context) and the transformers loop (pair by pair), and scores them with the product's ``loglik`` and ``loglik_norm`` scorers; ChatCore's
default configuration (``quant=auto``: int4 on a CPU) is scored too, for information. Prints a markdown
table (per item, then totals); exits 1 if any float32 acc or acc_norm differs from lm-eval's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import say
from bench.bench_eval import HUB_OFFLINE, MC_TASK, lm_eval_model_dir, versions, write_mc_task


def run_lm_eval(model_dir: Path, task_dir: Path, out: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """lm-eval's command line, and its per-item results by item id: log-likelihoods, acc, acc_norm."""
    command = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
               "--model_args", f"pretrained={model_dir},dtype=float32", "--device", "cpu",
               "--include_path", str(task_dir), "--tasks", MC_TASK, "--log_samples", "--output_path", str(out)]
    say("running lm-eval: " + shlex.join(command))
    done = subprocess.run(command, check=False, env={**os.environ, **HUB_OFFLINE}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"lm-eval failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    files = sorted(out.rglob(f"samples_{MC_TASK}_*.jsonl"))
    if not files:
        raise SystemExit(f"lm-eval wrote no samples under {out}")
    items = {}
    for line in files[-1].read_text().splitlines():
        sample = json.loads(line)
        items[sample["doc"]["id"]] = {"logprobs": [float(r[0]) for r in sample["filtered_resps"]],
                                      "acc": bool(sample["acc"]), "acc_norm": bool(sample["acc_norm"])}
    return command, items


def chatcore_scores(backend: Any, items: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """ChatCore's per-item log-likelihoods, acc and acc_norm (the product's scorers) on ``backend``."""
    from chatcore.engine.loglikelihood import choice_loglikelihoods
    from chatcore.services.evaluation.scorers import ChoiceLikelihood, LoglikAcc, LoglikAccNorm, Output

    # The path evaluation runs take: on the fast engine each question's choices packed after one context.
    scored = choice_loglikelihoods(backend, [(item.loglikelihood_context(), [" " + c for c in item.choices])
                                             for item in items])
    out = {}
    for item, results in zip(items, scored):
        choices = tuple(ChoiceLikelihood(r.logprob, r.greedy, r.tokens, len(choice))
                        for choice, r in zip(item.choices, results))
        output = Output(choices=choices)
        out[item.id] = {"logprobs": [c.logprob for c in choices], "acc": LoglikAcc().score(item, output).correct,
                        "acc_norm": LoglikAccNorm().score(item, output).correct}
    return out


def backends(model: str) -> dict[str, Any]:
    """The three ChatCore configurations compared, each a loader (loaded one at a time)."""
    from transformers import AutoTokenizer

    from chatcore.core.settings import Settings
    from chatcore.engine import sources
    from chatcore.engine.device import resolve_device
    from chatcore.engine.hf import TransformersEngine
    from chatcore.engine.loader import load_engine

    float32 = Settings(model=model, device="cpu", dtype="float32", quant="none", compile="0")

    def transformers_loop() -> Any:
        import torch

        directory = Path(sources.ensure_local(model, float32, say))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return TransformersEngine.from_pretrained(float32, directory, tokenizer, resolve_device("cpu"), torch.float32)

    return {"fast": lambda: load_engine(float32, progress=say), "transformers": transformers_loop,
            "int4": lambda: load_engine(Settings(model=model, device="cpu", quant="auto", compile="0"), progress=say)}


def compare(model: str) -> dict[str, Any]:
    """Run both sides on the example set's multiple-choice items; the per-item rows and the totals."""
    from chatcore.core.settings import Settings
    from chatcore.engine import sources
    from chatcore.services.evaluation.testsets import example_test_set

    items = [item for item in example_test_set().items if item.choices]
    directory = Path(sources.ensure_local(model, Settings(model=model), say))
    with tempfile.TemporaryDirectory(prefix="compare-lm-eval-") as name:
        tmp = Path(name)
        command, peer = run_lm_eval(lm_eval_model_dir(directory, tmp / "model"), write_mc_task(items, tmp / "task"),
                                    tmp / "out")
    ours: dict[str, dict[str, dict[str, Any]]] = {}
    engines: dict[str, str] = {}
    for key, load in backends(model).items():
        say(f"ChatCore, {key}…")
        backend = load()
        engines[key] = f"{type(backend).__name__} {backend.info.dtype}"
        ours[key] = chatcore_scores(backend, items)
        del backend
    rows = []
    for item in items:
        lm = peer[item.id]
        row: dict[str, Any] = {"id": item.id, "gold": item.gold, "lm_eval": {"acc": lm["acc"], "acc_norm": lm["acc_norm"]}}
        for key, scores in ours.items():
            mine = scores[item.id]
            row[key] = {"acc": mine["acc"], "acc_norm": mine["acc_norm"],
                        "max_abs_diff": max(abs(a - b) for a, b in zip(mine["logprobs"], lm["logprobs"]))}
        rows.append(row)
    totals = {"items": len(items), "lm_eval": {m: sum(r["lm_eval"][m] for r in rows) / len(rows) for m in ("acc", "acc_norm")}}
    for key in ours:
        totals[key] = {m: sum(r[key][m] for r in rows) / len(rows) for m in ("acc", "acc_norm")}
        totals[key]["max_abs_diff"] = max(r[key]["max_abs_diff"] for r in rows)
        totals[key]["disagreements"] = sum(r[key][m] != r["lm_eval"][m] for r in rows for m in ("acc", "acc_norm"))
    return {"model": model, "lm_eval_command": shlex.join(command), "engines": engines, "versions": versions(),
            "rows": rows, "totals": totals}


def markdown(result: dict[str, Any]) -> str:
    """Per item: acc / acc_norm of lm-eval and of each ChatCore backend, the largest per-choice |Δ log-likelihood|."""
    def mark(value: bool) -> str:
        return "1" if value else "0"

    header = ("| item | gold | lm-eval acc / acc_norm | ChatCore fast f32 | max \\|Δ ll\\| | ChatCore transformers f32 | "
              "max \\|Δ ll\\| | ChatCore int4 (info) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cells = [f"{mark(r[k]['acc'])} / {mark(r[k]['acc_norm'])}" for k in ("lm_eval", "fast", "transformers", "int4")]
        lines.append(f"| {r['id']} | {'ABCDEFGHIJ'[r['gold']]} | {cells[0]} | {cells[1]} | {r['fast']['max_abs_diff']:.1e} | "
                     f"{cells[2]} | {r['transformers']['max_abs_diff']:.1e} | {cells[3]} |")
    t = result["totals"]

    def pair(key: str) -> str:
        return f"**{t[key]['acc']:.3f} / {t[key]['acc_norm']:.3f}**"

    lines.append(f"| **all {t['items']}** | | {pair('lm_eval')} | {pair('fast')} | **{t['fast']['max_abs_diff']:.1e}** | "
                 f"{pair('transformers')} | **{t['transformers']['max_abs_diff']:.1e}** | {pair('int4')} |")
    lines.append("")
    lines.append(f"acc / acc_norm differing from lm-eval's (of {2 * t['items']}): fast f32 {t['fast']['disagreements']}, "
                 f"transformers f32 {t['transformers']['disagreements']}, int4 {t['int4']['disagreements']} "
                 f"(int4's log-likelihoods differ by up to {t['int4']['max_abs_diff']:.2f}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from chatcore.core.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=Settings().model, help="model name or directory (default: the configured model)")
    parser.add_argument("--json", type=Path, help="also write the full comparison here")
    args = parser.parse_args(argv)
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        parser.error(f"lm-evaluation-harness is not installed ({exc}): pip install 'lm-eval[hf]'")
    result = compare(args.model)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"lm-eval: {result['lm_eval_command']}")
    print(f"versions: {json.dumps(result['versions'])}")
    t = result["totals"]
    return 1 if t["fast"]["disagreements"] or t["transformers"]["disagreements"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

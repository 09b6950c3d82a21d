"""Evaluation speed: items per minute of ChatCore's eval runs against lm-evaluation-harness, same items, same run.

    python -m bench.bench_eval                 # both parts, one round (10-20 minutes on 2 busy cores)
    python -m bench.bench_eval --rounds 2 --parts loglik

On the shipped example set (``example_test_set()``) and the default model:

- ``loglik``: the multiple-choice items scored by log-likelihood (acc and acc_norm). ChatCore: an
  ``Evaluations`` run with the ``loglik`` and ``loglik_norm`` scorers on the model as configured (int4 by
  default), outputs and scores saved to SQLite as users run it. lm-eval: ``simple_evaluate`` of a local
  ``multiple_choice`` task (``Question: ...\\nAnswer:``, choices after one space) on its ``hf`` model,
  float32, ``batch_size`` DEFAULT_CONCURRENCY. ChatCore on float32 (``default@quant=none``, lm-eval's precision)
  is timed too, for information: the goal is on the configuration users run.
- ``generate``: the short-answer items answered greedily. ChatCore: an ``Evaluations`` run with the ``exact``
  scorer; its threads send DEFAULT_CONCURRENCY answers at once into the engine's continuous batching.
  lm-eval: a ``generate_until`` task on the same questions through the model's chat template (as ChatCore
  asks them), ``until: ["\\n"]``, ``max_gen_toks`` = ChatCore's ``max_new_tokens``, greedy, same batch size.
  ChatCore's run is given the same stop (``\\n``) so both write about the same number of tokens (reported).

Model loading is outside every timing, on both sides (each model is loaded once, before the rounds); what is
timed is the whole run: lm-eval's ``simple_evaluate`` (task building included), ChatCore's ``Evaluations.run``
(SQLite writes and scoring included). Rounds alternate which side goes first. The lm-eval model directory is
the ChatCore one with ``config.json``'s ``quantization_config`` left out (see ``lm_eval_model_dir``).

Results go to ``bench/results/eval.json`` and ``bench/results/eval.md`` (a part not run this time keeps its
last figures, with when they were measured); progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import say

RESULTS = Path(__file__).parent / "results"
PARTS = ("loglik", "generate")
GOAL = 3.0  # ChatCore's items/min over lm-eval's
OWNER = "bench"
MC_TASK, GEN_TASK = "chatcore_mc", "chatcore_short"
HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# Shared with scripts/compare_lm_eval.py --------------------------------------------------------------------

def lm_eval_model_dir(directory: Path, into: Path) -> Path:
    """``directory``'s files linked into ``into``, with a ``config.json`` lacking ``quantization_config``.

    Why: a model ChatCore converted from a GGUF keeps ``{"quant_method": "gguf", ...}`` in its config though
    its safetensors hold plain float32 weights. transformers ignores it when loading the directory, but
    lm-eval's ``HFLM`` turns it into a ``GgufConfig`` and passes it on, which transformers then refuses
    ("Loading a GGUF checkpoint needs the file named ..."). The weights are the same files (symlinks).
    """
    into.mkdir(parents=True, exist_ok=True)
    for path in Path(directory).iterdir():
        target = into / path.name
        if path.name == "config.json":
            config = json.loads(path.read_text())
            config.pop("quantization_config", None)
            target.write_text(json.dumps(config, indent=2))
        elif not target.exists():
            target.symlink_to(path.resolve())
    return into


def write_mc_task(items: Sequence[Any], into: Path) -> Path:
    """A local lm-eval ``multiple_choice`` task over ``items`` (TestItem) in ``into``: its YAML and JSONL."""
    into.mkdir(parents=True, exist_ok=True)
    data = into / f"{MC_TASK}.jsonl"
    data.write_text("".join(json.dumps({"id": item.id, "question": item.question, "choices": list(item.choices),
                                        "gold": item.gold}) + "\n" for item in items))
    # The task's text is lm-eval's usual zero-shot format, the one TestItem.loglikelihood_context() writes;
    # target_delimiter stays lm-eval's default " " (each choice after one space).
    (into / f"{MC_TASK}.yaml").write_text(
        f"task: {MC_TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return into


def write_generate_task(items: Sequence[Any], into: Path, max_new_tokens: int) -> Path:
    """A local lm-eval ``generate_until`` task over the short-answer ``items``: the bare question (the chat
    template wraps it, as ChatCore's engine does), stop at a newline, greedy, ``max_new_tokens`` at most."""
    into.mkdir(parents=True, exist_ok=True)
    data = into / f"{GEN_TASK}.jsonl"
    data.write_text("".join(json.dumps({"id": item.id, "question": item.question, "answer": item.answers[0]}) + "\n"
                            for item in items))
    (into / f"{GEN_TASK}.yaml").write_text(
        f"task: {GEN_TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n"
        '  until: ["\\n"]\n'
        f"  max_gen_toks: {max_new_tokens}\n"
        "  do_sample: false\n"
        "  temperature: 0.0\n"
        "metric_list:\n  - metric: exact_match\n    ignore_case: true\n    ignore_punctuation: true\n")
    return into


def versions() -> dict[str, str]:
    """The versions that decide these figures."""
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "lm_eval", "chatcore"):
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# ChatCore's side: an Evaluations run, as `chatcore eval run` does it ----------------------------------------

def chatcore_run(engine: Any, tmp: Path, items: Sequence[Any], scorers: list[str], name: str,
                 generation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time one ``Evaluations.run`` of ``items`` on the loaded ``engine`` (a fresh store each time)."""
    from chatcore.services.evaluation.service import Evaluations
    from chatcore.services.evaluation.testsets import TestSet, write_jsonl
    from storage import Store

    path = tmp / f"{name}-{time.monotonic_ns()}.db"
    with Store(path) as store:
        evaluations = Evaluations(store, lambda spec: engine)
        evaluations.add_test_set(OWNER, write_jsonl(TestSet(name, tuple(items))), f"{name}.jsonl", name=name)
        run_id = evaluations.create_run(OWNER, name, ["default"], scorers, generation=generation)
        started = time.perf_counter()
        progress = evaluations.run(OWNER, run_id)
        seconds = time.perf_counter() - started
        if progress.status != "finished" or progress.done != len(items):
            raise RuntimeError(f"the ChatCore run did not finish: {progress.describe()}")
        outputs = evaluations.outputs(OWNER, run_id)
    path.unlink(missing_ok=True)
    tokens = sum((row.get("record") or {}).get("completion_tokens") or 0 for row in outputs)
    correct = {s: sum(bool((row.get("scores") or {}).get(s, {}).get("correct")) for row in outputs) for s in scorers}
    return {"items": len(items), "seconds": seconds, "items_per_minute": len(items) * 60 / seconds,
            "generated_tokens": tokens, "correct": correct}


def lm_eval_run(lm: Any, task_dir: Path, task: str, *, chat: bool) -> dict[str, Any]:
    """Time one ``simple_evaluate`` of ``task`` on the loaded HFLM ``lm``."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir))
    started = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=[task], task_manager=manager, log_samples=True,
                              apply_chat_template=chat, verbosity="WARNING")
    seconds = time.perf_counter() - started
    samples = results["samples"][task]
    metrics = {k.split(",")[0]: v for k, v in results["results"][task].items() if "stderr" not in k and "," in k}
    out = {"items": len(samples), "seconds": seconds, "items_per_minute": len(samples) * 60 / seconds,
           "metrics": metrics}
    if not chat:
        return out
    out["generated_tokens"] = sum(len(lm.tokenizer.encode(s["resps"][0][0], add_special_tokens=False))
                                  for s in samples)
    return out


# The bench ------------------------------------------------------------------------------------------------

def measure(parts: list[str], rounds: int, model: str | None) -> dict[str, Any]:
    """Load both sides once, then ``rounds`` alternating rounds of each part; medians of items/min."""
    os.environ.update(HUB_OFFLINE)
    from lm_eval.models.huggingface import HFLM

    from chatcore.core.settings import DEFAULT_CONCURRENCY, Settings, model_settings
    from chatcore.engine import sources
    from chatcore.engine.loader import load_engine
    from chatcore.services.evaluation.service import EVAL_GENERATION
    from chatcore.services.evaluation.testsets import example_test_set

    settings = model_settings(Settings(), model)
    test_set = example_test_set()
    mc = [item for item in test_set.items if item.choices]
    short = [item for item in test_set.items if not item.choices and item.answers]
    max_new = EVAL_GENERATION["max_new_tokens"]
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as name:
        tmp = Path(name)
        directory = Path(sources.ensure_local(settings.model, settings, say))
        write_mc_task(mc, tmp / "tasks")
        write_generate_task(short, tmp / "tasks", max_new)
        say(f"loading ChatCore's engine ({settings.model}, quant={settings.quant})…")
        started = time.perf_counter()
        engine = load_engine(settings, progress=say)
        chatcore_load = time.perf_counter() - started
        float32 = None
        if "loglik" in parts and settings.quant != "none":
            say("loading ChatCore's engine on float32 (quant=none), for information…")
            float32 = load_engine(model_settings(settings, "default@quant=none,dtype=float32"), progress=say)
        say("loading lm-eval's hf model (float32)…")
        started = time.perf_counter()
        lm = HFLM(pretrained=str(lm_eval_model_dir(directory, tmp / "model")), dtype="float32", device="cpu",
                  batch_size=DEFAULT_CONCURRENCY)
        lm_eval_load = time.perf_counter() - started
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {"chatcore": [], "lm-eval": []} for p in parts}
        if float32 is not None:
            runs["loglik"]["chatcore float32"] = []
        for r in range(rounds):
            for part in parts:
                sides = list(runs[part]) if r % 2 == 0 else list(reversed(runs[part]))
                for side in sides:
                    say(f"[{part}] round {r + 1}/{rounds}: {side}…")
                    if part == "loglik":
                        result = (lm_eval_run(lm, tmp / "tasks", MC_TASK, chat=False) if side == "lm-eval" else
                                  chatcore_run(engine if side == "chatcore" else float32, tmp, mc,
                                               ["loglik", "loglik_norm"], "bench-mc"))
                    else:
                        result = (chatcore_run(engine, tmp, short, ["exact"], "bench-short", {"stop": ["\n"]})
                                  if side == "chatcore" else lm_eval_run(lm, tmp / "tasks", GEN_TASK, chat=True))
                    say(f"  {result['items']} items in {result['seconds']:.1f} s: {result['items_per_minute']:.1f} items/min")
                    runs[part][side].append(result)
    report: dict[str, Any] = {
        "model": settings.model, "chatcore_engine": f"{type(engine).__name__} {engine.info.dtype} kernels="
                                                    f"{getattr(engine, 'kernels', '-')}",
        "lm_eval_model": "hf (transformers), float32", "batch_size": DEFAULT_CONCURRENCY,
        "max_new_tokens": max_new, "load_s": {"chatcore": chatcore_load, "lm-eval": lm_eval_load}}
    for part, sides in runs.items():
        row: dict[str, Any] = {}
        for side, results in sides.items():
            rates = [res["items_per_minute"] for res in results]
            row[side] = {**results[-1], "items_per_minute": statistics.median(rates), "runs": rates}
        row["ratio"] = row["chatcore"]["items_per_minute"] / row["lm-eval"]["items_per_minute"]
        if "chatcore float32" in row:
            row["ratio_float32"] = row["chatcore float32"]["items_per_minute"] / row["lm-eval"]["items_per_minute"]
        row["rounds"] = rounds
        row["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        row["load_average_after"] = os.getloadavg()
        report[part] = row
    return report


def markdown(report: dict[str, Any]) -> str:
    """The figures as a markdown table, each ratio against the goal."""
    rows = ["| part | ChatCore items/min | lm-eval items/min | ratio | goal |", "|---|---|---|---|---|"]
    labels = {"loglik": "multiple choice by log-likelihood (acc, acc_norm)",
              "generate": "generated short answers (exact)"}
    for part in PARTS:
        row = report.get(part)
        if not row:
            continue
        c, lm = row["chatcore"], row["lm-eval"]
        extra = ""
        if part == "generate":
            extra = f" ({c['generated_tokens']} / {lm.get('generated_tokens', '?')} tokens written)"
        rows.append(f"| {labels[part]}, {c['items']} items{extra} | {c['items_per_minute']:.1f} | "
                    f"{lm['items_per_minute']:.1f} | {row['ratio']:.2f}x | ≥ {GOAL:.0f}x |")
        if "ratio_float32" in row:
            rows.append(f"| the same on ChatCore float32 (`default@quant=none`), for information | "
                        f"{row['chatcore float32']['items_per_minute']:.1f} | {lm['items_per_minute']:.1f} | "
                        f"{row['ratio_float32']:.2f}x | – |")
    return "\n".join(rows) + "\n"


def write_results(report: dict[str, Any]) -> None:
    """eval.json and eval.md in bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    v = report["versions"]
    runs = ""
    for part in (p for p in PARTS if p in report):
        row = report[part]
        load = row.get("load_average_after")
        runs += (f"- {part}: `{row.get('command', report['command'])}`, {row.get('rounds', 1)} round(s), "
                 f"{row.get('measured_at', report['measured_at'])}"
                 + (f", load average after {', '.join(f'{x:.1f}' for x in load)}" if load else "") + "\n")
    (RESULTS / "eval.md").write_text(
        f"# Evaluation speed ({report['cpus']} CPUs, {report['machine']})\n\n" + markdown(report) +
        f"\nChatCore: {report['chatcore_engine']} (the default configuration) through `Evaluations.run`, outputs "
        f"and scores saved to SQLite; generated answers from {report['batch_size']} threads into the engine's "
        f"continuous batching. lm-eval {v['lm_eval']}: {report['lm_eval_model']}, batch size "
        f"{report['batch_size']}, in-process `simple_evaluate`. Model loading excluded on both sides; model "
        f"{report['model']}; greedy, at most {report['max_new_tokens']} new tokens, stop at a newline on both "
        f"sides; torch {v['torch']}, transformers {v['transformers']}. Items/min: the median of each part's "
        "rounds. The machine's 2 cores were shared with other work: the figures are noisy.\n\n" + runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, of: " + ", ".join(PARTS))
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (items/min: the median)")
    parser.add_argument("--model", help="the model spec (default: the configured model)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        say(f"bench_eval skipped: lm-evaluation-harness is not installed ({exc}); `make bench` installs it")
        return 0
    command = "python -m bench.bench_eval" + (f" {' '.join(argv)}" if argv else "")
    output = RESULTS / "eval.json"
    # Parts not run this time keep their figures from the last run (each part says when it was measured).
    report: dict[str, Any] = json.loads(output.read_text()) if output.is_file() else {}
    report.update(measure(parts, args.rounds, args.model))
    for part in parts:
        report[part]["command"] = command
    report.update({"command": command, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                   "versions": versions(), "goal_ratio": GOAL, "load_average_after": os.getloadavg(),
                   "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    write_results(report)
    print(markdown(report))
    print(f"(written to {output} and {RESULTS / 'eval.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A run's report: accuracy with a bootstrap 95% interval per model and per tag, McNemar between models, and
the items where the models disagree. Several runs of the same test set are compared as one."""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from chatcore.core.errors import ParameterError
from chatcore.services.evaluation.stats import Interval, McNemar, bootstrap_interval, mcnemar


@dataclass(frozen=True)
class ModelResult:
    """One model's accuracy under one scorer, overall and per tag."""

    run_id: int
    model: str
    scorer: str
    accuracy: Interval
    mean_value: float  # the scorer's mean value (F1, recall), beside the share counted correct
    by_tag: dict[str, Interval] = field(default_factory=dict)
    errors: int = 0  # items whose generation failed (counted wrong)


@dataclass(frozen=True)
class Comparison:
    """A paired test between two models on the items both answered."""

    model_a: str
    model_b: str
    scorer: str
    test: McNemar
    items: int


@dataclass(frozen=True)
class Disagreement:
    """An item one model got right and another wrong."""

    key: str
    question: str
    answers: list[str]
    outputs: dict[str, dict[str, Any]]  # model -> {"text", "correct", "value"}


@dataclass(frozen=True)
class Report:
    """What ``chatcore eval report`` prints."""

    runs: list[int]
    test_set: str
    scorer: str
    results: list[ModelResult]
    comparisons: list[Comparison]
    disagreements: list[Disagreement]

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def to_markdown(self) -> str:
        """Tables for a lab notebook: accuracy with intervals, per tag, the paired tests, the disagreements."""
        lines = [f"# Evaluation report: {self.test_set} (runs {', '.join(map(str, self.runs))})", "",
                 f"Scorer: `{self.scorer}`. Accuracy with a bootstrap 95% interval.", "",
                 "| run | model | accuracy | 95% interval | n | mean value | errors |", "|---|---|---|---|---|---|---|"]
        for r in self.results:
            a = r.accuracy
            lines.append(f"| {r.run_id} | {r.model} | {a.mean:.1%} | {a.low:.1%} – {a.high:.1%} | {a.n} | "
                         f"{r.mean_value:.3f} | {r.errors} |")
        tags = sorted({tag for r in self.results for tag in r.by_tag})
        if tags:
            lines += ["", "## By tag", "", "| tag | " + " | ".join(r.model for r in self.results) + " |",
                      "|---|" + "---|" * len(self.results)]
            for tag in tags:
                cells = [_cell(r.by_tag.get(tag)) for r in self.results]
                lines.append(f"| {tag} | " + " | ".join(cells) + " |")
        if self.comparisons:
            lines += ["", "## Paired comparison (McNemar)", "",
                      "| A | B | A right, B wrong | A wrong, B right | p | test |", "|---|---|---|---|---|---|"]
            for c in self.comparisons:
                t = c.test
                lines.append(f"| {c.model_a} | {c.model_b} | {t.b10} | {t.b01} | {t.p_value:.3g} | "
                             f"{'exact binomial' if t.exact else 'chi-square, continuity-corrected'} |")
        if self.disagreements:
            lines += ["", f"## Where the models disagree ({len(self.disagreements)} items)", ""]
            for d in self.disagreements:
                lines.append(f"- **{d.key}** {d.question} (accepted: {', '.join(d.answers) or '—'})")
                for model, out in d.outputs.items():
                    mark = "right" if out["correct"] else "wrong"
                    text = (out["text"] or "").strip().replace("\n", " ")[:160]
                    lines.append(f"  - {model}: {mark}: {text}")
        return "\n".join(lines) + "\n"


def build_report(runs: Sequence[dict[str, Any]], outputs_by_run: dict[int, list[dict[str, Any]]],
                 scorer: str | None = None, *, seed: int = 0) -> Report:
    """The report over ``runs`` (same test set) from their stored outputs, under ``scorer`` (default: the first
    run's first scorer)."""
    if not runs:
        raise ParameterError("run", "name at least one run")
    sets = {run["test_set_id"] for run in runs}
    if len(sets) > 1:
        raise ParameterError("run", "runs of different test sets cannot be compared item by item")
    scorer = scorer or runs[0]["scorers"][0]
    # (run, model) -> item key -> (correct, value, output row)
    table: dict[tuple[int, str], dict[str, tuple[bool, float, dict[str, Any]]]] = {}
    for run in runs:
        for row in outputs_by_run[run["id"]]:
            score = row["scores"].get(scorer)
            if score is None and not row["error"]:
                continue  # this scorer does not apply to the item (a choice scorer on a short answer)
            correct, value = (score["correct"], score["value"]) if score else (False, 0.0)
            table.setdefault((run["id"], row["model"]), {})[row["key"]] = (correct, value, row)
    if not table:
        raise ParameterError("scorer", f"no output of these runs has a {scorer!r} score; rescore them first "
                                       f"(chatcore eval rescore RUN --scorer {scorer})")
    results = [_result(run_id, model, scorer, cells, seed) for (run_id, model), cells in table.items()]
    labels = {key: _label(key, table) for key in table}
    comparisons, disagreements = [], {}
    for first, second in itertools.combinations(table, 2):
        shared = sorted(set(table[first]) & set(table[second]))
        if not shared:
            continue
        a = [table[first][k][0] for k in shared]
        b = [table[second][k][0] for k in shared]
        comparisons.append(Comparison(labels[first], labels[second], scorer, mcnemar(a, b), len(shared)))
        for key, x, y in zip(shared, a, b):
            if x != y:
                disagreements[key] = key
    rows = [
        Disagreement(key, _question(_any_row(table, key)), list(_any_row(table, key)["item"].get("answers") or []),
                     {labels[c]: {"text": table[c][key][2]["text"], "correct": table[c][key][0],
                                  "value": table[c][key][1]} for c in table if key in table[c]})
        for key in disagreements]
    return Report([run["id"] for run in runs], runs[0]["test_set"], scorer, results, comparisons, rows)


def disagreements_csv(report: Report) -> str:
    """The disagreements as CSV, one row per item and model."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["item", "question", "accepted", "model", "correct", "value", "output"])
    for d in report.disagreements:
        for model, o in d.outputs.items():
            writer.writerow([d.key, d.question, " | ".join(d.answers), model, o["correct"], o["value"], o["text"]])
    return out.getvalue()


def _result(run_id: int, model: str, scorer: str, cells: dict[str, tuple[bool, float, dict[str, Any]]],
            seed: int) -> ModelResult:
    correct = [float(c) for c, _, _ in cells.values()]
    by_tag: dict[str, list[float]] = {}
    for c, _, row in cells.values():
        for tag in row["item"].get("tags") or ():
            by_tag.setdefault(tag, []).append(float(c))
    return ModelResult(run_id, model, scorer, bootstrap_interval(correct, seed=seed),
                       sum(v for _, v, _ in cells.values()) / len(cells),
                       {tag: bootstrap_interval(values, seed=seed) for tag, values in sorted(by_tag.items())},
                       sum(1 for _, _, row in cells.values() if row["error"]))


def _label(key: tuple[int, str], table: dict[tuple[int, str], Any]) -> str:
    """The model's spec, with its run when two runs evaluated the same spec."""
    run_id, model = key
    return model if sum(1 for _, m in table if m == model) == 1 else f"{model} (run {run_id})"


def _any_row(table: dict[tuple[int, str], dict[str, tuple[bool, float, dict[str, Any]]]], key: str) -> dict[str, Any]:
    return next(cells[key][2] for cells in table.values() if key in cells)


def _question(row: dict[str, Any]) -> str:
    messages = row["item"].get("messages") or []
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def _cell(interval: Interval | None) -> str:
    if interval is None or interval.n == 0:
        return "—"
    return f"{interval.mean:.0%} ({interval.low:.0%}–{interval.high:.0%}, n={interval.n})"


def _finite(value: Any) -> Any:
    """JSON has no NaN: an undefined interval is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value

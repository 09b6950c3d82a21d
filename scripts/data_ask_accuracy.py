"""How often the default model's SQL answers a question right, on a public table it was not written for.

The Palmer penguins table (344 rows, shipped by the ``palmerpenguins`` package, ``pip install palmerpenguins``)
is loaded as a user would; each question is asked through ``DataService.ask`` and its result compared with a
reference query's (execution accuracy: the same rows, in any order, numbers equal to 4 significant digits).

    python scripts/data_ask_accuracy.py [--model SPEC] [--out bench/results/data_ask.md]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from chatcore.core.settings import Settings
from chatcore.services.data import DataError, DataService, Warehouse
from chatcore.services.models import ModelManager
from storage import Store

QUESTIONS = [
    ("How many penguins of each species are there?",
     "SELECT species, count(*) FROM penguins GROUP BY species"),
    ("What is the average flipper length for each island?",
     "SELECT island, avg(flipper_length_mm) FROM penguins GROUP BY island"),
    ("What is the average bill depth for each island?",
     "SELECT island, avg(bill_depth_mm) FROM penguins GROUP BY island"),
    ("How many penguins of each sex are there?",
     "SELECT sex, count(*) FROM penguins GROUP BY sex"),
    ("What is the maximum bill length for each species?",
     "SELECT species, max(bill_length_mm) FROM penguins GROUP BY species"),
    ("What is the minimum body mass for each species?",
     "SELECT species, min(body_mass_g) FROM penguins GROUP BY species"),
    ("How many penguins live on each island?",
     "SELECT island, count(*) FROM penguins GROUP BY island"),
    ("What is the average body mass for each sex?",
     "SELECT sex, avg(body_mass_g) FROM penguins GROUP BY sex"),
    ("Which species has the highest average body mass?",
     "SELECT species, avg(body_mass_g) AS m FROM penguins GROUP BY species ORDER BY m DESC LIMIT 1"),
    ("How many penguins were observed each year?",
     "SELECT year, count(*) FROM penguins GROUP BY year"),
    ("What is the average bill length of all penguins?",
     "SELECT avg(bill_length_mm) FROM penguins"),
    ("How many penguins weigh more than 5000 grams?",
     "SELECT count(*) FROM penguins WHERE body_mass_g > 5000"),
]


def _canonical(rows: list[list]) -> list[tuple]:
    def cell(v):
        return float(f"{v:.4g}") if isinstance(v, float) else v
    return sorted((tuple(cell(v) for v in row) for row in rows), key=repr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the configured default model)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/data_ask.md"))
    args = parser.parse_args()
    import palmerpenguins

    csv_path = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    manager = ModelManager(Settings(compile="0"))
    with tempfile.TemporaryDirectory() as home:
        service = DataService(Store(Path(home) / "chatcore.db"), Warehouse(Path(home) / "data"),
                              backend_for=manager.wait_for, hold=manager.hold)
        service.add("local", csv_path)
        rows, right = [], 0
        for question, reference in QUESTIONS:
            expected = _canonical(service.run("local", reference).rows)
            started = time.perf_counter()
            try:
                answer = service.ask("local", question, tables=["penguins"], model=args.model, seed=0)
                got, sql, tries = _canonical(answer.rows), answer.sql, len(answer.record["attempts"])
                unverified = answer.unverified
            except DataError as exc:
                got, sql, tries, unverified = None, f"(failed: {exc})", 3, []
            ok = got == expected
            right += ok
            rows.append({"question": question, "correct": ok, "sql": sql, "tries": tries,
                         "unverified": unverified, "seconds": round(time.perf_counter() - started, 2)})
            print(f"{'✓' if ok else '✗'} {question}\n    {sql}")
        model = manager.wait_for(args.model).model_name
    lines = [f"# Asking the Palmer penguins table: execution accuracy of {model}", "",
             f"{right} of {len(QUESTIONS)} questions answered with the reference query's rows "
             f"({100 * right / len(QUESTIONS):.0f}%). Greedy decoding, seed 0, up to 2 retries on an error.", "",
             "| question | right | tries | s | the model's SQL | unverified numbers |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['question']} | {'yes' if r['correct'] else 'no'} | {r['tries']} | {r['seconds']} | "
                     f"`{r['sql'].replace('|', '/').replace(chr(10), ' ')}` | {', '.join(r['unverified']) or '–'} |")
    lines += ["", "Reproduce: `python scripts/data_ask_accuracy.py` (needs `pip install palmerpenguins`)."]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"model": model, "right": right, "total": len(QUESTIONS),
                                                         "questions": rows}, indent=1) + "\n")
    print(f"{right}/{len(QUESTIONS)} right; written to {args.out}")


if __name__ == "__main__":
    main()

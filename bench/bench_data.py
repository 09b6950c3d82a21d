"""Data analysis figures: load and profile a 1,000,000-row, 20-column CSV, a group-by over it, and a question
answered with a chart, each against pandas (the peer most analysts would otherwise use) in the same run.

    python -m bench.bench_data            # the whole benchmark (a few minutes on 2 busy cores)
    python -m bench.bench_data --quick    # 100,000 rows, one question: a smoke run

Parts (figures are reported, never asserted):

- ``load``: ``DataService.add`` (DuckDB reads the CSV in one transaction, then the profile: types, missing and
  distinct counts, statistics, a histogram or top values per column) against pandas ``read_csv`` followed by
  ``DataFrame.describe(include="all")``. Generating the CSV (numpy, written with DuckDB's COPY) is not timed.
- ``groupby``: the median of 5 runs of one group-by (count, two means and a sum per category) through the
  sandbox (``DataService.run``: gate, locked read-only connection, row limit) against pandas ``groupby().agg``
  on the DataFrame already in memory.
- ``ask``: question to answer with a chart on the default model (``DataService.ask`` with a model from
  ``ModelManager.wait_for``, loaded before the clock starts): the SQL written, EXPLAINed, run, charted and
  narrated. No peer: pandas has no question-answering.

Results go to ``bench/results/data.json`` and ``bench/results/data.md``; progress to stderr.
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
from pathlib import Path
from typing import Any

from bench import say

RESULTS = Path(__file__).parent / "results"
OWNER = "bench"
ROWS, QUICK_ROWS = 1_000_000, 100_000
GROUPBY_RUNS = 5
GROUPBY_SQL = ("SELECT category, count(*) AS n, avg(price) AS mean_price, avg(rating) AS mean_rating,"
               " sum(revenue) AS revenue FROM sales GROUP BY category ORDER BY category")
QUESTIONS = ("What is the average price for each region?", "How many sales were there in each channel?",
             "What is the total revenue for each region?")


def write_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """A 20-column sales table: integers, floats, text of a few or many values, dates and booleans."""
    import duckdb
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    regions = np.array(["north", "south", "east", "west", "centre", "coast", "hills", "islands"])
    channels = np.array(["shop", "web", "phone", "market"])
    words = np.array(["fresh", "late", "bulk", "gift", "repeat", "promo", "local", "export"])
    quantity = rng.integers(1, 20, rows)
    price = np.round(rng.gamma(2.0, 15.0, rows), 2)
    frame = pd.DataFrame({
        "id": np.arange(rows), "region": regions[rng.integers(0, 8, rows)],
        "category": np.char.add("cat_", rng.integers(0, 50, rows).astype(str)),
        "store": rng.integers(1, 201, rows),
        "day": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1500, rows), unit="D"),
        "quantity": quantity, "price": price, "discount": np.round(rng.uniform(0, 0.3, rows), 3),
        "revenue": np.round(quantity * price, 2), "cost": np.round(quantity * price * rng.uniform(0.4, 0.9, rows), 2),
        "rating": rng.integers(1, 6, rows), "score": rng.normal(70, 12, rows),
        "returned": rng.random(rows) < 0.05, "code": [f"{v:08x}" for v in rng.integers(0, 2**32, rows)],
        "temperature": np.round(rng.normal(15, 8, rows), 1), "visits": rng.poisson(3, rows),
        "weight_kg": np.round(rng.lognormal(0, 0.5, rows), 3), "channel": channels[rng.integers(0, 4, rows)],
        "month": rng.integers(1, 13, rows), "note": words[rng.integers(0, 8, rows)],
    })
    frame.loc[rng.random(rows) < 0.02, "score"] = np.nan  # some gaps, as real tables have
    with duckdb.connect() as connection:
        connection.register("frame", frame)
        connection.execute(f"COPY (SELECT * FROM frame) TO '{path}' (HEADER, DELIMITER ',')")
    return path


def measure_load(path: Path, home: Path) -> tuple[dict[str, Any], Any, Any]:
    """ChatCore's add (load + profile) against pandas' read_csv + describe; returns the figures, the service and the frame."""
    import pandas as pd

    from chatcore.services.data import DataService, Warehouse
    from storage import Store

    say("load: pandas read_csv + describe(include='all') ...")
    started = time.perf_counter()
    frame = pd.read_csv(path)
    read_s = time.perf_counter() - started
    frame.describe(include="all")
    pandas_s = time.perf_counter() - started

    say("load: ChatCore DataService.add ...")
    service = DataService(Store(home / "chatcore.db"), Warehouse(home / "data"))
    started = time.perf_counter()
    table = service.add(OWNER, path)
    chatcore_s = time.perf_counter() - started
    figures = {"rows": table["rows"], "columns": len(table["columns"]), "bytes": path.stat().st_size,
               "chatcore_s": round(chatcore_s, 3), "pandas_s": round(pandas_s, 3),
               "pandas_read_csv_s": round(read_s, 3), "speedup_vs_pandas": round(pandas_s / chatcore_s, 2),
               "chatcore_types": {c["name"]: c["type"] for c in table["columns"]}}
    return figures, service, frame


def measure_groupby(service: Any, frame: Any) -> dict[str, Any]:
    """The median of GROUPBY_RUNS runs of one group-by, through the sandbox and in pandas."""
    say(f"groupby: {GROUPBY_RUNS} runs each ...")
    chatcore, pandas = [], []
    service.run(OWNER, GROUPBY_SQL)  # the reader connection opened once, as a server's is
    for _ in range(GROUPBY_RUNS):
        started = time.perf_counter()
        result = service.run(OWNER, GROUPBY_SQL)
        chatcore.append(time.perf_counter() - started)
        started = time.perf_counter()
        expected = frame.groupby("category").agg(n=("id", "size"), mean_price=("price", "mean"),
                                                 mean_rating=("rating", "mean"), revenue=("revenue", "sum"))
        pandas.append(time.perf_counter() - started)
    assert len(result.rows) == len(expected)  # both computed the same groups
    c_ms, p_ms = statistics.median(chatcore) * 1000, statistics.median(pandas) * 1000
    return {"sql": GROUPBY_SQL, "runs": GROUPBY_RUNS, "groups": len(result.rows), "chatcore_ms": round(c_ms, 1),
            "pandas_ms": round(p_ms, 1), "speedup_vs_pandas": round(p_ms / c_ms, 2)}


def measure_ask(service: Any, questions: tuple[str, ...], model: str | None) -> dict[str, Any]:
    """Question to charted answer on the default model, the model loaded before the clock starts."""
    from chatcore.core.settings import Settings
    from chatcore.services.models import ModelManager

    if not hasattr(service, "ask"):
        return {"skipped": "DataService.ask is not available"}
    say("ask: loading the default model ...")
    manager = ModelManager(Settings(compile="0"))
    try:
        backend = manager.wait_for(model)
    except Exception as exc:  # noqa: BLE001 - no model here (offline, no cache): say why, keep the other parts
        return {"skipped": f"the model could not be loaded: {exc}"}
    service.backend_for, service.hold = manager.wait_for, manager.hold
    answers = []
    for question in questions:
        say(f"ask: {question}")
        started = time.perf_counter()
        try:
            answer = service.ask(OWNER, question, tables=["sales"], model=model, seed=0)
            row = {"question": question, "seconds": round(time.perf_counter() - started, 2), "sql": answer.sql,
                   "rows": answer.row_count, "chart": (answer.chart or {}).get("kind"),
                   "attempts": len(answer.record.get("attempts", [])), "unverified": answer.unverified}
        except Exception as exc:  # noqa: BLE001 - a failed question is a figure too
            row = {"question": question, "seconds": round(time.perf_counter() - started, 2), "failed": str(exc)}
        answers.append(row)
    charted = [a["seconds"] for a in answers if a.get("chart")]
    return {"model": getattr(backend, "model_name", model or "default"), "questions": answers,
            "charted": len(charted), "median_s_to_chart": round(statistics.median(charted), 2) if charted else None}


def markdown(report: dict[str, Any]) -> str:
    """The figures as a markdown table, ChatCore against pandas."""
    load, group, ask = report["load"], report["groupby"], report["ask"]
    rows = ["| figure | ChatCore | pandas | pandas / ChatCore |", "|---|---|---|---|",
            (f"| load + profile, {load['rows']:,} rows x {load['columns']} columns "
             f"({load['bytes'] / 2**20:.0f} MB CSV) | {load['chatcore_s']:.2f} s | {load['pandas_s']:.2f} s "
             f"(read_csv {load['pandas_read_csv_s']:.2f} s) | {load['speedup_vs_pandas']:.2f}x |"),
            (f"| group-by ({group['groups']} groups), median of {group['runs']} | {group['chatcore_ms']:.1f} ms | "
             f"{group['pandas_ms']:.1f} ms | {group['speedup_vs_pandas']:.2f}x |")]
    if "skipped" in ask:
        rows.append(f"| question to chart | skipped: {ask['skipped']} | – | – |")
    else:
        median = f"{ask['median_s_to_chart']:.1f} s" if ask["median_s_to_chart"] is not None else "no chart"
        rows.append(f"| question to chart, {ask['model']} (median of {ask['charted']} charted of "
                    f"{len(ask['questions'])}) | {median} | – | – |")
    text = "\n".join(rows) + "\n"
    if "questions" in ask:
        text += "\n| question | s | chart | tries | the model's SQL |\n|---|---|---|---|---|\n"
        for a in ask["questions"]:
            sql = a.get("sql") or f"(failed: {a.get('failed')})"
            text += (f"| {a['question']} | {a['seconds']} | {a.get('chart') or '–'} | {a.get('attempts', '–')} | "
                     f"`{sql.replace('|', '/').replace(chr(10), ' ')}` |\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows and one question")
    parser.add_argument("--rows", type=int, help=f"rows of the generated CSV (default {ROWS:,})")
    parser.add_argument("--model", help="the model spec for the ask part (default: the configured model)")
    parser.add_argument("--no-ask", action="store_true", help="leave out the question-to-chart part")
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    questions = QUESTIONS[:1] if args.quick else QUESTIONS
    command = "python -m bench.bench_data" + (f" {' '.join(argv)}" if argv else "")
    with tempfile.TemporaryDirectory(prefix="chatcore-bench-data-") as tmp:
        say(f"generating a {rows:,}-row, 20-column CSV (not timed) ...")
        path = write_csv(Path(tmp) / "sales.csv", rows)
        load, service, frame = measure_load(path, Path(tmp) / "home")
        try:
            group = measure_groupby(service, frame)
            del frame
            ask = {"skipped": "--no-ask"} if args.no_ask else measure_ask(service, questions, args.model)
        finally:
            service.close()
    report = {"command": command, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "load": load, "groupby": group, "ask": ask, "load_average_after": os.getloadavg(),
              "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "versions": versions()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data.json").write_text(json.dumps(report, indent=2) + "\n")
    v = report["versions"]
    (RESULTS / "data.md").write_text(
        f"# Data analysis figures ({report['cpus']} CPUs, {report['machine']})\n\n`{command}`, "
        f"{report['measured_at']}\n\n" + markdown(report) +
        f"\nChatCore: DuckDB {v['duckdb']}, the whole `DataService.add` (hashing, the load transaction, the "
        f"profile, the SQLite rows) and `DataService.run` (the gate, the sandboxed read-only connection). pandas "
        f"{v['pandas']}: `read_csv` + `describe(include='all')`, and `groupby().agg` on the frame in memory. "
        "One round each; the machine's cores were shared with other work, so the figures are noisy. Load "
        f"average after: {', '.join(f'{x:.1f}' for x in report['load_average_after'])}.\n")
    print(markdown(report))
    print(f"(written to {RESULTS / 'data.json'} and {RESULTS / 'data.md'})")
    return 0


def versions() -> dict[str, str]:
    import duckdb
    import pandas

    return {"duckdb": duckdb.__version__, "pandas": pandas.__version__, "python": platform.python_version()}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Small data tables with known answers, written as the files users bring (CSV, TSV, xlsx, Parquet)."""

from __future__ import annotations

import csv
from pathlib import Path

# A dose-response experiment: 3 conditions x 4 doses x 5 subjects = 60 rows, with means that are known exactly.
CONDITIONS = ("control", "drug_a", "drug_b")
DOSES = (0, 10, 20, 40)
SUBJECTS = 5
# response = BASE[condition] + SLOPE[condition] * dose + NOISE[subject]; the noise sums to 0 per cell.
BASE = {"control": 50.0, "drug_a": 55.0, "drug_b": 60.0}
SLOPE = {"control": 0.0, "drug_a": 0.5, "drug_b": 1.0}
NOISE = (-2.0, -1.0, 0.0, 1.0, 2.0)
HEADER = ("subject", "condition", "dose", "response", "accuracy")


def trial_rows() -> list[tuple]:
    """The experiment's rows: ``(subject, condition, dose, response, accuracy)``."""
    rows = []
    subject = 0
    for condition in CONDITIONS:
        for dose in DOSES:
            for noise in NOISE:
                subject += 1
                response = BASE[condition] + SLOPE[condition] * dose + noise
                accuracy = round(0.5 + dose / 100 + (0.1 if condition != "control" else 0.0), 3)
                rows.append((subject, condition, dose, response, accuracy))
    return rows


def mean_response(condition: str) -> float:
    """The exact mean response of a condition over all doses and subjects."""
    return BASE[condition] + SLOPE[condition] * sum(DOSES) / len(DOSES)


def write_trials_csv(path: Path, *, delimiter: str = ",") -> Path:
    """The experiment as CSV (or TSV with ``delimiter='\\t'``), with the header ``Subject, Condition, ...``."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow([h.title() for h in HEADER])
        writer.writerows(trial_rows())
    return Path(path)


def write_trials_xlsx(path: Path, *, extra_sheets: tuple[str, ...] = ()) -> Path:
    """The experiment as an Excel workbook (sheet ``trials``), with optional extra sheets of notes."""
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "trials"
    sheet.append([h.title() for h in HEADER])
    for row in trial_rows():
        sheet.append(list(row))
    for name in extra_sheets:
        workbook.create_sheet(name).append(["note"])
    workbook.save(path)
    return Path(path)


def write_trials_parquet(path: Path) -> Path:
    """The experiment as Parquet, written by DuckDB (pandas would need pyarrow, which ChatCore does not)."""
    import duckdb

    with duckdb.connect() as connection:
        connection.execute("CREATE TABLE trials (subject BIGINT, condition VARCHAR, dose BIGINT, response DOUBLE,"
                           " accuracy DOUBLE)")
        connection.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?)", trial_rows())
        connection.execute("COPY trials TO ? (FORMAT parquet)", [str(path)])
    return Path(path)

"""Reading a CSV, TSV, Excel or Parquet file into one DuckDB table, refusing what cannot be read cleanly.

DuckDB streams CSV and Parquet itself (a 2 GB file never sits in memory); an Excel sheet goes through
pandas and openpyxl. Every load runs inside the caller's DuckDB transaction, so a refusal or a crash leaves
nothing behind. Column names become SQL names a small model can write (``Body Mass (g)`` → ``body_mass_g``).

Malformed CSV rows (too many or too few fields) are counted with their line numbers; by choice they are
skipped, or the load is refused with the counts. A column that mixes numbers and text is read as text and
named in the report, rather than losing the rows that do not fit the type guessed from the first ones.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import tempfile
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from chatcore.services.data.errors import LoadRefused
from chatcore.services.data.warehouse import quote_identifier

KINDS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".xlsx": "xlsx", ".parquet": "parquet", ".pq": "parquet"}
BAD_ROWS = ("refuse", "skip")
MAX_COLUMNS = 2000
_INCOMING = "cc_incoming"  # the name a pandas frame is registered under while an Excel sheet comes in
_SAMPLE_BYTES = 1 << 20
# What CSV files write for a missing value: pandas' defaults, which R ("NA") and spreadsheets ("#N/A") follow.
MISSING = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A", "#NA", "-NaN", "-nan",
           "<NA>", "#N/A N/A", "-1.#IND", "1.#IND", "-1.#QNAN", "1.#QNAN")

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class SourceFile:
    """A file checked before any loading: its kind, size and hash."""

    path: Path
    filename: str
    kind: str
    size: int
    sha256: str


@dataclass
class LoadReport:
    """How a file was read: rows and columns, its encoding or sheet, rows skipped, renames and warnings."""

    rows: int = 0
    columns: list[dict[str, str]] = field(default_factory=list)
    encoding: str | None = None
    sheet: str | None = None
    skipped_rows: int = 0
    skipped_lines: list[int] = field(default_factory=list)  # the first few, 1-based as in an editor
    renamed: dict[str, str] = field(default_factory=dict)  # header as written -> SQL name
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "encoding": self.encoding, "sheet": self.sheet, "skipped_rows": self.skipped_rows,
                "skipped_lines": self.skipped_lines, "renamed": self.renamed, "warnings": self.warnings}


def kind_of(filename: str) -> str:
    """``csv``, ``tsv``, ``xlsx`` or ``parquet`` from the file's extension; :class:`LoadRefused` otherwise."""
    suffix = Path(filename).suffix.lower()
    if suffix not in KINDS:
        if suffix == ".xls":
            raise LoadRefused(f"{filename}: old Excel files (.xls) are not read; save it as .xlsx or CSV")
        raise LoadRefused(f"{filename}: a data table must be CSV, TSV, Excel (.xlsx) or Parquet")
    return KINDS[suffix]


def inspect_file(path: Path, filename: str, *, max_bytes: int) -> SourceFile:
    """Check the file's kind, that it is not empty and not over ``max_bytes``, and hash it."""
    kind = kind_of(filename)
    size = path.stat().st_size
    if size == 0:
        raise LoadRefused(f"{filename} is empty: there is nothing to load")
    if size > max_bytes:
        raise LoadRefused(f"{filename} is {_megabytes(size)}, over the limit of {_megabytes(max_bytes)} "
                          "(CHATCORE_DATA_MAX_MB raises it)")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return SourceFile(path=path, filename=filename, kind=kind, size=size, sha256=digest.hexdigest())


def _megabytes(size: int) -> str:
    """A size in MB as people read it: ``4,096 MB``, ``2.5 MB``, ``0.063 MB`` (never ``0 MB`` over ``0 MB``)."""
    mb = size / 2**20
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.2g} MB"


def sql_name(header: str) -> str:
    """A header as a SQL name: lower case, runs of other characters as ``_``, never starting with a digit."""
    name = re.sub(r"[^0-9a-z]+", "_", str(header).strip().lower()).strip("_")
    if not name:
        return "column"
    return name if not name[0].isdigit() else "c_" + name


def _unique_names(headers: list[str]) -> list[str]:
    names: list[str] = []
    for header in headers:
        base = name = sql_name(header)
        n = 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


# -- encodings ------------------------------------------------------------------------------------------


def detect_encoding(path: Path) -> str:
    """``utf-8`` when the file's start decodes as UTF-8 (a byte-order mark is fine), else the best guess."""
    with path.open("rb") as handle:
        sample = handle.read(_SAMPLE_BYTES)
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(sample) < _SAMPLE_BYTES)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise LoadRefused(f"{path.name} does not look like text in any known encoding; is it really a CSV file?")
    if _latin_script(str(best)):
        # On a short sample the guesser cannot tell the Latin code pages apart (a Windows-1252 file with “ ” €
        # came back as cp775); Windows-1252, what Excel writes on Western systems, is the likely one.
        try:
            sample.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return best.encoding


def _latin_script(text: str) -> bool:
    """Whether every letter of ``text`` is a Latin one (no Cyrillic, Greek, Arabic, Hebrew, CJK ...)."""
    return all(unicodedata.name(ch, "").startswith("LATIN") for ch in text if ch.isalpha())


def transcode(path: Path, encoding: str, directory: Path) -> Path:
    """A UTF-8 copy of a text file in ``encoding``, written in blocks (a 2 GB file never sits in memory)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    target = Path(tempfile.mkstemp(suffix=".csv", dir=directory)[1])
    try:
        with path.open("rb") as source, target.open("w", encoding="utf-8", newline="") as sink:
            for block in iter(lambda: source.read(1 << 20), b""):
                sink.write(decoder.decode(block))
            sink.write(decoder.decode(b"", final=True))
    except UnicodeDecodeError as exc:
        target.unlink(missing_ok=True)
        raise LoadRefused(f"{path.name} is not valid {encoding} either (byte {exc.start}); "
                          "save it as UTF-8 and add it again") from None
    return target


# -- loading --------------------------------------------------------------------------------------------


def _watch(connection: duckdb.DuckDBPyConnection, progress: Progress | None, what: str) -> Callable[[], None]:
    """Report DuckDB's own progress on the statement running now, every half second; returns the stop."""
    if progress is None:
        return lambda: None
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            try:
                fraction = connection.query_progress()
            except duckdb.Error:
                return
            if fraction is not None and fraction >= 0:
                progress(min(fraction / 100.0, 0.99), what)

    thread = threading.Thread(target=poll, name="data-load-progress", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()
    return finish


def _csv_options(kind: str, encoding: str, *, whole_file_types: bool) -> str:
    delim = "\\t" if kind == "tsv" else ","
    options = (f"delim=E'{delim}', header=true, quote='\"', escape='\"', ignore_errors=true, store_rejects=true,"
               " rejects_table='cc_rejects', rejects_scan='cc_reject_scans', rejects_limit=0,"
               f" nullstr=[{', '.join(repr(m) for m in MISSING)}]")
    if encoding in ("utf-16", "latin-1"):
        options += f", encoding='{encoding}'"
    if whole_file_types:  # sniff types over every row, so a column with "n/a" far down is read as text
        options += ", sample_size=-1"
    return options


def _rejects(connection: duckdb.DuckDBPyConnection) -> list[tuple[int, str]]:
    try:
        # one row per line: DuckDB rejects a line with two extra fields twice (once per field)
        return [(int(line), kind) for line, kind in connection.execute(
            "SELECT line, min(error_type) FROM cc_rejects GROUP BY line ORDER BY line").fetchall()]
    except duckdb.CatalogException:
        return []


def _load_csv(connection: duckdb.DuckDBPyConnection, source: SourceFile, table: str, bad_rows: str,
              report: LoadReport, progress: Progress | None, workdir: Path) -> None:
    encoding = detect_encoding(source.path)
    path = source.path
    if encoding not in ("utf-8", "utf-16"):
        path = transcode(source.path, encoding, workdir)
        report.warnings.append(f"read as {encoding} and converted to UTF-8")
    report.encoding = encoding
    try:
        for whole_file_types in (False, True):
            for name in ("cc_rejects", "cc_reject_scans"):
                connection.execute(f"DROP TABLE IF EXISTS {name}")
            connection.execute(f"DROP TABLE IF EXISTS {quote_identifier(table)}")
            stop = _watch(connection, progress, f"reading {source.filename}")
            try:
                connection.execute(f"CREATE TABLE {quote_identifier(table)} AS SELECT * FROM read_csv(?, "
                                   f"{_csv_options(source.kind, encoding, whole_file_types=whole_file_types)})",
                                   [str(path)])
            except duckdb.Error as exc:
                raise LoadRefused(f"{source.filename} could not be read as {source.kind.upper()}: "
                                  f"{str(exc).splitlines()[0]}") from None
            finally:
                stop()
            rejects = _rejects(connection)
            if whole_file_types or not any(kind == "CAST" for _, kind in rejects):
                break
            # a value far down did not fit the type guessed from the first rows: read again, types from every row
            report.warnings.append("some columns mix numbers and text; their types were guessed from every row")
    finally:
        if path != source.path:
            path.unlink(missing_ok=True)
    if rejects:
        lines = [line for line, _ in rejects]
        kinds: dict[str, int] = {}
        for _, kind in rejects:
            kinds[kind.lower()] = kinds.get(kind.lower(), 0) + 1
        counts = ", ".join(f"{n} with {kind}" for kind, n in sorted(kinds.items()))
        shown = ", ".join(str(n) for n in lines[:5]) + (" …" if len(lines) > 5 else "")
        if bad_rows == "refuse":
            raise LoadRefused(f"{source.filename} has {len(lines)} malformed row{'s' * (len(lines) != 1)} "
                              f"(line{'s' * (len(lines) != 1)} {shown}: {counts}); fix the file, or add it with "
                              "malformed rows skipped")
        report.skipped_rows, report.skipped_lines = len(lines), lines[:20]
        report.warnings.append(f"skipped {len(lines)} malformed row{'s' * (len(lines) != 1)} "
                               f"(line{'s' * (len(lines) != 1)} {shown}: {counts})")


def sheets(path: Path) -> list[str]:
    """The sheet names of an Excel workbook, in order."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors for a broken file
        raise LoadRefused(f"{path.name} is not a readable .xlsx workbook ({type(exc).__name__})") from None
    try:
        return list(workbook.sheetnames)
    finally:
        workbook.close()


def _load_xlsx(connection: duckdb.DuckDBPyConnection, source: SourceFile, table: str, sheet: str | None,
               report: LoadReport) -> None:
    import pandas as pd

    names = sheets(source.path)
    if sheet is None:
        if len(names) > 1:
            raise LoadRefused(f"{source.filename} has {len(names)} sheets ({', '.join(names)}); choose one")
        sheet = names[0]
    elif sheet not in names:
        raise LoadRefused(f"{source.filename} has no sheet {sheet!r}; its sheets are {', '.join(names)}")
    frame = pd.read_excel(source.path, sheet_name=sheet, engine="openpyxl")
    for column in frame.columns:
        values = frame[column].dropna()
        if frame[column].dtype == object and values.map(type).nunique() > 1:
            # numbers and text in one column: keep every value, as text, rather than fail the load
            frame[column] = frame[column].map(lambda v: None if pd.isna(v) else str(v))
            report.warnings.append(f"column {column!r} mixes numbers and text; it was read as text")
    frame.columns = [str(c) for c in frame.columns]
    connection.register(_INCOMING, frame)
    try:
        connection.execute(f"CREATE TABLE {quote_identifier(table)} AS SELECT * FROM {_INCOMING}")
    finally:
        connection.unregister(_INCOMING)
    report.sheet = sheet


def _load_parquet(connection: duckdb.DuckDBPyConnection, source: SourceFile, table: str,
                  progress: Progress | None) -> None:
    stop = _watch(connection, progress, f"reading {source.filename}")
    try:
        connection.execute(f"CREATE TABLE {quote_identifier(table)} AS SELECT * FROM read_parquet(?)",
                           [str(source.path)])
    except duckdb.Error as exc:
        raise LoadRefused(f"{source.filename} could not be read as Parquet: {str(exc).splitlines()[0]}") from None
    finally:
        stop()


def _rename_columns(connection: duckdb.DuckDBPyConnection, table: str, report: LoadReport) -> None:
    headers = [r[0] for r in connection.execute(f"DESCRIBE {quote_identifier(table)}").fetchall()]
    if len(headers) > MAX_COLUMNS:
        raise LoadRefused(f"the table has {len(headers):,} columns, over the limit of {MAX_COLUMNS:,}")
    for header, name in zip(headers, _unique_names(headers)):
        if header != name:
            connection.execute(f"ALTER TABLE {quote_identifier(table)} RENAME COLUMN {quote_identifier(header)} "
                               f"TO {quote_identifier(name)}")
            report.renamed[header] = name


def load_file(connection: duckdb.DuckDBPyConnection, source: SourceFile, table: str, *, sheet: str | None = None,
              bad_rows: str = "refuse", progress: Progress | None = None, workdir: Path | None = None) -> LoadReport:
    """Create ``table`` from ``source`` inside the caller's open transaction; :class:`LoadRefused` for bad input."""
    if bad_rows not in BAD_ROWS:
        raise LoadRefused(f"bad_rows must be one of {', '.join(BAD_ROWS)}, got {bad_rows!r}")
    if sheet is not None and source.kind != "xlsx":
        raise LoadRefused("a sheet can only be chosen for an Excel (.xlsx) file")
    report = LoadReport()
    if source.kind in ("csv", "tsv"):
        _load_csv(connection, source, table, bad_rows, report, progress, workdir or source.path.parent)
    elif source.kind == "xlsx":
        _load_xlsx(connection, source, table, sheet, report)
    else:
        _load_parquet(connection, source, table, progress)
    _rename_columns(connection, table, report)
    report.rows = connection.execute(f"SELECT count(*) FROM {quote_identifier(table)}").fetchone()[0]
    if report.rows == 0:
        raise LoadRefused(f"{source.filename} has column names but no rows: there is nothing to analyse")
    report.columns = [{"name": r[0], "type": r[1]}
                      for r in connection.execute(f"DESCRIBE {quote_identifier(table)}").fetchall()]
    return report

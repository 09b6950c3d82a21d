"""``chatcore data``: data tables from the terminal (add, list, show, profile, query, analyze, answers, export).

Glue only, as ``chatcore docs``: open the store, call :class:`chatcore.services.data.DataService` as the ``local``
user, print for a person or, with ``--json``, for a program. Loading shows a progress bar on stderr; every
answer is saved with its record, and ``data export`` writes its result as CSV.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from chatcore.cli.common import echo_json, json_option, local_time, open_store, storage_errors
from chatcore.cli.group import main
from chatcore.core.errors import ChatCoreError
from chatcore.core.settings import Settings
from chatcore.services.data import Answer, DataService, LoadRefused
from chatcore.services.data.analyses import ANALYSES
from storage import LOCAL_OWNER
from storage import library as store_library

SHOWN_ROWS = 50  # result rows printed unless --rows says otherwise (the CSV and --json hold them all)
MAX_CELL = 40  # characters of a cell in an aligned table; longer text ends in …
_BAR_STEPS = 1000
_HIDDEN = ("owner", "collection_id")


def data_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`storage_errors`, with the data errors' own words first: a refused query is a ``PermissionError``
    and a slow one a ``TimeoutError``, which are ``OSError``s that name no file."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ChatCoreError as exc:
            raise click.ClickException(str(exc)) from exc

    return storage_errors(wrapper)


def data_service(settings: Settings, store: Any, **options: Any) -> DataService:
    """The data service over ``store`` with the settings' limits (``options``: ``backend_for``, ``hold``)."""
    return DataService.from_settings(settings, store, **options)


def open_data(**options: Any) -> DataService:
    """The data service over the command's store (closed when the command ends)."""
    ctx = click.get_current_context()
    data = data_service(ctx.find_object(Settings) or Settings(), open_store(), **options)
    ctx.call_on_close(data.close)
    return data


def table_ref(value: str) -> int | str:
    """A table named by id or by SQL name (a name starts with a letter)."""
    return int(value) if value.isdigit() else value


def table_json(table: dict[str, Any], *, profile: bool = True) -> dict[str, Any]:
    hidden = _HIDDEN if profile else (*_HIDDEN, "profile")
    return {k: v for k, v in table.items() if k not in hidden}


# -- printing -------------------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """One value as a table shows it: empty for NULL, floats without trailing noise, long text cut."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = format(value, ".10g")
    else:
        text = " ".join(str(value).split())
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def aligned(names: list[str], rows: list[list[Any]]) -> list[str]:
    """``rows`` under ``names`` in aligned columns, numbers right-aligned."""
    texts = [[cell(v) for v in row] for row in rows]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                                  for r in rows if r[i] is not None) for i in range(len(names))]
    widths = [max([len(n)] + [len(r[i]) for r in texts]) for i, n in enumerate(names)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)).rstrip()

    return [line(names), line(["-" * w for w in widths]), *(line(r) for r in texts)]


def echo_result(answer: Answer, shown: int) -> None:
    """The result table (its first ``shown`` rows; 0: all), then how many rows there are and whether it was cut."""
    shown = shown or len(answer.rows)
    if not answer.columns:
        click.echo("(no columns)")
        return
    for text in aligned(answer.names, answer.rows[:shown]):
        click.echo(text)
    rows = f"{answer.row_count:,} row{'s' if answer.row_count != 1 else ''}"
    if shown < len(answer.rows):
        rows += f"; {shown} shown, all with --rows 0 or --csv FILE"
    if answer.truncated:
        rows += "; truncated at the row limit (CHATCORE_DATA_MAX_ROWS): aggregate, or add LIMIT"
    click.echo(f"({rows})")


def echo_answer(answer: Answer, shown: int, *, sql: bool) -> None:
    """An answer for a person: its SQL (when ``sql``), its table, its statistics, narrative, chart and id."""
    if sql:
        click.echo(click.style("SQL", bold=True))
        for text in answer.sql.strip().splitlines():
            click.echo("  " + text)
        click.echo()
    echo_result(answer, shown)
    if answer.narrative:
        click.echo()
        click.echo(answer.narrative)
    if answer.unverified:
        click.secho(f"Unverified: {', '.join(answer.unverified)} (in the narrative, not in the result)", fg="yellow")
    if answer.chart:
        y = ", ".join(answer.chart.get("y") or [])
        click.echo(f"Chart: {answer.chart['kind']} of {y} by {answer.chart['x']}")
    saved = f"answer {answer.id}" if answer.id is not None else "not saved"
    click.secho(f"[{saved}; {answer.record.get('elapsed_s', 0):.3f} s]", dim=True)


def write_csv(answer: Answer, path: Path) -> None:
    path.write_text(answer.to_csv(), encoding="utf-8")
    click.echo(f"Wrote {answer.row_count:,} rows to {path}", err=True)


def progress_bar(label: str) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    """A progress bar on stderr fed by the service's ``progress(fraction, what)``; and a function that closes it."""
    bar = tqdm(total=_BAR_STEPS, desc=label, file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def update(fraction: float, what: str) -> None:
        bar.set_description_str(f"{label} ({what})" if what else label, refresh=False)
        bar.update(max(0, int(fraction * _BAR_STEPS) - bar.n))

    return update, bar.close


def echo_load_summary(table: dict[str, Any]) -> None:
    """What ``data add`` loaded: rows, columns, how it was read, renames, skipped rows and warnings."""
    report = table["report"]
    columns = table["columns"]
    click.echo(f"Added table {table['name']} (id {table['id']}) from {table['filename']}: {table['rows']:,} rows, "
               f"{len(columns)} column{'s' if len(columns) != 1 else ''}, collection {table['collection']!r}.")
    how = [f"encoding {report['encoding']}" if report.get("encoding") else "",
           f"sheet {report['sheet']!r}" if report.get("sheet") else ""]
    if any(how):
        click.echo("  read with " + ", ".join(h for h in how if h))
    click.echo("  columns: " + ", ".join(f"{c['name']} {c['type']}" for c in columns))
    renamed = {k: v for k, v in (report.get("renamed") or {}).items() if k.lower() != v}  # not mere lower-casing
    if renamed:
        click.echo("  renamed: " + ", ".join(f"{k!r} → {v}" for k, v in renamed.items()))
    if report.get("skipped_rows"):
        lines = ", ".join(map(str, report["skipped_lines"][:10]))
        click.echo(f"  skipped {report['skipped_rows']:,} malformed row{'s' if report['skipped_rows'] != 1 else ''}"
                   + (f" (lines {lines}{' …' if report['skipped_rows'] > 10 else ''})" if lines else ""))
    for warning in report.get("warnings") or []:
        if not warning.startswith("skipped "):  # said just above
            click.echo(f"  warning: {warning}")
    click.echo(f"Query it with: chatcore data query {table['name']} \"SELECT * FROM {table['name']} LIMIT 10\"")


def profile_lines(profile: dict[str, Any]) -> list[str]:
    """A profile as aligned lines: each column's type, missing and distinct counts, and its range or top values."""
    rows = []
    for c in profile["columns"]:
        if c["kind"] in ("numeric", "temporal") and c.get("min") is not None:
            summary = f"{cell(c['min'])} … {cell(c['max'])}"
            if c.get("mean") is not None:
                summary += f", mean {format(c['mean'], '.4g')}, sd {format(c['std'] or 0, '.4g')}"
        elif c.get("top"):
            summary = "top: " + ", ".join(f"{cell(v)} ({n:,})" for v, n in c["top"][:3])
        else:
            summary = ""
        rows.append([c["name"], c["type"], c["kind"], c["missing"], c["distinct"], summary])
    lines = aligned(["column", "type", "kind", "missing", "distinct", "summary"], rows)
    for c in profile["columns"]:
        lines += [f"warning: {c['name']}: {w}" for w in c.get("warnings") or []]
    return lines


# -- commands -------------------------------------------------------------------------------------------------


@main.group()
def data() -> None:
    """Data tables: add CSV, TSV, Excel or Parquet, profile them, query them in a sandbox, analyse them
    without a model (`chatcore ask --data NAME` asks the model to write the SQL)."""


@data.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="The table's SQL name (default: from the file name, e.g. trials.csv → trials).")
@click.option("--collection", default=store_library.DEFAULT_COLLECTION, show_default=True,
              help="The library collection to add it to (created if new).")
@click.option("--sheet", help="The sheet of an Excel workbook with several.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip malformed rows (counted) instead of refusing the file.")
@json_option
@data_errors
def add(file: Path, name: str | None, collection: str, sheet: str | None, skip_bad_rows: bool, as_json: bool) -> None:
    """Load FILE as a table and profile it.

    CSV, TSV, Excel (.xlsx) or Parquet, with a progress bar; a refused file leaves nothing half-loaded.
    """
    service = open_data()
    if file.suffix.lower() == ".xlsx" and sheet is None and file.stat().st_size:
        names = service.sheets(file)  # choose before loading, in the flag's words
        if len(names) > 1:
            raise click.ClickException(f"{file.name} has {len(names)} sheets ({', '.join(names)}); "
                                       "choose one with --sheet NAME")
    update, close = progress_bar(f"Loading {file.name}")
    try:
        table = service.add(LOCAL_OWNER, file, name=name, collection=collection, sheet=sheet,
                            bad_rows="skip" if skip_bad_rows else "refuse", progress=update)
    except LoadRefused as exc:
        hint = " (--skip-bad-rows)" if "malformed row" in str(exc) and not skip_bad_rows else ""
        raise click.ClickException(f"{exc}{hint}") from None
    finally:
        close()
    if as_json:
        echo_json(table_json(table))
    else:
        echo_load_summary(table)


@data.command("list")
@click.option("--collection", help="Only this collection's tables.")
@json_option
@data_errors
def list_(collection: str | None, as_json: bool) -> None:
    """Tables by name, with their rows, columns and source file."""
    service = open_data()
    if collection is not None:
        store_library.get_collection(service.store, LOCAL_OWNER, collection)  # a wrong name is an error, not "none"
    tables = service.tables(LOCAL_OWNER, collection=collection)
    if as_json:
        echo_json([table_json(t, profile=False) for t in tables])
        return
    if not tables:
        click.echo("No tables. Add one with: chatcore data add FILE")
        return
    lines = aligned(["ID", "NAME", "ROWS", "COLUMNS", "COLLECTION", "ADDED", "FILE"],
                    [[t["id"], t["name"], t["rows"], len(t["columns"]), t["collection"], local_time(t["created"]),
                      t["filename"]] for t in tables])
    for line in lines:
        click.echo(line)


@data.command()
@click.argument("table")
@json_option
@data_errors
def show(table: str, as_json: bool) -> None:
    """One table (by NAME or ID), with its profile."""
    found = open_data().table(LOCAL_OWNER, table_ref(table))
    if as_json:
        echo_json(table_json(found))
        return
    click.echo(click.style(found["name"], bold=True) + f"  (id {found['id']})")
    report = found["report"]
    facts = [("file", f"{found['filename']} ({found['kind']}, {found['size']:,} bytes)"),
             ("collection", found["collection"]), ("rows", f"{found['rows']:,}"),
             ("columns", str(len(found["columns"]))), ("encoding", report.get("encoding") or ""),
             ("sheet", report.get("sheet") or ""),
             ("skipped", f"{report['skipped_rows']:,} malformed rows" if report.get("skipped_rows") else ""),
             ("sha256", found["sha256"]), ("added", local_time(found["created"]))]
    for label, value in facts:
        if value:
            click.echo(f"{label:>10}  {value}")
    for warning in report.get("warnings") or []:
        click.echo(f"{'warning':>10}  {warning}")
    if found["profile"]:
        click.echo()
        for line in profile_lines(found["profile"]):
            click.echo(line)


@data.command()
@click.argument("table")
@click.option("--refresh", is_flag=True, help="Compute the profile again.")
@json_option
@data_errors
def profile(table: str, refresh: bool, as_json: bool) -> None:
    """A table's profile (--json: with histograms).

    Per column: its type, missing and distinct values, range, mean and spread, or its top values.
    """
    service = open_data()
    found = service.table(LOCAL_OWNER, table_ref(table))
    result = service.profile(LOCAL_OWNER, found["id"], refresh=refresh)
    if as_json:
        echo_json({"table": found["name"], **result})
        return
    click.echo(f"{found['name']}: {result['rows']:,} rows")
    for line in profile_lines(result):
        click.echo(line)


@data.command()
@click.argument("table")
@json_option
@data_errors
def remove(table: str, as_json: bool) -> None:
    """Remove a table (by NAME or ID); undo with `data restore`."""
    found = open_data().remove(LOCAL_OWNER, table_ref(table))
    if as_json:
        echo_json({"id": found["id"], "name": found["name"], "deleted": True})
    else:
        click.echo(f"Removed table {found['name']} (id {found['id']}). Undo with: chatcore data restore {found['id']}")


@data.command()
@click.argument("table_id", type=int)
@json_option
@data_errors
def restore(table_id: int, as_json: bool) -> None:
    """Bring back a removed table by its ID."""
    found = open_data().restore(LOCAL_OWNER, table_id)
    if as_json:
        echo_json(table_json(found, profile=False))
    else:
        click.echo(f"Restored table {found['name']} (id {found['id']}): {found['rows']:,} rows.")


def answer_options(command: Callable) -> Callable:
    """--rows --csv --no-save --json: how an answer is printed, written and kept."""
    for decorator in reversed([
        click.option("--rows", "shown", default=SHOWN_ROWS, show_default=True, type=click.IntRange(0),
                     help="Result rows to print (0: all)."),
        click.option("--csv", "csv_path", type=click.Path(dir_okay=False, writable=True, path_type=Path),
                     help="Also write the whole result to this CSV file."),
        click.option("--no-save", is_flag=True, help="Do not keep the answer."),
        json_option,
    ]):
        command = decorator(command)
    return command


def finish_answer(answer: Answer, shown: int, csv_path: Path | None, as_json: bool, *, sql: bool) -> None:
    if csv_path is not None:
        write_csv(answer, csv_path)
    if as_json:
        echo_json(answer.to_dict())
    else:
        echo_answer(answer, shown, sql=sql)


@data.command()
@click.argument("table")
@click.argument("sql")
@answer_options
@data_errors
def query(table: str, sql: str, shown: int, csv_path: Path | None, no_save: bool, as_json: bool) -> None:
    """Run SQL (one SELECT) about TABLE.

    Prints the result table, its row count, whether it was cut, and the saved answer's id.
    The sandbox reads your tables only: files, URLs, other databases, extensions and writes are refused.
    """
    service = open_data()
    service.table(LOCAL_OWNER, table_ref(table))  # a wrong name is said before the query runs
    answer = service.query(LOCAL_OWNER, sql, save=not no_save)
    finish_answer(answer, shown, csv_path, as_json, sql=False)


def _names(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


@data.command()
@click.argument("table")
@click.argument("kind", type=click.Choice(ANALYSES))
@click.option("--by", help="groupby, compare: the column to group by.")
@click.option("--measure", help="groupby, compare: the numeric column to summarise or compare.")
@click.option("--x", "x", help="regression: the predictor column.")
@click.option("--y", "y", help="regression: the outcome column.")
@click.option("--groups", help="compare: the two groups of --by to compare, as A,B.")
@click.option("--columns", help="correlation: the numeric columns, as a,b,c (default: all numeric).")
@answer_options
@data_errors
def analyze(table: str, kind: str, by: str | None, measure: str | None, x: str | None, y: str | None,
            groups: str | None, columns: str | None, shown: int, csv_path: Path | None, no_save: bool,
            as_json: bool) -> None:
    """Analyse TABLE without a model.

    Group-by summaries, a correlation matrix, a two-group comparison (Welch's t-test, effect size,
    Mann-Whitney) or a simple linear regression: the query, a table and a chart, as for a question.
    """
    params = {"by": by, "measure": measure, "x": x, "y": y, "groups": _names(groups), "columns": _names(columns)}
    answer = open_data().analyze(LOCAL_OWNER, table_ref(table), kind, save=not no_save,
                                 **{k: v for k, v in params.items() if v is not None})
    finish_answer(answer, shown, csv_path, as_json, sql=True)
    if answer.statistics and not as_json:
        click.echo(click.style("Statistics", bold=True))
        for key, value in answer.statistics.items():
            click.echo(f"  {key}: {cell(value) if not isinstance(value, (dict, list)) else value}")


@data.command()
@click.argument("table", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@json_option
@data_errors
def answers(table: str | None, limit: int, as_json: bool) -> None:
    """Saved answers, newest first (only those over TABLE when given)."""
    service = open_data()
    found = service.answers(LOCAL_OWNER, table=table, limit=limit)
    if as_json:
        echo_json([a.to_dict() for a in found])
        return
    if not found:
        click.echo("No answers" + (f" over {table}" if table else "") + ". Ask one with: chatcore data query NAME SQL")
        return
    lines = aligned(["ID", "KIND", "ROWS", "CREATED", "TABLES", "QUESTION OR SQL"],
                    [[a.id, a.kind, a.row_count, local_time(a.created) if a.created else "", ",".join(t["name"] for t in a.tables),
                      a.question or a.sql] for a in found])
    for line in lines:
        click.echo(line)


@data.command()
@click.argument("answer_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="The CSV file to write (default: standard output).")
@data_errors
def export(answer_id: int, output: Path | None) -> None:
    """A saved answer's result as CSV, header first."""
    answer = open_data().answer(LOCAL_OWNER, answer_id)
    if output is None:
        click.echo(answer.to_csv(), nl=False)
    else:
        write_csv(answer, output)

"""``chatcore data`` and ``chatcore ask --data`` on a real store and real DuckDB in a temporary CHATCORE_HOME,
with the dose-response experiment (CSV, a two-sheet workbook) and bad files; questions through a server whose
model answers a fixed SQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chatcore.api.routes import create_api_app
from chatcore.testing.commands import invoker
from chatcore.testing.data import mean_response, write_trials_csv, write_trials_xlsx
from chatcore.testing.engines import Scripted
from chatcore.testing.servers import manager_for, serve

MEANS_SQL = "SELECT condition, avg(response) AS mean_response FROM trials GROUP BY condition ORDER BY condition"
MEANS_TABLE = [
    "condition  mean_response",
    "---------  -------------",
    "control               50",
    "drug_a             63.75",
    "drug_b              77.5",
]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke ``chatcore``; the model is one that does not exist, so any model load fails loudly."""
    return invoker(monkeypatch, cache=tmp_path / "cache", model=tmp_path / "no-model-here")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "empty.csv").write_bytes(b"")
    (folder / "notes.txt").write_text("subject,response\n1,2\n")
    (folder / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n6,7\n8,9\n")
    return {"csv": write_trials_csv(folder / "trials.csv"),
            "xlsx": write_trials_xlsx(folder / "workbook.xlsx", extra_sheets=("notes",)),
            "empty": folder / "empty.csv", "txt": folder / "notes.txt", "ragged": folder / "ragged.csv"}


@pytest.fixture
def trials(cli, files: dict[str, Path]) -> Path:
    """The experiment added as the table ``trials``."""
    result = cli("data", "add", str(files["csv"]))
    assert result.exit_code == 0, result.output
    return files["csv"]


def json_of(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(result, message: str) -> None:
    """A command that failed with one clear line on stderr and exit status 1."""
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in result.output


# -- tables ---------------------------------------------------------------------------------------------------


def test_add_loads_with_a_progress_bar_then_prints_what_it_loaded(cli, files: dict[str, Path]) -> None:
    result = cli("data", "add", str(files["csv"]), "--collection", "lab")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Added table trials (id 1) from trials.csv: 60 rows, 5 columns, collection 'lab'.",
        "  read with encoding utf-8",
        "  columns: subject BIGINT, condition VARCHAR, dose BIGINT, response DOUBLE, accuracy DOUBLE",
        'Query it with: chatcore data query trials "SELECT * FROM trials LIMIT 10"',
    ]
    assert "Loading trials.csv (ready): 100%" in result.stderr
    table = json_of(cli("data", "show", "trials", "--json"))
    assert table["collection"] == "lab" and table["rows"] == 60 and "owner" not in table


def test_the_empty_states_say_what_to_do(cli) -> None:
    assert cli("data", "list").stdout == "No tables. Add one with: chatcore data add FILE\n"
    assert cli("data", "answers").stdout == "No answers. Ask one with: chatcore data query NAME SQL\n"
    assert json_of(cli("data", "list", "--json")) == []


def test_tables_are_listed_shown_and_profiled(cli, trials: Path) -> None:
    listed = cli("data", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "NAME", "ROWS", "COLUMNS", "COLLECTION", "ADDED", "FILE"]
    assert listed[2].split()[:5] == ["1", "trials", "60", "5", "default"] and listed[2].endswith("trials.csv")
    assert [t["name"] for t in json_of(cli("data", "list", "--json"))] == ["trials"]
    refused(cli("data", "list", "--collection", "nowhere"), "no collection named 'nowhere'")
    shown = cli("data", "show", "trials").stdout
    assert "      file  trials.csv (csv, 1,421 bytes)" in shown and "      rows  60" in shown
    response = next(line for line in shown.splitlines() if line.startswith("response "))
    assert response.split()[:5] == ["response", "DOUBLE", "numeric", "0", "41"] and "mean 63.75" in response
    condition = next(line for line in shown.splitlines() if line.startswith("condition "))
    assert "top: control (20), drug_a (20)" in condition
    assert json_of(cli("data", "show", "1", "--json"))["profile"] == json_of(cli("data", "show", "trials", "--json"))[
        "profile"]
    profile = json_of(cli("data", "profile", "trials", "--json"))
    assert profile["table"] == "trials" and profile["rows"] == 60 and len(profile["columns"]) == 5
    refreshed = json_of(cli("data", "profile", "trials", "--refresh", "--json"))
    assert refreshed["columns"] == profile["columns"]
    assert cli("data", "profile", "trials").stdout.startswith("trials: 60 rows\ncolumn ")
    refused(cli("data", "show", "nope"), "no table 'nope'")


def test_remove_says_how_to_undo_and_restore_brings_the_table_back(cli, trials: Path) -> None:
    removed = cli("data", "remove", "trials")
    assert removed.stdout == "Removed table trials (id 1). Undo with: chatcore data restore 1\n"
    refused(cli("data", "show", "trials"), "no table 'trials'")
    refused(cli("data", "query", "trials", "SELECT 1"), "no table 'trials'")
    assert cli("data", "restore", "1").stdout == "Restored table trials (id 1): 60 rows.\n"
    assert json_of(cli("data", "query", "trials", "SELECT count(*) AS n FROM trials", "--json"))["rows"] == [[60]]
    refused(cli("data", "restore", "1"), "no removed table 1")


def test_a_workbook_of_two_sheets_needs_a_sheet(cli, files: dict[str, Path]) -> None:
    refused(cli("data", "add", str(files["xlsx"])),
            "workbook.xlsx has 2 sheets (trials, notes); choose one with --sheet NAME")
    refused(cli("data", "add", str(files["xlsx"]), "--sheet", "results"),
            "workbook.xlsx has no sheet 'results'; its sheets are trials, notes")
    assert json_of(cli("data", "list", "--json")) == []  # nothing half-loaded
    result = cli("data", "add", str(files["xlsx"]), "--sheet", "trials", "--name", "from_excel")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        "Added table from_excel (id 1) from workbook.xlsx: 60 rows, 5 columns, collection 'default'.",
        "  read with sheet 'trials'"]


def test_malformed_rows_are_refused_with_the_flag_to_skip_them_then_skipped_and_counted(
        cli, files: dict[str, Path]) -> None:
    refused(cli("data", "add", str(files["ragged"])),
            "ragged.csv has 1 malformed row (line 3: 1 with too many columns); fix the file, or add it with "
            "malformed rows skipped (--skip-bad-rows)")
    assert json_of(cli("data", "list", "--json")) == []
    result = cli("data", "add", str(files["ragged"]), "--skip-bad-rows")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("Added table ragged (id 1) from ragged.csv: 3 rows, 2 columns")
    assert "  skipped 1 malformed row (lines 3)" in result.stdout.splitlines()
    assert json_of(cli("data", "show", "ragged", "--json"))["report"]["skipped_rows"] == 1


@pytest.mark.parametrize(("file", "flags", "message"), [
    ("empty", (), "empty.csv is empty: there is nothing to load"),
    ("txt", (), "notes.txt: a data table must be CSV, TSV, Excel (.xlsx) or Parquet"),
    ("csv", ("--name", "2020"), "the table name '2020' must start with a lower-case letter and hold only lower-case "
                                "letters, digits and _ (it is the name you write in SQL)"),
    ("csv", ("--sheet", "trials"), "a sheet can only be chosen for an Excel (.xlsx) file"),
])
def test_a_bad_file_or_name_is_one_clear_line_and_loads_nothing(cli, files: dict[str, Path], file: str,
                                                                flags: tuple, message: str) -> None:
    refused(cli("data", "add", str(files[file]), *flags), message)
    assert json_of(cli("data", "list", "--json")) == []


def test_a_taken_name_is_refused(cli, trials: Path) -> None:
    refused(cli("data", "add", str(trials)),
            "a table named 'trials' exists; choose another name or remove it first")


# -- queries and answers --------------------------------------------------------------------------------------


def test_query_prints_an_aligned_table_its_row_count_chart_and_answer_id(cli, trials: Path, tmp_path: Path) -> None:
    out = tmp_path / "means.csv"
    result = cli("data", "query", "trials", MEANS_SQL, "--csv", str(out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == MEANS_TABLE
    assert lines[5:7] == ["(3 rows)", "Chart: bar of mean_response by condition"]
    assert lines[7].startswith("[answer 1; ")
    assert list(csv.reader(out.open())) == [["condition", "mean_response"], ["control", "50.0"],
                                            ["drug_a", "63.75"], ["drug_b", "77.5"]]
    assert "Wrote 3 rows to" in result.stderr
    answer = json_of(cli("data", "query", "trials", MEANS_SQL, "--json"))
    assert answer["kind"] == "query" and answer["sql"] == MEANS_SQL and answer["id"] == 2
    assert answer["rows"] == [[c, mean_response(c)] for c in ("control", "drug_a", "drug_b")]
    assert answer["tables"][0]["name"] == "trials" and len(answer["result_sha256"]) == 64


def test_query_shows_the_first_rows_and_says_when_the_result_was_cut(cli, trials: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shown = cli("data", "query", "trials", "SELECT subject, condition FROM trials ORDER BY subject", "--rows", "2")
    lines = shown.stdout.splitlines()
    assert lines[2:4] == ["      1  control", "      2  control"]
    assert lines[4] == "(60 rows; 2 shown, all with --rows 0 or --csv FILE)"
    monkeypatch.setenv("CHATCORE_DATA_MAX_ROWS", "10")
    cut = cli("data", "query", "trials", "SELECT * FROM trials", "--no-save")
    assert ("(10 rows; truncated at the row limit (CHATCORE_DATA_MAX_ROWS): aggregate, or add LIMIT)"
            in cut.stdout.splitlines())
    assert "[not saved; " in cut.stdout
    assert json_of(cli("data", "answers", "--json"))[0]["row_count"] == 60  # the unsaved one is not listed


@pytest.mark.parametrize(("sql", "message"), [
    ("COPY trials TO 'stolen.csv'", "COPY is refused: queries may not read or write files"),
    ("ATTACH 'other.db' AS other", "ATTACH is refused: queries may not open other databases"),
    ("INSTALL httpfs", "INSTALL and LOAD are refused: extensions are off"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file, URL and extension access is off: queries read only your tables "
     "(Cannot access file \"/etc/passwd\" - file system operations are disabled by configuration)"),
    ("DROP TABLE trials", "DROP is refused: the tables are read-only"),
    ("SELEC 1", "the query does not parse: Parser Error: syntax error at or near \"SELEC\""),
])
def test_the_sandbox_refuses_in_one_line(cli, trials: Path, tmp_path: Path, sql: str, message: str) -> None:
    refused(cli("data", "query", "trials", sql), message)
    assert not (tmp_path / "stolen.csv").exists()
    assert json_of(cli("data", "query", "trials", "SELECT count(*) FROM trials", "--json"))["rows"] == [[60]]


def test_answers_are_listed_and_exported_as_csv(cli, trials: Path, tmp_path: Path) -> None:
    cli("data", "query", "trials", MEANS_SQL)
    cli("data", "query", "trials", "SELECT count(*) AS n FROM trials")
    listed = cli("data", "answers", "trials").stdout.splitlines()
    assert listed[0].split() == ["ID", "KIND", "ROWS", "CREATED", "TABLES", "QUESTION", "OR", "SQL"]
    assert [line.split()[:3] for line in listed[2:]] == [["2", "query", "1"], ["1", "query", "3"]]
    assert listed[3].endswith("SELECT condition, avg(response) AS mean…")
    assert cli("data", "answers", "other").stdout.startswith("No answers over other.")
    exported = cli("data", "export", "1")
    assert exported.stdout == "condition,mean_response\ncontrol,50.0\ndrug_a,63.75\ndrug_b,77.5\n"
    out = tmp_path / "count.csv"
    assert cli("data", "export", "2", "-o", str(out)).exit_code == 0
    assert out.read_text() == "n\n60\n"
    refused(cli("data", "export", "99"), "no answer 99")


def test_analyze_prints_the_computation_table_and_chart(cli, trials: Path) -> None:
    result = cli("data", "analyze", "trials", "groupby", "--by", "condition", "--measure", "response")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("SQL\n  ")
    answer = json_of(cli("data", "analyze", "trials", "compare", "--by", "condition", "--measure", "response",
                         "--groups", "control,drug_b", "--json"))
    assert answer["kind"] == "compare" and answer["params"]["groups"] == ["control", "drug_b"]
    assert answer["statistics"] is not None
    regression = json_of(cli("data", "analyze", "trials", "regression", "--x", "dose", "--y", "response", "--json"))
    assert regression["kind"] == "regression"


def test_analyze_refuses_an_unknown_kind_or_table(cli, trials: Path) -> None:
    unknown = cli("data", "analyze", "trials", "median")
    assert unknown.exit_code == 2 and "'median' is not one of" in unknown.stderr
    refused(cli("data", "analyze", "nope", "groupby", "--by", "condition"), "no table 'nope'")


# -- ask --data -----------------------------------------------------------------------------------------------


def test_ask_data_refuses_flags_that_do_not_apply_and_missing_tables_before_any_model(cli, trials: Path) -> None:
    for flags in (("--docs", "all"), ("--temperature", "0.5"), ("--max-tokens", "8"), ("--system", "Be brief.")):
        result = cli("ask", "--data", "trials", *flags, "Which condition is highest?")
        assert result.exit_code == 2 and f"{flags[0]} does not apply with --data" in result.stderr
    refused(cli("ask", "--data", "trials", "--data", "nope", "Which condition is highest?"), "no table 'nope'")
    refused(cli("ask", "--data", "trials", "  "), "the question is empty")


@pytest.fixture
def scripted_server(hf_engine):
    """A server whose model answers every question with the SQL for the mean response."""
    backend = Scripted(hf_engine, MEANS_SQL)
    with serve(create_api_app(manager=manager_for(backend), store=None)) as url:
        yield url, backend


def test_ask_data_prints_the_sql_result_narrative_and_chart(cli, trials: Path, scripted_server, hf_engine) -> None:
    url, backend = scripted_server
    remote = ("--backend", "openai", "--base-url", f"{url}/v1", "--model", hf_engine.model_name)
    question = "Which condition had the highest mean response?"
    result = cli("ask", "--data", "trials", *remote, question)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "SQL" and lines[1].strip().rstrip(";") == MEANS_SQL
    assert lines[3:8] == MEANS_TABLE
    assert "Chart: bar of mean_response by condition" in lines
    assert "trials" in "".join(f"{system or ''}{last}" for system, last in backend.prompts)
    answer = json_of(cli("ask", "--data", "trials", *remote, "--json", question))
    assert answer["kind"] == "ask" and answer["question"] == question
    assert answer["rows"] == [[c, mean_response(c)] for c in ("control", "drug_a", "drug_b")]
    assert isinstance(answer["unverified"], list) and answer["id"] is not None
    assert json_of(cli("data", "answers", "--json"))[0]["id"] == answer["id"]

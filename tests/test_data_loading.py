"""Loading files into tables on real DuckDB and SQLite: each kind of file, column names, missing values, and
every kind of bad input refused (or skipped) with a clear message, leaving no row, no table, and the name free."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcore.services.data import DataService, LoadRefused, Warehouse
from chatcore.testing import data as trials
from storage import Store
from storage.errors import InvalidValue

OWNER = "ada"
MAX_BYTES = 64 * 1024


@pytest.fixture
def service(tmp_path: Path):
    with Store(tmp_path / "chatcore.db") as store:
        service = DataService(store, Warehouse(tmp_path / "data"), max_bytes=MAX_BYTES)
        yield service
        service.close()


def means(service: DataService, table: str) -> dict[str, float]:
    rows = service.run(OWNER, f"SELECT condition, avg(response) FROM {table} GROUP BY 1").rows
    return {condition: mean for condition, mean in rows}


def expected_means() -> dict[str, float]:
    return {c: trials.mean_response(c) for c in trials.CONDITIONS}


def refused(service: DataService, path: Path, says: str, **options) -> LoadRefused:
    """Adding ``path`` is refused with ``says`` in the message, and leaves nothing behind: no SQLite row, no
    DuckDB table, and the name free for the next load."""
    name = options.pop("name", "attempt")
    before = service.warehouse.tables(OWNER)
    with pytest.raises(LoadRefused, match=says) as caught:
        service.add(OWNER, path, name=name, **options)
    assert service.store.rows("SELECT id FROM data_tables WHERE owner = ? AND name = ?", (OWNER, name)) == []
    assert service.warehouse.tables(OWNER) == before
    good = trials.write_trials_csv(path.parent / "good.csv")
    assert service.add(OWNER, good, name=name)["rows"] == 60  # the name is free again
    service.remove(OWNER, name)
    service.purge(OWNER)
    return caught.value


# -- each kind of file ----------------------------------------------------------------------------------


@pytest.mark.parametrize("write, filename", [
    (trials.write_trials_csv, "Trials.csv"),
    (lambda p: trials.write_trials_csv(p, delimiter="\t"), "Trials.tsv"),
    (trials.write_trials_xlsx, "Trials.xlsx"),
    (trials.write_trials_parquet, "Trials.parquet"),
])
def test_each_kind_of_file_loads_with_the_known_means(service, tmp_path, write, filename):
    table = service.add(OWNER, write(tmp_path / filename))
    assert (table["name"], table["rows"], table["status"]) == ("trials", 60, "ready")
    assert [c["name"] for c in table["columns"]] == list(trials.HEADER)
    assert means(service, "trials") == expected_means()
    assert table["profile"]["rows"] == 60
    assert [t["name"] for t in service.tables(OWNER)] == ["trials"]
    assert service.warehouse.tables(OWNER) == ["trials"]


def test_headers_become_sql_names_and_the_report_says_so(service, tmp_path):
    path = tmp_path / "penguins.csv"
    path.write_text("Body Mass (g),Species,2nd value,species,  \n4200,Adelie,1,x,7\n3800,Gentoo,2,y,8\n")
    table = service.add(OWNER, path)
    # DuckDB names a repeated header species_1 and a blank one column4; both are SQL names already
    assert [c["name"] for c in table["columns"]] == ["body_mass_g", "species", "c_2nd_value", "species_1", "column4"]
    assert table["report"]["renamed"]["Body Mass (g)"] == "body_mass_g"
    assert table["report"]["renamed"]["2nd value"] == "c_2nd_value"
    assert service.run(OWNER, "SELECT sum(body_mass_g) FROM penguins").rows == [[8000]]


def test_na_and_other_missing_markers_read_as_missing(service, tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("x,label\n1,a\nNA,NA\n3,\n#N/A,n/a\n5,NULL\n")
    table = service.add(OWNER, path)
    assert [c["type"] for c in table["columns"]] == ["BIGINT", "VARCHAR"]
    assert service.run(OWNER, "SELECT * FROM gaps").rows == [[1, "a"], [None, None], [3, None], [None, None],
                                                               [5, None]]
    x, label = table["profile"]["columns"]
    assert (x["missing"], x["mean"], label["missing"]) == (2, 3.0, 4)


# -- Excel ----------------------------------------------------------------------------------------------


def test_a_workbook_with_several_sheets_is_refused_naming_them_then_loads_the_chosen_one(service, tmp_path):
    path = trials.write_trials_xlsx(tmp_path / "book.xlsx", extra_sheets=("notes", "draft"))
    assert service.sheets(path) == ["trials", "notes", "draft"]
    refused(service, path, r"3 sheets \(trials, notes, draft\); choose one")
    refused(service, path, r"no sheet 'summary'; its sheets are trials, notes, draft", sheet="summary")
    table = service.add(OWNER, path, sheet="trials")
    assert (table["name"], table["rows"], table["report"]["sheet"]) == ("book", 60, "trials")
    assert means(service, "book") == expected_means()


def test_a_sheet_is_refused_for_a_csv_file(service, tmp_path):
    refused(service, trials.write_trials_csv(tmp_path / "t.csv"), "only be chosen for an Excel", sheet="trials")


def test_an_excel_column_of_numbers_and_text_is_read_as_text(service, tmp_path):
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["id", "dose"])
    for i, dose in enumerate([10, 20, "about 5", 40]):
        sheet.append([i, dose])
    workbook.save(tmp_path / "mixed.xlsx")
    table = service.add(OWNER, tmp_path / "mixed.xlsx")
    assert table["columns"][1] == {"name": "dose", "type": "VARCHAR"}
    assert any("'dose' mixes numbers and text" in w for w in table["report"]["warnings"])
    assert [r[0] for r in service.run(OWNER, "SELECT dose FROM mixed ORDER BY id").rows] == [
        "10", "20", "about 5", "40"]


def test_a_broken_workbook_is_refused(service, tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    refused(service, path, "not a readable .xlsx workbook")


# -- malformed rows and mixed types ---------------------------------------------------------------------


def malformed(tmp_path: Path) -> Path:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5\n6\n7,8\n9,10\n11,12,13,14\n")
    return path


def test_malformed_rows_are_refused_with_counts_and_line_numbers(service, tmp_path):
    error = refused(service, malformed(tmp_path), "3 malformed rows")
    assert "lines 3, 4, 7" in str(error)
    assert "1 with missing columns" in str(error) and "2 with too many columns" in str(error)
    assert "skipped" in str(error)  # it says what to do


def test_malformed_rows_are_skipped_by_choice_and_counted(service, tmp_path):
    table = service.add(OWNER, malformed(tmp_path), bad_rows="skip")
    assert table["rows"] == 3
    assert (table["report"]["skipped_rows"], table["report"]["skipped_lines"]) == (3, [3, 4, 7])
    assert any("skipped 3 malformed rows" in w for w in table["report"]["warnings"])
    assert service.run(OWNER, "SELECT * FROM ragged ORDER BY a").rows == [[1, 2], [7, 8], [9, 10]]


def test_an_unknown_bad_rows_choice_is_refused(service, tmp_path):
    refused(service, malformed(tmp_path), "bad_rows must be one of refuse, skip", bad_rows="ignore")


def test_words_far_down_a_numeric_column_make_it_text_and_the_profile_names_it(service, tmp_path):
    # DuckDB guesses types from its first 20,480 rows; the word comes after them
    service.max_bytes = 2**20
    path = tmp_path / "late.csv"
    lines = ["id,reading,score"] + [f"{i},{i % 97},{i % 13}" for i in range(30_000)]
    lines[25_001] = "25000,about 5,3"
    path.write_text("\n".join(lines) + "\n")
    table = service.add(OWNER, path)
    assert table["rows"] == 30_000 and table["report"]["skipped_rows"] == 0
    types = {c["name"]: c["type"] for c in table["columns"]}
    assert types == {"id": "BIGINT", "reading": "VARCHAR", "score": "BIGINT"}
    profile = {c["name"]: c for c in table["profile"]["columns"]}
    assert any("mixes numbers and text: 1 of 30,000" in w for w in profile["reading"]["warnings"])
    assert profile["score"]["warnings"] == [] and profile["id"]["warnings"] == []
    assert service.run(OWNER, "SELECT reading FROM late WHERE id = 25000").rows == [["about 5"]]


# -- encodings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_western_file_that_is_not_utf8_loads_with_the_right_characters(service, tmp_path, encoding):
    text = "name,city,price\nJosé,Zürich,5\nRenée,Köln,7\nFrançois,Besançon,9\n"
    if encoding == "cp1252":
        text += "“Naïve” Café,São Paulo — centre,11\n"  # quotes, dash: bytes that exist only in Windows-1252
    path = tmp_path / "cities.csv"
    path.write_bytes(text.encode(encoding))
    table = service.add(OWNER, path)
    assert table["report"]["encoding"] == "cp1252"  # a superset of Latin-1's printable characters
    assert any("converted to UTF-8" in w for w in table["report"]["warnings"])
    expected = [line.split(",") for line in text.splitlines()[1:]]
    got = service.run(OWNER, "SELECT name, city, CAST(price AS VARCHAR) FROM cities ORDER BY price").rows
    assert got == expected


def test_a_cyrillic_windows_file_keeps_its_own_code_page(service, tmp_path):
    text = "имя,город\nИван,Москва\nПётр,Санкт-Петербург\nАнна,Новосибирск\n"
    path = tmp_path / "people.csv"
    path.write_bytes(text.encode("cp1251"))
    table = service.add(OWNER, path)
    assert table["report"]["encoding"] == "cp1251"
    assert service.run(OWNER, "SELECT * FROM people").rows == [line.split(",") for line in text.splitlines()[1:]]


def test_a_utf16_file_loads_with_the_right_characters(service, tmp_path):
    text = "name,city\nJosé,Zürich\n日本,東京\nΑθήνα,Ελλάδα\n"
    path = tmp_path / "wide.csv"
    path.write_bytes(text.encode("utf-16"))  # with its byte-order mark, as Excel's "Unicode text" writes
    table = service.add(OWNER, path)
    assert table["report"]["encoding"] == "utf-16"
    assert service.run(OWNER, "SELECT * FROM wide").rows == [line.split(",") for line in text.splitlines()[1:]]


# -- files refused whole --------------------------------------------------------------------------------


def test_an_empty_file_is_refused(service, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    refused(service, path, "empty.csv is empty")


def test_a_header_only_file_is_refused(service, tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,c\n")
    refused(service, path, "header.csv has column names but no rows")


def test_a_file_over_the_size_limit_is_refused_naming_the_setting(service, tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "12345,67890\n" * (MAX_BYTES // 12 + 10))
    error = refused(service, path, r"big.csv is 0.0\d+ MB, over the limit of 0.062 MB")
    assert "CHATCORE_DATA_MAX_MB" in str(error)


@pytest.mark.parametrize("filename, says", [
    ("notes.json", "must be CSV, TSV, Excel"), ("table", "must be CSV, TSV, Excel"),
    ("old.xls", r"old Excel files \(.xls\) are not read; save it as .xlsx"),
])
def test_an_unknown_kind_of_file_is_refused(service, tmp_path, filename, says):
    path = tmp_path / filename
    path.write_text("a,b\n1,2\n")
    refused(service, path, says)


def test_a_missing_file_is_refused(service, tmp_path):
    with pytest.raises(LoadRefused, match="no such file"):
        service.add(OWNER, tmp_path / "nowhere.csv")
    assert service.store.rows("SELECT id FROM data_tables") == []


def test_a_broken_parquet_file_is_refused(service, tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    refused(service, path, "could not be read as Parquet")


def test_a_bad_or_taken_name_is_refused_before_loading(service, tmp_path):
    path = trials.write_trials_csv(tmp_path / "trials.csv")
    with pytest.raises(InvalidValue, match="must start with a lower-case letter"):
        service.add(OWNER, path, name="Bad Name")
    service.add(OWNER, path)
    with pytest.raises(InvalidValue, match="'trials' exists"):
        service.add(OWNER, path)
    assert [t["name"] for t in service.tables(OWNER)] == ["trials"]
    assert service.warehouse.tables(OWNER) == ["trials"]


def test_progress_is_reported_and_ends_ready(service, tmp_path):
    seen: list[tuple[float, str]] = []
    service.add(OWNER, trials.write_trials_csv(tmp_path / "t.csv"), progress=lambda f, what: seen.append((f, what)))
    assert seen[-1] == (1.0, "ready") and (0.99, "profiling") in seen
    assert all(0 <= f <= 1 for f, _ in seen)

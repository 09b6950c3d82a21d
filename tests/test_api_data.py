"""``/v1/data`` against a real server on a free port, over real SQLite and real DuckDB, with two users' keys:
uploads (CSV, a two-sheet workbook, bad files), profiles, sandboxed queries, analyses, questions a scripted
model answers with SQL, saved answers and their CSV, and isolation between owners."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest

from chatcore.api.routes import create_api_app
from chatcore.core.settings import Settings
from chatcore.services.data import DataService
from chatcore.testing.data import mean_response, write_trials_csv, write_trials_parquet, write_trials_xlsx
from chatcore.testing.engines import Scripted
from chatcore.testing.servers import manager_for, serve, two_accounts
from storage import Store

KEY = "data-key-K"
MEANS_SQL = "SELECT condition, avg(response) AS mean_response FROM trials GROUP BY condition ORDER BY condition"
EXPECTED_MEANS = [[c, mean_response(c)] for c in ("control", "drug_a", "drug_b")]
TIMEOUT_S = 3.0  # the server's query time limit: far above what a query of 60 rows takes


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-data")


@pytest.fixture(scope="module")
def store(data_home: Path) -> Store:
    return Store(data_home / "chatcore.db")


@pytest.fixture(scope="module")
def keys(store: Store) -> dict[str, str]:
    """API keys of two accounts, ada and bob."""
    return two_accounts(store)


@pytest.fixture(scope="module")
def model(hf_engine) -> Scripted:
    """The server's model: it decodes for real but always answers with the SQL for the mean response."""
    return Scripted(hf_engine, MEANS_SQL)


@pytest.fixture(scope="module")
def server(model: Scripted, store: Store, data_home: Path, keys: dict[str, str]):
    manager = manager_for(model)
    settings = Settings(home=data_home, data_query_timeout_s=TIMEOUT_S)
    data = DataService.from_settings(settings, store, backend_for=manager.wait_for, hold=manager.hold)
    with serve(create_api_app(manager=manager, store=store, api_key=KEY, data=data)) as url:
        yield url
    data.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    (folder / "empty.csv").write_bytes(b"")
    (folder / "notes.txt").write_text("subject,response\n1,2\n")
    (folder / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n6,7\n8,9\n")
    return {
        "csv": write_trials_csv(folder / "trials.csv"),
        "xlsx": write_trials_xlsx(folder / "workbook.xlsx", extra_sheets=("notes",)),
        "parquet": write_trials_parquet(folder / "trials.parquet"),
        "empty": folder / "empty.csv", "txt": folder / "notes.txt", "ragged": folder / "ragged.csv",
    }


def http(server: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server}/v1/data", headers={"Authorization": f"Bearer {key}"}, timeout=120)


def upload(api: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    return api.post("/tables", files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
                    data=fields)


@pytest.fixture(scope="module")
def ada_trials(server: str, keys: dict[str, str], files: dict[str, Path]) -> dict:
    """Ada's experiment, uploaded as CSV: the 201's body."""
    with http(server, keys["ada"]) as api:
        response = upload(api, files["csv"], collection="lab")
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def ada_answer(server: str, keys: dict[str, str], ada_trials: dict) -> dict:
    """Ada's saved answer to the mean-response query."""
    with http(server, keys["ada"]) as api:
        response = api.post("/query", json={"sql": MEANS_SQL, "question": "Mean response by condition?"})
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


# -- tables ---------------------------------------------------------------------------------------------------


def test_a_csv_upload_answers_201_with_the_table_its_profile_and_load_report(ada_trials: dict) -> None:
    assert ada_trials["object"] == "data.table" and "owner" not in ada_trials
    assert (ada_trials["name"], ada_trials["filename"], ada_trials["kind"], ada_trials["rows"]) == (
        "trials", "trials.csv", "csv", 60)
    assert ada_trials["collection"] == "lab" and ada_trials["status"] == "ready"
    assert [c["name"] for c in ada_trials["columns"]] == ["subject", "condition", "dose", "response", "accuracy"]
    assert ada_trials["report"]["encoding"] == "utf-8" and ada_trials["report"]["skipped_rows"] == 0
    assert ada_trials["report"]["renamed"]["Response"] == "response"
    response = next(c for c in ada_trials["profile"]["columns"] if c["name"] == "response")
    assert (response["kind"], response["missing"], response["mean"]) == ("numeric", 0, 63.75)


def test_tables_are_listed_shown_profiled_removed_and_restored(server: str, keys: dict[str, str],
                                                               ada_trials: dict) -> None:
    table_id = ada_trials["id"]
    with http(server, keys["ada"]) as api:
        listed = api.get("/tables", params={"collection": "lab"}).json()["data"]
        assert [t["name"] for t in listed] == ["trials"] and "profile" not in listed[0]
        assert error_of(api.get("/tables", params={"collection": "nowhere"}), 404)["param"] == "collection"
        by_name, by_id = api.get("/tables/trials").json(), api.get(f"/tables/{table_id}").json()
        assert by_name == by_id and by_name["profile"] == ada_trials["profile"]
        profile = api.get("/tables/trials/profile").json()
        assert (profile["object"], profile["table"], profile["rows"]) == ("data.profile", "trials", 60)
        fresh = api.get(f"/tables/{table_id}/profile", params={"refresh": "true"}).json()
        assert fresh["columns"] == profile["columns"]
        assert error_of(api.get("/tables/trials/profile", params={"refresh": "maybe"}), 400)["param"] == "refresh"
        removed = api.delete("/tables/trials").json()
        assert removed == {"object": "data.table", "id": table_id, "name": "trials", "deleted": True,
                           "restore": f"POST /v1/data/tables/{table_id}/restore"}
        assert error_of(api.get("/tables/trials"), 404)["message"] == "no table 'trials'"
        assert error_of(api.post("/query", json={"sql": "SELECT count(*) FROM trials"}), 400)["code"] == "invalid_sql"
        restored = api.post(f"/tables/{table_id}/restore")
        assert restored.status_code == 200 and restored.json()["name"] == "trials"
        assert api.post("/query", json={"sql": "SELECT count(*) AS n FROM trials"}).json()["rows"] == [[60]]
        assert error_of(api.post(f"/tables/{table_id}/restore"), 404)["message"] == f"no removed table {table_id}"


def test_a_workbook_of_two_sheets_is_refused_naming_them_then_loaded_with_a_sheet(server: str, keys: dict[str, str],
                                                                                  files: dict[str, Path]) -> None:
    with http(server, keys["ada"]) as api:
        refused = error_of(upload(api, files["xlsx"]), 400)
        assert refused["param"] == "sheet" and refused["code"] == "choose_sheet"
        assert refused["message"] == "workbook.xlsx has 2 sheets (trials, notes); choose one with the field 'sheet'"
        wrong = error_of(upload(api, files["xlsx"], sheet="results"), 400)
        assert wrong["param"] == "sheet" and "its sheets are trials, notes" in wrong["message"]
        assert api.get("/tables/workbook").status_code == 404  # nothing half-loaded
        loaded = upload(api, files["xlsx"], sheet="trials", name="from_excel")
        assert loaded.status_code == 201, loaded.text
        table = loaded.json()
        assert (table["name"], table["rows"], table["kind"], table["report"]["sheet"]) == ("from_excel", 60, "xlsx",
                                                                                           "trials")
        parquet = upload(api, files["parquet"], name="from_parquet")
        assert parquet.status_code == 201 and parquet.json()["rows"] == 60
        means = api.post("/query", json={"sql": MEANS_SQL.replace("trials", "from_excel")}).json()["rows"]
        assert means == EXPECTED_MEANS


@pytest.mark.parametrize(("file", "fields", "param", "code", "message"), [
    ("empty", {}, "file", "invalid_file", "empty.csv is empty: there is nothing to load"),
    ("txt", {}, "file", "invalid_file", "notes.txt: a data table must be CSV, TSV, Excel (.xlsx) or Parquet"),
    ("ragged", {}, "file", "invalid_file", "ragged.csv has 1 malformed row (line 3"),
    ("csv", {"bad_rows": "maybe"}, "bad_rows", None, "bad_rows must be one of refuse, skip, got 'maybe'"),
    ("csv", {"name": "2020 data"}, "name", "invalid_value", "must start with a lower-case letter"),
    ("csv", {"name": "select"}, "name", "invalid_value", "is reserved"),
    ("csv", {"collection": " "}, "collection", "invalid_value", "the collection name is empty"),
    ("csv", {"sheet": "trials"}, "sheet", None, "a sheet can only be chosen for an Excel (.xlsx) file"),
])
def test_a_bad_upload_is_400_naming_the_parameter_and_loads_nothing(server: str, keys: dict[str, str],
                                                                    files: dict[str, Path], file: str, fields: dict,
                                                                    param: str, code: str | None,
                                                                    message: str) -> None:
    with http(server, keys["bob"]) as api:
        before = api.get("/tables").json()["data"]
        error = error_of(upload(api, files[file], **fields), 400)
        assert (error["param"], error["code"]) == (param, code)
        assert message in error["message"]
        assert api.get("/tables").json()["data"] == before


def test_malformed_rows_are_refused_or_skipped_and_counted_by_choice(server: str, keys: dict[str, str],
                                                                    files: dict[str, Path]) -> None:
    with http(server, keys["bob"]) as api:
        skipped = upload(api, files["ragged"], bad_rows="skip")
        assert skipped.status_code == 201, skipped.text
        report = skipped.json()["report"]
        assert (skipped.json()["rows"], report["skipped_rows"], report["skipped_lines"]) == (3, 1, [3])
        taken = error_of(upload(api, files["ragged"], bad_rows="skip"), 400)
        assert taken["param"] == "name" and "a table named 'ragged' exists" in taken["message"]
        assert api.delete("/tables/ragged").status_code == 200


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"data": {"name": "x"}}, "file"),
    ({"json": {"file": "trials.csv"}}, "file"),
    ({"files": {"file": ("", b"a,b\n1,2\n", "text/csv")}}, "file"),
])
def test_an_upload_without_a_file_is_400(server: str, keys: dict[str, str], kwargs: dict, param: str) -> None:
    with http(server, keys["ada"]) as api:
        assert error_of(api.post("/tables", **kwargs), 400)["param"] == param


# -- queries and answers --------------------------------------------------------------------------------------


def test_a_query_answers_with_its_sql_result_chart_and_record(server: str, keys: dict[str, str], ada_trials: dict,
                                                              ada_answer: dict) -> None:
    assert ada_answer["object"] == "data.answer" and ada_answer["kind"] == "query"
    assert ada_answer["sql"] == MEANS_SQL and ada_answer["question"] == "Mean response by condition?"
    assert ada_answer["rows"] == EXPECTED_MEANS and ada_answer["row_count"] == 3 and not ada_answer["truncated"]
    assert ada_answer["columns"] == [{"name": "condition", "type": "VARCHAR"}, {"name": "mean_response", "type": "DOUBLE"}]
    assert ada_answer["chart"]["kind"] == "bar" and ada_answer["chart"]["x"] == "condition"
    assert ada_answer["tables"] == [{"id": ada_trials["id"], "name": "trials", "sha256": ada_trials["sha256"]}]
    assert len(ada_answer["result_sha256"]) == 64 and isinstance(ada_answer["id"], int)
    with http(server, keys["ada"]) as api:
        stored = api.get(f"/answers/{ada_answer['id']}").json()
        assert stored == ada_answer
        download = api.get(f"/answers/{ada_answer['id']}", params={"format": "csv"})
        assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
        assert f'filename="answer-{ada_answer["id"]}.csv"' in download.headers["content-disposition"]
        assert list(csv.reader(io.StringIO(download.text))) == [
            ["condition", "mean_response"], *[[c, str(m)] for c, m in EXPECTED_MEANS]]
        assert error_of(api.get(f"/answers/{ada_answer['id']}", params={"format": "xml"}), 400)["param"] == "format"


def test_an_unsaved_query_is_answered_and_not_kept(server: str, keys: dict[str, str], ada_trials: dict) -> None:
    with http(server, keys["ada"]) as api:
        answer = api.post("/query", json={"sql": "SELECT max(dose) AS top FROM trials", "save": False}).json()
        assert answer["rows"] == [[40]] and answer["id"] is None
        assert all(a["sql"] != answer["sql"] for a in api.get("/answers").json()["data"])


def test_answers_are_listed_newest_first_by_table_and_limit(server: str, keys: dict[str, str],
                                                            ada_answer: dict) -> None:
    with http(server, keys["ada"]) as api:
        second = api.post("/query", json={"sql": "SELECT count(*) AS n FROM trials"}).json()
        listed = api.get("/answers", params={"table": "trials"}).json()["data"]
        assert [a["id"] for a in listed][:1] == [second["id"]] and ada_answer["id"] in [a["id"] for a in listed]
        assert [a["id"] for a in api.get("/answers", params={"limit": 1}).json()["data"]] == [second["id"]]
        assert api.get("/answers", params={"table": "nothing_here"}).json()["data"] == []
        for bad in ("0", "many", "501"):
            assert error_of(api.get("/answers", params={"limit": bad}), 400)["param"] == "limit"


@pytest.mark.parametrize(("sql", "says"), [
    ("COPY trials TO '/tmp/stolen.csv'", "COPY is refused"),
    ("ATTACH '/tmp/other.db' AS other", "ATTACH is refused"),
    ("INSTALL httpfs", "INSTALL and LOAD are refused"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file, URL and extension access is off"),
    ("SELECT * FROM '/etc/hosts.csv'", "file, URL and extension access is off"),
    ("SELECT * FROM 'https://example.com/data.csv'", "file, URL and extension access is off"),
    ("DELETE FROM trials", "DELETE is refused"),
    ("CREATE TABLE copy_of AS SELECT * FROM trials", "CREATE is refused"),
    ("SET enable_external_access = true", "refused"),
])
def test_the_sandbox_refuses_files_databases_extensions_and_writes(server: str, keys: dict[str, str],
                                                                   ada_trials: dict, sql: str, says: str) -> None:
    with http(server, keys["ada"]) as api:
        error = error_of(api.post("/query", json={"sql": sql}), 400)
        assert (error["code"], error["param"]) == ("query_refused", "sql")
        assert says in error["message"]
        assert api.post("/query", json={"sql": "SELECT count(*) FROM trials"}).json()["rows"] == [[60]]


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"sql": "SELEC 1"}, 400, "sql", "invalid_sql"),
    ({"sql": "SELECT nope FROM trials"}, 400, "sql", "invalid_sql"),
    ({"sql": "  "}, 400, "sql", "invalid_sql"),
    ({}, 400, "sql", None),
    ({"sql": 5}, 400, "sql", None),
    ({"sql": "SELECT 1", "save": "yes"}, 400, "save", None),
    ({"sql": "SELECT 1", "limit": 5}, 400, "limit", None),
    ({"sql": "SELECT 1", "question": ""}, 400, "question", "invalid_value"),
    ({"sql": "SELECT count(*) FROM range(100000000000)"}, 408, "sql", "query_timeout"),
])
def test_bad_or_slow_queries_are_refused_by_name(server: str, keys: dict[str, str], ada_trials: dict, body: dict,
                                                 status: int, param: str, code: str | None) -> None:
    with http(server, keys["ada"]) as api:
        error = error_of(api.post("/query", json=body), status)
    assert (error["param"], error["code"]) == (param, code)


# -- analyses and questions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"table": "trials", "kind": "median"}, 400, "kind"),
    ({"table": "trials", "kind": "groupby", "params": {"save": False}}, 400, "params"),
    ({"table": "trials", "kind": "groupby", "params": []}, 400, "params"),
    ({"kind": "groupby"}, 400, "table"),
    ({"table": "no_such_table", "kind": "groupby"}, 404, None),
    ({"table": 999_999, "kind": "groupby"}, 404, None),
])
def test_an_analysis_with_bad_input_is_refused_before_it_runs(server: str, keys: dict[str, str], ada_trials: dict,
                                                              body: dict, status: int, param: str | None) -> None:
    with http(server, keys["ada"]) as api:
        assert error_of(api.post("/analyses", json=body), status)["param"] == param


def test_analyses_run_without_a_model_and_answer_like_a_query(server: str, keys: dict[str, str],
                                                              ada_trials: dict) -> None:
    with http(server, keys["ada"]) as api:
        grouped = api.post("/analyses", json={"table": "trials", "kind": "groupby",
                                              "params": {"by": "condition", "measure": "response"}})
        assert grouped.status_code == 200, grouped.text
        answer = grouped.json()
        assert answer["object"] == "data.answer" and answer["kind"] == "groupby"
        assert answer["params"]["by"] == ["condition"] and answer["params"]["measure"] == ["response"]
        means = {row[0]: row[answer["columns"].index(next(c for c in answer["columns"] if "mean" in c["name"]))]
                 for row in answer["rows"]}
        assert means == {c: m for c, m in EXPECTED_MEANS}
        assert answer["sql"] and answer["chart"] is not None and answer["id"] is not None
        compared = api.post("/analyses", json={"table": ada_trials["id"], "kind": "compare", "params": {
            "by": "condition", "measure": "response", "groups": ["control", "drug_b"]}})
        assert compared.status_code == 200, compared.text
        assert compared.json()["statistics"] is not None
        regression = api.post("/analyses", json={"table": "trials", "kind": "regression",
                                                 "params": {"x": "dose", "y": "response"}})
        assert regression.status_code == 200, regression.text
        correlation = api.post("/analyses", json={"table": "trials", "kind": "correlation",
                                                  "params": {"columns": ["dose", "response", "accuracy"]}})
        assert correlation.status_code == 200, correlation.text
        wrong = error_of(api.post("/analyses", json={"table": "trials", "kind": "groupby",
                                                     "params": {"by": "colour", "measure": "response"}}), 400)
        assert wrong["param"] == "by"


def test_a_question_is_answered_by_the_models_sql_run_in_the_sandbox(server: str, keys: dict[str, str],
                                                                     ada_trials: dict, model: Scripted) -> None:
    question = "Which condition had the highest mean response?"
    with http(server, keys["ada"]) as api:
        response = api.post("/ask", json={"question": question, "tables": ["trials"], "seed": 7})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["object"] == "data.answer" and answer["kind"] == "ask" and answer["question"] == question
        assert answer["sql"].strip().rstrip(";") == MEANS_SQL and answer["rows"] == EXPECTED_MEANS
        assert answer["tables"] == [{"id": ada_trials["id"], "name": "trials", "sha256": ada_trials["sha256"]}]
        assert answer["chart"]["kind"] == "bar" and isinstance(answer["unverified"], list)
        assert api.get(f"/answers/{answer['id']}").json()["sql"] == answer["sql"]
    system, last = model.prompts[-1]
    assert "trials" in (system or "") + last and question in (system or "") + last


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"question": "", "tables": ["trials"]}, 400, "question"),
    ({"question": "Which is highest?", "tables": []}, 400, "tables"),
    ({"question": "Which is highest?"}, 400, "tables"),
    ({"question": "Which is highest?", "tables": "trials"}, 400, "tables"),
    ({"question": "Which is highest?", "tables": ["no_such_table"]}, 404, None),
    ({"question": "Which is highest?", "tables": ["trials"], "model": "no-such-model"}, 404, "model"),
    ({"question": "Which is highest?", "tables": ["trials"], "seed": "7"}, 400, "seed"),
])
def test_a_question_with_bad_input_is_refused_before_the_model(server: str, keys: dict[str, str], ada_trials: dict,
                                                               model: Scripted, body: dict, status: int,
                                                               param: str | None) -> None:
    asked = len(model.prompts)
    with http(server, keys["ada"]) as api:
        assert error_of(api.post("/ask", json=body), status)["param"] == param
    assert len(model.prompts) == asked


# -- isolation and keys ---------------------------------------------------------------------------------------


def test_another_users_tables_and_answers_answer_exactly_as_missing_ones(server: str, keys: dict[str, str],
                                                                         ada_trials: dict, ada_answer: dict) -> None:
    """Bob sees none of Ada's tables or answers: each of her ids and names answers as one that does not exist."""
    table_id, answer_id = ada_trials["id"], ada_answer["id"]
    with http(server, keys["bob"]) as bob, http(server, keys["ada"]) as ada:
        for method, path, theirs, missing in [
            ("GET", "/tables/{}", table_id, 999_999), ("GET", "/tables/{}", "trials", "absent"),
            ("GET", "/tables/{}/profile", table_id, 999_999), ("GET", "/tables/{}/profile", "trials", "absent"),
            ("DELETE", "/tables/{}", table_id, 999_999), ("DELETE", "/tables/{}", "trials", "absent"),
            ("POST", "/tables/{}/restore", table_id, 999_999),
            ("GET", "/answers/{}", answer_id, 999_999), ("GET", "/answers/{}?format=csv", answer_id, 999_999),
        ]:
            mine, absent = bob.request(method, path.format(theirs)), bob.request(method, path.format(missing))
            assert mine.status_code == absent.status_code == 404, path
            assert mine.json() == {"error": {**absent.json()["error"], "message": absent.json()["error"][
                "message"].replace(str(missing), str(theirs))}}, path
        for body, other in [({"table": "trials", "kind": "groupby"}, {"table": "absent", "kind": "groupby"}),
                            ({"table": table_id, "kind": "groupby"}, {"table": 999_999, "kind": "groupby"})]:
            mine, absent = bob.post("/analyses", json=body), bob.post("/analyses", json=other)
            assert mine.status_code == absent.status_code == 404
            assert mine.json()["error"]["message"] == absent.json()["error"]["message"].replace(
                str(other["table"]), str(body["table"]))
        mine = bob.post("/ask", json={"question": "Highest mean?", "tables": ["trials"]})
        absent = bob.post("/ask", json={"question": "Highest mean?", "tables": ["absent"]})
        assert mine.status_code == absent.status_code == 404
        assert mine.json()["error"]["message"].replace("trials", "absent") == absent.json()["error"]["message"]
        mine = bob.post("/query", json={"sql": "SELECT * FROM trials"})
        absent = bob.post("/query", json={"sql": "SELECT * FROM absent"})
        assert error_of(mine, 400)["code"] == error_of(absent, 400)["code"] == "invalid_sql"
        assert mine.json()["error"]["message"].replace("trials", "absent") == absent.json()["error"]["message"]
        assert all(t["name"] != "trials" for t in bob.get("/tables").json()["data"])
        assert all(a["id"] != answer_id for a in bob.get("/answers").json()["data"])
        assert bob.get("/answers", params={"table": "trials"}).json()["data"] == []
        assert ada.get(f"/tables/{table_id}").status_code == 200  # still there for her
        assert ada.get(f"/answers/{answer_id}").status_code == 200


def test_each_owner_has_their_own_namespace_of_tables(server: str, keys: dict[str, str], files: dict[str, Path],
                                                      ada_trials: dict) -> None:
    """Bob may name a table as Ada did; each sees only their own rows."""
    with http(server, keys["bob"]) as bob, http(server, keys["ada"]) as ada:
        mine = upload(bob, files["ragged"], name="trials", bad_rows="skip")
        assert mine.status_code == 201, mine.text
        assert bob.post("/query", json={"sql": "SELECT count(*) FROM trials"}).json()["rows"] == [[3]]
        assert ada.post("/query", json={"sql": "SELECT count(*) FROM trials"}).json()["rows"] == [[60]]
        assert bob.delete("/tables/trials").status_code == 200


def test_data_needs_a_key_like_the_rest_of_v1(server: str) -> None:
    with httpx.Client(base_url=f"{server}/v1/data") as anonymous:
        for method, path in [("GET", "/tables"), ("POST", "/query"), ("GET", "/answers/1")]:
            error = error_of(anonymous.request(method, path), 401)
            assert error["code"] == "invalid_api_key"

"""storage.data on a real SQLite file: table names, a load's begin/finish/abandon, names taken and freed,
removal and restore, answers, and that one owner never reaches another's tables or answers."""

from __future__ import annotations

import pytest

from storage import Store
from storage import data as db
from storage.errors import InvalidValue, NotFound

OWNER, OTHER = "ada", "bob"
COLUMNS = [{"name": "dose", "type": "BIGINT"}, {"name": "response", "type": "DOUBLE"}]
PROFILE = {"rows": 3, "columns": [{"name": "dose", "kind": "numeric", "missing": 0}]}


def begin(store: Store, name: str = "trials", owner: str = OWNER, collection: str = "default") -> dict:
    return db.begin_table(store, owner, name, filename=f"{name}.csv", kind="csv", sha256="a" * 64, size=120,
                          collection=collection)


def ready(store: Store, name: str = "trials", owner: str = OWNER, **options) -> dict:
    row = begin(store, name, owner, **options)
    return db.finish_table(store, owner, row["id"], rows=3, columns=COLUMNS, profile=PROFILE,
                           report={"encoding": "utf-8", "skipped_rows": 0})


def answer(tables: list[dict], **overrides) -> dict:
    values = {"kind": "query", "question": "mean by dose?", "sql": "SELECT dose, avg(response) FROM trials GROUP BY 1",
              "columns": [{"name": "dose", "type": "BIGINT"}], "rows": [[0, 50.0], [10, 55.5]], "row_count": 2,
              "truncated": False, "result_sha256": "b" * 64, "tables": tables, "chart": None,
              "narrative": "Dose 10 gives 55.5.", "statistics": None, "unverified": [], "record": {"elapsed_s": 0.01}}
    return {**values, **overrides}


@pytest.mark.parametrize("name", ["trials", "t", "penguins_2020", "a" * db.TABLE_NAME_MAX_CHARS, "  trials  "])
def test_valid_table_names(name):
    assert db.check_table_name(name) == name.strip()


@pytest.mark.parametrize("name, says", [
    ("", "empty"), ("   ", "empty"), (None, "empty"), (7, "empty"),
    ("a" * (db.TABLE_NAME_MAX_CHARS + 1), "longer than 63"),
    ("Trials", "lower-case"), ("2020_data", "lower-case"), ("_x", "lower-case"), ("my table", "lower-case"),
    ('x"; DROP TABLE y; --', "lower-case"), ("naïve", "lower-case"),
    ("select", "reserved"), ("main", "reserved"), ("information_schema", "reserved"), ("cc_incoming", "reserved"),
])
def test_invalid_table_names_say_why(name, says):
    with pytest.raises(InvalidValue, match=says):
        db.check_table_name(name)


@pytest.mark.parametrize("filename, name", [
    ("Penguins (2020).csv", "penguins_2020"), ("trials.csv", "trials"), ("/a/b/Dose-Response.v2.xlsx", "dose_response_v2"),
    ("2020 results.csv", "t_2020_results"), ("(((.csv", "t_table"), ("select.csv", "t_select"),
    ("cc_rejects.csv", "t_cc_rejects"), ("Ünïcode.csv", "n_code"), ("x" * 100 + ".csv", "x" * 63),
])
def test_name_from_filename_is_always_valid(filename, name):
    assert db.name_from_filename(filename) == name
    assert db.check_table_name(name) == name


def test_begin_finish_and_abandon(store):
    row = begin(store)
    assert row["status"] == "loading" and row["rows"] is None and row["collection"] == "default"
    with pytest.raises(NotFound):  # a table on its way in is not listed or found
        db.get_table(store, OWNER, row["id"])
    assert db.list_tables(store, OWNER) == []
    assert [r["id"] for r in db.loading_tables(store)] == [row["id"]]

    done = db.finish_table(store, OWNER, row["id"], rows=3, columns=COLUMNS, profile=PROFILE, report={"x": 1})
    assert (done["status"], done["rows"], done["columns"], done["profile"], done["report"]) == (
        "ready", 3, COLUMNS, PROFILE, {"x": 1})
    assert db.loading_tables(store) == []
    with pytest.raises(NotFound, match="being loaded"):  # a ready table is never finished twice
        db.finish_table(store, OWNER, row["id"], rows=3, columns=COLUMNS, profile=PROFILE, report={})

    db.abandon_table(store, OWNER, row["id"])  # abandon touches only loading rows
    assert db.get_table(store, OWNER, row["id"])["status"] == "ready"

    other = begin(store, "second")
    db.abandon_table(store, OWNER, other["id"])
    assert store.rows("SELECT id FROM data_tables WHERE id = ?", (other["id"],)) == []


def test_a_taken_name_is_refused_while_loading_and_when_ready_then_free_again(store):
    row = begin(store)
    with pytest.raises(InvalidValue, match="'trials' is being loaded"):
        begin(store)
    db.abandon_table(store, OWNER, row["id"])
    ready(store)
    with pytest.raises(InvalidValue, match="'trials' exists"):
        begin(store)
    ready(store, owner=OTHER)  # another owner's name space is separate
    assert [t["name"] for t in db.list_tables(store, OTHER)] == ["trials"]


def test_get_by_id_and_name_and_list_by_collection(store):
    first = ready(store, "zebra")
    second = ready(store, "alpha", collection="lab")
    assert db.get_table(store, OWNER, first["id"])["name"] == "zebra"
    assert db.get_table(store, OWNER, "alpha")["id"] == second["id"]
    assert [t["name"] for t in db.list_tables(store, OWNER)] == ["alpha", "zebra"]
    assert [t["name"] for t in db.list_tables(store, OWNER, collection="lab")] == ["alpha"]
    assert db.list_tables(store, OWNER, collection="nothing") == []
    with pytest.raises(NotFound, match="no table 'missing'"):
        db.get_table(store, OWNER, "missing")
    with pytest.raises(NotFound, match="no table 999"):
        db.get_table(store, OWNER, 999)


def test_delete_restore_and_forget(store):
    row = ready(store)
    db.delete_table(store, OWNER, row["id"])
    assert db.list_tables(store, OWNER) == []
    with pytest.raises(NotFound):
        db.get_table(store, OWNER, "trials")
    assert [t["id"] for t in db.deleted_tables(store, OWNER)] == [row["id"]]

    assert db.restore_table(store, OWNER, row["id"])["name"] == "trials"
    with pytest.raises(NotFound, match="no removed table"):
        db.restore_table(store, OWNER, row["id"])

    db.delete_table(store, OWNER, row["id"])
    again = ready(store)  # the removed table's name is free ...
    with pytest.raises(InvalidValue, match="exists again"):  # ... so restoring it would clash
        db.restore_table(store, OWNER, row["id"])
    assert db.get_table(store, OWNER, "trials")["id"] == again["id"]

    db.forget_table(store, OWNER, again["id"])  # forget touches only removed rows
    assert db.get_table(store, OWNER, again["id"])["status"] == "ready"
    db.forget_table(store, OWNER, row["id"])
    assert db.deleted_tables(store, OWNER) == []


def test_set_profile_replaces_it(store):
    row = ready(store)
    db.set_profile(store, OWNER, row["id"], {"rows": 3, "columns": []})
    assert db.get_table(store, OWNER, row["id"])["profile"] == {"rows": 3, "columns": []}
    with pytest.raises(NotFound):
        db.set_profile(store, OTHER, row["id"], {"rows": 0, "columns": []})
    assert db.get_table(store, OWNER, row["id"])["profile"] == {"rows": 3, "columns": []}


def test_answers_are_kept_whole_and_listed_newest_first(store):
    trials = ready(store)
    doses = ready(store, "doses")
    tables = [{"id": trials["id"], "name": "trials", "sha256": trials["sha256"]}]
    first = db.save_answer(store, OWNER, answer(tables, truncated=True))
    second = db.save_answer(store, OWNER, answer([{"id": doses["id"], "name": "doses", "sha256": "c" * 64}],
                                                 chart={"kind": "bar", "x": "dose", "y": ["avg"]},
                                                 statistics={"p": 0.01}, unverified=["12.5"]))
    got = db.get_answer(store, OWNER, first["id"])
    for key, value in answer(tables, truncated=True).items():
        assert got[key] == value, key
    assert got["created"] and got["owner"] == OWNER
    saved = db.get_answer(store, OWNER, second["id"])
    assert (saved["chart"], saved["statistics"], saved["unverified"]) == (
        {"kind": "bar", "x": "dose", "y": ["avg"]}, {"p": 0.01}, ["12.5"])

    assert [a["id"] for a in db.list_answers(store, OWNER)] == [second["id"], first["id"]]
    assert [a["id"] for a in db.list_answers(store, OWNER, table="trials")] == [first["id"]]
    assert [a["id"] for a in db.list_answers(store, OWNER, table="doses")] == [second["id"]]
    assert db.list_answers(store, OWNER, table="nothing") == []
    assert [a["id"] for a in db.list_answers(store, OWNER, limit=1)] == [second["id"]]


def test_an_answer_with_no_optional_parts_gets_empty_defaults(store):
    saved = db.save_answer(store, OWNER, {"kind": "query", "sql": "SELECT 1", "columns": [], "rows": [],
                                          "row_count": 0, "result_sha256": "d" * 64, "tables": []})
    assert (saved["params"], saved["unverified"], saved["record"], saved["truncated"], saved["chart"]) == (
        {}, [], {}, False, None)


def test_another_owner_is_answered_exactly_like_a_missing_table_or_answer(store):
    row = ready(store)
    saved = db.save_answer(store, OWNER, answer([{"id": row["id"], "name": "trials", "sha256": row["sha256"]}]))
    missing_id = row["id"] + 1000

    def message(call) -> str:
        with pytest.raises(NotFound) as caught:
            call()
        return str(caught.value)

    def same(theirs: str, missing: str, their_id: object, missing_id: object) -> bool:
        return theirs.replace(str(their_id), "X") == missing.replace(str(missing_id), "X")

    assert same(message(lambda: db.get_table(store, OTHER, row["id"])),
                message(lambda: db.get_table(store, OTHER, missing_id)), row["id"], missing_id)
    assert same(message(lambda: db.get_table(store, OTHER, "trials")),
                message(lambda: db.get_table(store, OTHER, "nothing")), "trials", "nothing")
    assert same(message(lambda: db.get_answer(store, OTHER, saved["id"])),
                message(lambda: db.get_answer(store, OTHER, saved["id"] + 1000)), saved["id"], saved["id"] + 1000)
    assert db.list_tables(store, OTHER) == [] and db.list_answers(store, OTHER) == []

    # another owner can neither remove, restore, finish, abandon nor forget ada's table
    with pytest.raises(NotFound):
        db.delete_table(store, OTHER, row["id"])
    db.delete_table(store, OWNER, row["id"])
    with pytest.raises(NotFound, match=f"no removed table {row['id']}"):
        db.restore_table(store, OTHER, row["id"])
    assert db.deleted_tables(store, OTHER) == []
    db.forget_table(store, OTHER, row["id"])
    assert db.restore_table(store, OWNER, row["id"])["id"] == row["id"]
    loading = begin(store, "incoming")
    db.abandon_table(store, OTHER, loading["id"])
    with pytest.raises(NotFound):
        db.finish_table(store, OTHER, loading["id"], rows=1, columns=COLUMNS, profile=PROFILE, report={})
    assert [r["id"] for r in db.loading_tables(store)] == [loading["id"]]

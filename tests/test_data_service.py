"""DataService on real DuckDB and SQLite: remove, restore and purge; one owner never reaching another's tables;
recover() after a crash mid-load, simulated and real (kill -9); answers with their records, filters and CSV."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from chatcore.services.data import DataService, QueryFailed, Warehouse
from chatcore.services.data.service import REMOVED_PREFIX
from chatcore.services.data.warehouse import FileBusy
from chatcore.testing import data as trials
from storage import Store
from storage import data as db
from storage.errors import InvalidValue, NotFound

ALICE, BOB = "alice", "bob"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def service(tmp_path: Path):
    with Store(tmp_path / "chatcore.db") as store:
        service = DataService(store, Warehouse(tmp_path / "data"))
        yield service
        service.close()


@pytest.fixture
def loaded(service, tmp_path) -> dict:
    return service.add(ALICE, trials.write_trials_csv(tmp_path / "trials.csv"))


def rows_named(service: DataService, name: str) -> list[dict]:
    return service.store.rows("SELECT id, owner, status, deleted_at FROM data_tables WHERE name = ?", (name,))


# -- remove, restore, purge -----------------------------------------------------------------------------


def test_remove_hides_the_table_and_restore_brings_it_back(service, loaded):
    removed = service.remove(ALICE, "trials")
    assert removed["id"] == loaded["id"]
    assert service.tables(ALICE) == []
    assert service.warehouse.tables(ALICE) == [f"{REMOVED_PREFIX}{loaded['id']}"]
    with pytest.raises(NotFound):
        service.table(ALICE, "trials")
    with pytest.raises(QueryFailed, match="does not exist"):
        service.run(ALICE, "SELECT * FROM trials")

    restored = service.restore(ALICE, loaded["id"])
    assert (restored["name"], restored["rows"], restored["profile"]) == ("trials", 60, loaded["profile"])
    assert service.warehouse.tables(ALICE) == ["trials"]
    assert service.run(ALICE, "SELECT count(*) FROM trials").rows == [[60]]
    with pytest.raises(NotFound, match=f"no removed table {loaded['id']}"):
        service.restore(ALICE, loaded["id"])


def test_restore_is_refused_when_the_name_was_taken_again(service, loaded, tmp_path):
    service.remove(ALICE, loaded["id"])
    again = service.add(ALICE, trials.write_trials_parquet(tmp_path / "trials.parquet"))
    assert again["name"] == "trials" and again["id"] != loaded["id"]
    with pytest.raises(InvalidValue, match="'trials' exists again; remove it before restoring"):
        service.restore(ALICE, loaded["id"])
    # nothing moved: the new table answers, the removed one waits
    assert sorted(service.warehouse.tables(ALICE)) == sorted(["trials", f"{REMOVED_PREFIX}{loaded['id']}"])
    assert service.table(ALICE, "trials")["id"] == again["id"]
    service.remove(ALICE, again["id"])
    assert service.restore(ALICE, loaded["id"])["id"] == loaded["id"]


def test_purge_drops_removed_tables_for_good(service, loaded, tmp_path):
    kept = service.add(ALICE, trials.write_trials_csv(tmp_path / "kept.csv"))
    service.remove(ALICE, "trials")
    assert service.purge(ALICE) == 1
    assert service.warehouse.tables(ALICE) == ["kept"]
    assert rows_named(service, "trials") == []
    with pytest.raises(NotFound):
        service.restore(ALICE, loaded["id"])
    assert service.purge(ALICE) == 0
    assert [t["id"] for t in service.tables(ALICE)] == [kept["id"]]


def test_profile_is_kept_and_computed_again_on_request(service, loaded):
    profile = service.profile(ALICE, "trials")
    assert profile == loaded["profile"]
    columns = {c["name"]: c for c in profile["columns"]}
    assert (columns["dose"]["min"], columns["dose"]["max"], columns["dose"]["mean"]) == (0, 40, 17.5)
    assert columns["condition"]["top"] == [["control", 20], ["drug_a", 20], ["drug_b", 20]]
    assert sum(columns["response"]["histogram"]["counts"]) == 60
    assert service.profile(ALICE, loaded["id"], refresh=True) == profile


# -- isolation ------------------------------------------------------------------------------------------


def message(call, *args) -> str:
    with pytest.raises(NotFound) as caught:
        call(*args)
    return str(caught.value)


def test_another_owners_table_answers_exactly_like_a_missing_one(service, loaded):
    their_id, missing_id = loaded["id"], loaded["id"] + 1000
    for call in (service.table, service.profile, service.remove):
        assert message(call, BOB, their_id) == f"no table {their_id}"
        assert message(call, BOB, missing_id) == f"no table {missing_id}"
        assert message(call, BOB, "trials") == "no table 'trials'"
        assert message(call, ALICE, "missing") == "no table 'missing'"
    assert message(service.analyze, BOB, "trials", "groupby") == "no table 'trials'"
    assert message(service.restore, BOB, their_id) == f"no removed table {their_id}"
    assert message(service.restore, BOB, missing_id) == f"no removed table {missing_id}"
    assert service.tables(BOB) == [] and service.purge(BOB) == 0
    assert service.table(ALICE, their_id)["name"] == "trials"  # untouched by bob's tries


def test_another_owners_answer_answers_exactly_like_a_missing_one(service, loaded):
    saved = service.query(ALICE, "SELECT count(*) AS n FROM trials")
    assert message(service.answer, BOB, saved.id) == f"no answer {saved.id}"
    assert message(service.answer, BOB, saved.id + 1000) == f"no answer {saved.id + 1000}"
    assert service.answers(BOB) == [] and service.answers(BOB, table="trials") == []


def test_one_owners_queries_cannot_see_anothers_tables(service, loaded, tmp_path):
    assert service.warehouse.path(ALICE) != service.warehouse.path(BOB)
    for sql in ("SELECT * FROM trials", "SELECT * FROM main.trials"):
        with pytest.raises(QueryFailed, match="does not exist"):
            service.run(BOB, sql)
    assert service.run(BOB, "SELECT count(*) FROM information_schema.tables").rows == [[0]]
    # bob's own table of the same name holds bob's rows, and alice's is unchanged
    path = tmp_path / "bob" / "trials.csv"
    path.parent.mkdir()
    path.write_text("condition,response\nbob_only,1\n")
    service.add(BOB, path)
    assert service.run(BOB, "SELECT condition FROM trials").rows == [["bob_only"]]
    assert service.run(ALICE, "SELECT count(*) FROM trials").rows == [[60]]


def test_owner_names_cannot_collide_on_one_duckdb_file(service):
    paths = {service.warehouse.path(owner) for owner in ("a/b", "a_b", "a b", "../a_b", "A_B", "a_b" + "x" * 100)}
    assert len(paths) == 6 and all(p.parent == service.warehouse.root for p in paths)


# -- recover --------------------------------------------------------------------------------------------


def test_recover_clears_a_load_cut_short(service, loaded):
    row = db.begin_table(service.store, ALICE, "halfway", filename="halfway.csv", kind="csv", sha256="0" * 64,
                         size=10)
    with service.warehouse.writer(ALICE) as connection:  # the rows got in, the SQLite row never said ready
        connection.execute("CREATE TABLE halfway AS SELECT * FROM range(1000)")
    assert "halfway" in service.warehouse.tables(ALICE)
    assert service.recover() == 1
    assert service.warehouse.tables(ALICE) == ["trials"]
    assert rows_named(service, "halfway") == []
    assert service.recover() == 0
    assert [t["name"] for t in service.tables(ALICE)] == ["trials"]  # the finished table is left alone
    assert row["status"] == "loading"


LOADER = """
import sys
from pathlib import Path
from chatcore.services.data import DataService, Warehouse
from storage import Store

home = Path(sys.argv[1])
with Store(home / "chatcore.db") as store:
    DataService(store, Warehouse(home / "data")).add("alice", sys.argv[2])
print("finished")
"""


def big_csv(path: Path, rows: int = 2_000_000) -> Path:
    with duckdb.connect() as connection:
        connection.execute(
            f"COPY (SELECT i AS id, 'group_' || (i % 50) AS label, i * 0.5 AS value, DATE '2020-01-01' + (i % 900)::INT"
            f" AS day, md5(i::VARCHAR) AS code FROM range({rows}) t(i)) TO '{path}' (HEADER, DELIMITER ',')")
    return path


def test_a_load_killed_with_sigkill_is_cleared_by_recover_and_loads_again(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    source = big_csv(tmp_path / "big.csv")
    with Store(home / "chatcore.db"):
        pass  # the schema exists before the loader and this test both poll it
    loader = subprocess.Popen([sys.executable, "-c", LOADER, str(home), str(source)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        with Store(home / "chatcore.db") as store:
            while loader.poll() is None and not store.rows("SELECT 1 FROM data_tables WHERE status = 'loading'"):
                time.sleep(0.05)
            while loader.poll() is None and not list((home / "data").glob("*.duckdb")):  # DuckDB is writing
                time.sleep(0.05)
            assert loader.poll() is None, loader.communicate()  # it was killed mid-load, not after
            os.kill(loader.pid, signal.SIGKILL)
            loader.wait()
            assert loader.returncode == -signal.SIGKILL
            assert [r["status"] for r in store.rows("SELECT status FROM data_tables")] == ["loading"]
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()

    with Store(home / "chatcore.db") as store:
        service = DataService(store, Warehouse(home / "data"))
        try:
            assert service.recover() == 1
            assert store.rows("SELECT id FROM data_tables") == []
            assert service.warehouse.tables(ALICE) == []
            table = service.add(ALICE, source)
            assert (table["name"], table["rows"]) == ("big", 2_000_000)
            assert service.run(ALICE, "SELECT count(DISTINCT label), max(id) FROM big").rows == [[50, 1_999_999]]
        finally:
            service.close()


# -- answers --------------------------------------------------------------------------------------------


def test_an_answer_is_saved_with_its_tables_hashes_and_result_hash(service, loaded, tmp_path):
    sql = "SELECT condition, avg(response) AS mean FROM trials GROUP BY 1 ORDER BY 1"
    answer = service.query(ALICE, sql, question="Which condition responds most?")
    assert answer.id is not None and answer.created
    assert answer.rows == [[c, trials.mean_response(c)] for c in trials.CONDITIONS]
    assert answer.tables == [{"id": loaded["id"], "name": "trials", "sha256": loaded["sha256"]}]
    assert loaded["sha256"] == hashlib.sha256((tmp_path / "trials.csv").read_bytes()).hexdigest()
    assert answer.result_sha256 == service.run(ALICE, sql).sha256
    assert answer.chart is not None and answer.chart["kind"] == "bar" and answer.chart["x"] == "condition"
    again = service.answer(ALICE, answer.id)
    assert again.to_dict() == answer.to_dict()
    assert service.query(ALICE, sql, save=False).id is None
    assert [a.id for a in service.answers(ALICE)] == [answer.id]


def test_answers_filter_by_table(service, loaded, tmp_path):
    other = service.add(ALICE, trials.write_trials_parquet(tmp_path / "doses.parquet"))
    one = service.query(ALICE, "SELECT count(*) FROM trials")
    two = service.query(ALICE, "SELECT count(*) FROM doses")
    # JOIN ... USING: the query DuckDB's get_table_names cannot read
    both = service.query(ALICE, "SELECT count(*) FROM trials JOIN doses USING (subject)")
    assert [a.id for a in service.answers(ALICE, table="trials")] == [both.id, one.id]
    assert [a.id for a in service.answers(ALICE, table="doses")] == [both.id, two.id]
    assert [t["name"] for t in both.tables] == ["doses", "trials"]
    assert both.tables[0]["id"] == other["id"]
    assert service.answers(ALICE, table="nothing") == []
    assert [a.id for a in service.answers(ALICE)] == [both.id, two.id, one.id]


def test_an_answer_exports_as_csv(service, loaded):
    answer = service.query(ALICE, "SELECT condition, dose, avg(response) AS mean, NULL AS note, 'a,\"b\"' AS odd"
                                  " FROM trials GROUP BY ALL ORDER BY condition, dose")
    text = service.answer(ALICE, answer.id).to_csv()
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["condition", "dose", "mean", "note", "odd"]
    assert len(parsed) == 1 + len(trials.CONDITIONS) * len(trials.DOSES)
    assert parsed[1] == ["control", "0", "50.0", "", 'a,"b"']
    assert parsed[-1] == ["drug_b", "40", str(trials.BASE["drug_b"] + 40 * trials.SLOPE["drug_b"]), "", 'a,"b"']


def test_the_file_is_free_between_queries_and_a_busy_one_is_named(tmp_path: Path, monkeypatch) -> None:
    """Another process (``chatcore data add`` beside a server) may write between queries; while it holds the
    file, a load waits, then says who holds it instead of a DuckDB traceback."""
    from chatcore.services.data import warehouse as warehouse_module

    service = DataService(Store(tmp_path / "c.db"), Warehouse(tmp_path / "data"))
    service.add("alice", trials.write_trials_csv(tmp_path / "trials.csv"))
    service.query("alice", "SELECT count(*) FROM trials")
    path = service.warehouse.path("alice")
    # The other process tries for 10 s: the server keeps a file open IDLE_CLOSE_S after its last query.
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time\n"
                               "for _ in range(100):\n"
                               f"    try: c = duckdb.connect({str(path)!r}); break\n"
                               "    except duckdb.IOException: time.sleep(0.1)\n"
                               "c.execute('SELECT 1'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # it could open the file read-write: the reader let go
        monkeypatch.setattr(warehouse_module, "LOCK_WAIT_S", 0.5)
        with pytest.raises(FileBusy, match=f"in use by another ChatCore process \\(PID {holder.pid}\\)"):
            service.add("alice", trials.write_trials_csv(tmp_path / "more.csv"))
        assert [t["name"] for t in service.tables("alice")] == ["trials"]  # the refused load left nothing
    finally:
        holder.kill()
        holder.wait()
    assert service.add("alice", tmp_path / "more.csv")["rows"] == 60

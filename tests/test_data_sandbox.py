"""The SQL sandbox on real DuckDB: each way out (files, URLs, other databases, extensions, writes, settings)
refused with a clear message and nothing written, by the gate and again by the locked connection behind it;
the time and row limits; and results whose hashes are stable."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from chatcore.services.data import DataService, Limits, QueryFailed, QueryRefused, QueryTimeout, Warehouse
from chatcore.services.data.sandbox import check_sql, result_sha256, run_select
from chatcore.testing import data as trials
from storage import Store

OWNER = "ada"


@pytest.fixture
def service(tmp_path: Path):
    with Store(tmp_path / "chatcore.db") as store:
        service = DataService(store, Warehouse(tmp_path / "data"))
        service.add(OWNER, trials.write_trials_csv(tmp_path / "trials.csv"))
        yield service
        service.close()


def target(tmp_path: Path) -> Path:
    """A path a refused query tries to write; it must not exist afterwards."""
    return tmp_path / "escaped" / "out.csv"


# (query, error, words of the message); {out} is a file the query would write, {db} a database it would open
REFUSED = [
    ("COPY trials TO '{out}'", QueryRefused, "COPY is refused: queries may not read or write files"),
    ("COPY (SELECT * FROM trials) TO '{out}' (FORMAT csv)", QueryRefused, "COPY is refused"),
    ("COPY trials FROM '/etc/passwd'", QueryRefused, "COPY is refused"),
    ("ATTACH '{db}' AS other", QueryRefused, "ATTACH is refused: queries may not open other databases"),
    ("DETACH other", QueryRefused, "DETACH is refused"),
    ("INSTALL httpfs", QueryRefused, "INSTALL and LOAD are refused: extensions are off"),
    ("LOAD httpfs", QueryRefused, "INSTALL and LOAD are refused"),
    ("SELECT * FROM read_csv('/etc/passwd')", QueryRefused, "file, URL and extension access is off"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", QueryRefused, "file, URL and extension access is off"),
    ("SELECT * FROM read_text('/etc/passwd')", QueryRefused, "file, URL and extension access is off"),
    ("SELECT * FROM read_blob('/etc/hostname')", QueryRefused, "file, URL and extension access is off"),
    ("SELECT * FROM glob('/etc/*')", QueryRefused, "file, URL and extension access is off"),
    ("SELECT * FROM read_parquet('{out}')", QueryRefused, "file, URL and extension access is off"),
    ("SELECT * FROM 'https://example.com/data.csv'", QueryRefused, "file, URL and extension access is off"),
    ("SELECT * FROM read_csv('https://example.com/data.csv')", QueryRefused, "file, URL and extension access"),
    ("EXPORT DATABASE '{out}'", QueryRefused, "EXPORT DATABASE is refused: queries may not write files"),
    ("CREATE TABLE copy AS SELECT * FROM trials", QueryRefused, "CREATE is refused: the tables are read-only"),
    ("CREATE VIEW v AS SELECT 1", QueryRefused, "CREATE is refused"),
    ("CREATE MACRO m(a) AS a", QueryRefused, "CREATE is refused"),
    ("INSERT INTO trials VALUES (99, 'x', 0, 1.0, 0.5)", QueryRefused, "INSERT is refused: the tables are read-only"),
    ("UPDATE trials SET response = 0", QueryRefused, "UPDATE is refused: the tables are read-only"),
    ("DELETE FROM trials", QueryRefused, "DELETE is refused: the tables are read-only"),
    ("DROP TABLE trials", QueryRefused, "DROP is refused: the tables are read-only"),
    ("ALTER TABLE trials RENAME TO t2", QueryRefused, "ALTER is refused"),
    ("SET enable_external_access = true", QueryRefused, "SET is refused: the sandbox's settings are locked"),
    ("SET memory_limit = '64GB'", QueryRefused, "SET is refused"),
    ("RESET threads", QueryRefused, "refused"),
    ("PRAGMA enable_profiling", QueryRefused, "PRAGMA is refused: the sandbox's settings are locked"),
    ("PRAGMA threads = 64", QueryRefused, "the sandbox's settings are locked"),
    ("CALL pragma_version()", QueryRefused, "CALL is refused: only SELECT queries run here"),
    ("CHECKPOINT", QueryRefused, "only SELECT queries run here"),
    ("BEGIN TRANSACTION", QueryRefused, "transactions are refused"),
    ("SELECT 1; SELECT 2", QueryRefused, "the text holds 2 statements; run one SELECT at a time"),
    ("SELECT 1; COPY trials TO '{out}'", QueryRefused, "2 statements"),
    ("", QueryFailed, "the query is empty: write one SELECT statement"),
    ("   \n  ", QueryFailed, "the query is empty"),
    (";", QueryFailed, "the query is empty"),
    ("SELEC 1", QueryFailed, "the query does not parse: Parser Error"),
    ("SELECT * FROM query('COPY trials TO ''{out}''')", QueryFailed, "Expected a single SELECT statement"),
]


@pytest.mark.parametrize("sql, error, says", REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_each_way_out_is_refused_clearly_and_writes_nothing(service, tmp_path, sql, error, says):
    out, other = target(tmp_path), tmp_path / "other.duckdb"
    sql = sql.format(out=out, db=other)
    with pytest.raises(error) as caught:
        service.run(OWNER, sql)
    assert says in str(caught.value)
    with pytest.raises(error):  # a saved query is checked alike, and nothing is saved
        service.query(OWNER, sql)
    assert service.answers(OWNER) == []
    assert not out.exists() and not out.parent.exists() and not other.exists()
    assert service.warehouse.tables(OWNER) == ["trials"]
    assert service.run(OWNER, "SELECT count(*), sum(response) FROM trials").rows == [[60, sum(
        r[3] for r in trials.trial_rows())]]


def test_an_overlong_query_is_refused():
    with pytest.raises(QueryFailed, match="longer than 20,000 characters"):
        check_sql("SELECT 1 " + " " * 20_000)


@pytest.mark.parametrize("sql", ["SELECT 1;", "  WITH x AS (SELECT 1 AS a) SELECT a FROM x  ", "FROM trials",
                                 "DESCRIBE trials", "SUMMARIZE trials", "SELECT * FROM trials LIMIT 3",
                                 "SELECT * FROM query_table('trials')", "SELECT current_setting('threads')"])
def test_reads_are_allowed(service, sql):
    assert service.run(OWNER, sql).rows


# -- the second fence: the connection itself, behind the gate -------------------------------------------


@pytest.mark.parametrize("sql, exception", [
    ("COPY trials TO '{out}'", duckdb.PermissionException),
    ("SELECT * FROM read_csv('/etc/passwd')", duckdb.PermissionException),
    ("ATTACH '{db}' AS other", duckdb.PermissionException),
    ("INSTALL httpfs", duckdb.Error),
    ("CREATE TABLE copy AS SELECT 1", duckdb.Error),
    ("INSERT INTO trials VALUES (99, 'x', 0, 1.0, 0.5)", duckdb.Error),
    ("SET enable_external_access = true", duckdb.Error),
    ("SET lock_configuration = false", duckdb.Error),
    ("SET memory_limit = '64GB'", duckdb.Error),
    ("SET autoinstall_known_extensions = true", duckdb.Error),
])
def test_the_locked_connection_refuses_even_without_the_gate(service, tmp_path, sql, exception):
    out, other = target(tmp_path), tmp_path / "other.duckdb"
    with service.warehouse.reader(OWNER) as cursor:
        with pytest.raises(exception):
            cursor.execute(sql.format(out=out, db=other))
        assert cursor.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
        assert cursor.execute("SELECT current_setting('memory_limit')").fetchone()[0] != "64.0 GiB"
    assert not out.exists() and not other.exists()
    assert service.run(OWNER, "SELECT count(*) FROM trials").rows == [[60]]


def test_an_error_from_the_connection_reads_as_a_refusal(service, tmp_path):
    """run_select, given SQL the gate would have refused, still answers with QueryRefused, not a crash."""
    with service.warehouse.reader(OWNER) as cursor:
        with pytest.raises(QueryRefused, match="file, URL and extension access is off"):
            run_select(cursor, f"COPY trials TO '{target(tmp_path)}'", Limits())
        with pytest.raises(QueryRefused, match="read-only"):
            run_select(cursor, "CREATE TABLE t2 AS SELECT 1", Limits())
        with pytest.raises(QueryRefused, match="settings are locked"):
            run_select(cursor, "SET threads = 8", Limits())


# -- limits ---------------------------------------------------------------------------------------------


def test_a_long_query_is_interrupted_by_the_time_limit(service):
    with pytest.raises(QueryTimeout, match="ran past its 0.5 s limit"):
        service.warehouse.query(OWNER, "SELECT count(*) FROM range(10000000000)", limits=Limits(timeout_s=0.5))
    assert service.run(OWNER, "SELECT count(*) FROM trials").rows == [[60]]  # the connection still works


def test_the_row_limit_truncates_and_says_so(service):
    result = service.warehouse.query(OWNER, "SELECT subject FROM trials ORDER BY subject", limits=Limits(max_rows=5))
    assert result.rows == [[1], [2], [3], [4], [5]] and result.truncated
    exact = service.warehouse.query(OWNER, "SELECT subject FROM trials LIMIT 5", limits=Limits(max_rows=5))
    assert len(exact.rows) == 5 and not exact.truncated
    everything = service.run(OWNER, "SELECT * FROM trials")
    assert len(everything.rows) == 60 and not everything.truncated


def test_a_query_over_a_removed_table_fails(service):
    service.remove(OWNER, "trials")
    with pytest.raises(QueryFailed, match="trials does not exist"):
        service.run(OWNER, "SELECT count(*) FROM trials")
    service.restore(OWNER, service.store.rows("SELECT id FROM data_tables")[0]["id"])
    assert service.run(OWNER, "SELECT count(*) FROM trials").rows == [[60]]


def test_unknown_columns_fail_with_duckdbs_message(service):
    with pytest.raises(QueryFailed, match="dosage"):
        service.run(OWNER, "SELECT dosage FROM trials")


# -- results --------------------------------------------------------------------------------------------


def test_result_values_are_plain_json(service):
    result = service.run(OWNER, "SELECT DATE '2024-02-29' AS d, 1.5::DECIMAL(4,2) AS x, 'nan'::DOUBLE AS n,"
                                " [1, 2] AS l, {'a': 1} AS s, NULL AS z, true AS b")
    assert result.rows == [["2024-02-29", 1.5, None, [1, 2], {"a": 1}, None, True]]
    assert result.names == ["d", "x", "n", "l", "s", "z", "b"]


def test_result_hashes_are_stable_for_the_same_result(service, tmp_path):
    sql = "SELECT condition, avg(response) AS mean FROM trials GROUP BY condition ORDER BY condition"
    first, second = service.run(OWNER, sql), service.run(OWNER, sql)
    assert first.sha256 == second.sha256 == result_sha256(first.columns, first.rows)
    assert len(first.sha256) == 64
    # the same file loaded by another owner, in another DuckDB file, gives the same hash
    (tmp_path / "again").mkdir()
    service.add("bob", trials.write_trials_csv(tmp_path / "again" / "trials.csv"))
    assert service.run("bob", sql).sha256 == first.sha256
    # the same rows in another order hash the same (a GROUP BY without ORDER BY comes back in any order);
    # another result (other values, another column name) gives another hash
    assert service.run(OWNER, sql.replace("ORDER BY condition", "ORDER BY condition DESC")).sha256 == first.sha256
    assert service.run(OWNER, sql.replace("AS mean", "AS average")).sha256 != first.sha256
    assert service.run(OWNER, sql.replace("avg(", "max(")).sha256 != first.sha256

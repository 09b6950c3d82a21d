"""Asking a table: the model's SQL checked with EXPLAIN, errors sent back for a retry, the narrative checked.

The tiny random model cannot write SQL, so its decoding runs for real and ``Replies`` swaps in the text a
model would have written; everything else (DuckDB, the sandbox, SQLite, the retry loop) is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcore.core.errors import ParameterError
from chatcore.services.data import DataService, QueryFailed, Warehouse
from chatcore.services.data.ask import extract_sql, mentioned_columns
from chatcore.testing.data import mean_response, write_trials_csv
from chatcore.testing.engines import Replies
from storage import Store
from storage.errors import NotFound

GOOD = ("```sql\nSELECT condition, avg(response) AS mean_response FROM trials GROUP BY condition "
        "ORDER BY mean_response DESC\n```")


@pytest.fixture
def data(tmp_path: Path, hf_engine):
    """A data service whose model is the tiny one, with alice's trials table."""
    engines: dict[str, Replies] = {}

    def backend_for(model):
        return engines["current"]

    service = DataService(Store(tmp_path / "c.db"), Warehouse(tmp_path / "data"), backend_for=backend_for)
    service.add("alice", write_trials_csv(tmp_path / "trials.csv"))
    service.script = lambda answers: engines.__setitem__("current", Replies(hf_engine, answers)) or engines["current"]
    yield service
    service.close()


def test_extract_sql_takes_the_fenced_query_or_the_first_select():
    assert extract_sql("Here:\n```sql\nSELECT 1;\n```\nDone.") == "SELECT 1"
    assert extract_sql("select a from t; drop table t") == "select a from t"
    assert extract_sql("WITH x AS (SELECT 1) SELECT * FROM x") == "WITH x AS (SELECT 1) SELECT * FROM x"
    assert extract_sql("I cannot answer that.") is None


def test_mentioned_columns_link_the_question_to_the_schema(data):
    profile = data.profile("alice", "trials")
    assert mentioned_columns("What is the mean response for each condition?", profile) == ["condition", "response"]
    assert mentioned_columns("Plot accuracy by dose", profile) == ["dose", "accuracy"]


def test_a_failed_query_goes_back_to_the_model_with_duckdb_s_error(data):
    engine = data.script(["```sql\nSELECT nope FROM trials\n```", GOOD,
                          "drug_b has the highest mean response, 77.5, and control the lowest, 50; 99 in all."])
    answer = data.ask("alice", "Which condition had the highest mean response?", tables=["trials"])
    assert answer.sql.startswith("SELECT condition, avg(response)")
    assert answer.rows[0] == ["drug_b", mean_response("drug_b")]
    assert [a["error"] is None for a in answer.record["attempts"]] == [False, True]
    assert "nope" in answer.record["attempts"][0]["error"]
    retry_prompt = engine.prompts[1][1]
    assert "That query failed" in retry_prompt and '"nope"' in retry_prompt
    assert answer.unverified == ["99"]  # 77.5 and 50 are in the result; 99 is not
    assert answer.chart == {"kind": "bar", "x": "condition", "y": ["mean_response"],
                            "title": "Which condition had the highest mean response?"}
    assert answer.tables[0]["name"] == "trials" and len(answer.tables[0]["sha256"]) == 64
    saved = data.answer("alice", answer.id)
    assert saved.result_sha256 == answer.result_sha256 and saved.record["attempts"] == answer.record["attempts"]


def test_the_model_sees_the_schema_and_profile_never_the_rows(data):
    engine = data.script([GOOD, "Done."])
    data.ask("alice", "Which condition had the highest mean response?", tables=["trials"])
    system = engine.prompts[0][0]
    assert "TABLE trials (60 rows)" in system and "response DOUBLE" in system
    assert "drug_a" in system  # a text column's top values are part of the profile
    assert "51.0" not in system and "\n1," not in system  # no row of the data


def test_a_query_the_sandbox_refuses_is_retried_then_refused_clearly(data, tmp_path: Path):
    target = tmp_path / "stolen.csv"
    data.script([f"```sql\nCOPY trials TO '{target}'\n```"])
    with pytest.raises(QueryFailed, match="COPY is refused"):
        data.ask("alice", "Export everything", tables=["trials"], retries=1)
    assert not target.exists()


def test_bad_input_is_refused_before_the_model_runs(data):
    engine = data.script([GOOD])
    with pytest.raises(ParameterError) as empty_question:
        data.ask("alice", "  ", tables=["trials"])
    with pytest.raises(ParameterError) as no_tables:
        data.ask("alice", "Which condition?", tables=[])
    assert (empty_question.value.param, no_tables.value.param) == ("question", "tables")
    assert engine.prompts == []


def test_another_owner_s_table_answers_like_a_missing_one(data):
    data.script([GOOD])
    with pytest.raises(NotFound) as theirs:
        data.ask("bob", "Which condition?", tables=["trials"])
    with pytest.raises(NotFound) as missing:
        data.ask("bob", "Which condition?", tables=["nothing"])
    assert str(theirs.value).replace("trials", "X") == str(missing.value).replace("nothing", "X")

"""The Library tab's Data area through the page's handlers, over a real Workspace: real SQLite, real DuckDB files,
the data service the page and the API share, and the trials experiment with its exactly known means."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pytest

from chatcore.testing.data import mean_response, write_trials_csv, write_trials_parquet, write_trials_xlsx
from chatcore.testing.workspaces import make_workspace, refusal
from chatcore.web import app
from chatcore.web.data import ANSWER_OUTPUTS, CARD_OUTPUTS, NO_TABLES, TABLE_OUTPUTS
from chatcore.web.datacharts import chart_html, nice_ticks
from chatcore.web.dataviews import narrative_html, number, profile_html

ADA, BOB = gr.Request(username="ada"), gr.Request(username="bob")
TABLES, CARD, ANSWER = TABLE_OUTPUTS, CARD_OUTPUTS, ANSWER_OUTPUTS


@pytest.fixture
def chat_app(tmp_path, hf_engine, tiny_model_dir) -> app.ChatApp:
    return app.ChatApp(make_workspace(tmp_path, hf_engine, model=str(tiny_model_dir)))


@pytest.fixture
def trials(tmp_path) -> Path:
    return write_trials_csv(tmp_path / "trials.csv")


def add(chat_app, path, *, name="", collection="default", sheet=None, skip=False, request=None) -> list:
    """Every update the Add handler yields, in order (the last one is the finished page)."""
    updates = list(chat_app.add_table(str(path), name, collection, sheet, skip, request))
    wired = next(f for f in chat_app.demo.fns.values() if f.name == "add_table")
    assert all(len(update) == len(wired.outputs) for update in updates)  # each fills every output it is wired to
    return updates


def finished(updates: list) -> dict:
    """The last update of an add, by part."""
    last = updates[-1]
    return {"bar": last[0], "outcome": last[1], "add": last[2], "tables": last[3:3 + TABLES],
            "card": last[3 + TABLES:3 + TABLES + CARD], "upload": last[-1]}


def answer_parts(outputs: tuple) -> dict:
    keys = ("id", "box", "empty", "line", "sql", "narrative", "chart", "result", "statistics", "csv", "record", "past")
    assert len(outputs) == ANSWER == 12
    return dict(zip(keys, outputs))


def test_an_empty_data_area_says_what_to_add_and_offers_nothing_to_click(chat_app):
    outputs = chat_app.show_data(None, [])
    frame, empty, ids, scope, collections = outputs[:TABLES]
    assert frame.visible is False and empty.visible is True and empty.value == NO_TABLES
    assert "CSV, TSV, Excel or Parquet" in NO_TABLES and ids == [] and scope.choices == []
    table_id, card, profile, remove = outputs[TABLES:TABLES + 4]
    assert table_id is None and card.visible is False and remove.interactive is False
    assert chat_app.data_file_chosen(None)[2].interactive is False
    assert chat_app.sql_typed("  ").interactive is False and chat_app.sql_typed("SELECT 1").interactive is True
    assert chat_app.question_typed("why?", []).interactive is False
    assert chat_app.question_typed("why?", ["trials"]).interactive is True


def test_adding_the_trials_csv_shows_a_bar_then_the_list_and_its_profile_card(chat_app, trials):
    name_hint, sheet, add_button, message = chat_app.data_file_chosen(str(trials))
    assert name_hint.placeholder == "trials" and sheet.visible is False and add_button.interactive is True
    updates = add(chat_app, trials, collection="experiments")
    assert 'role="progressbar"' in updates[0][0].value and "trials.csv: reading" in updates[0][0].value
    done = finished(updates)
    assert 'aria-valuenow="100"' in done["bar"].value and "ready: 60 rows" in done["bar"].value
    assert done["outcome"] == "Added **trials**: 60 rows × 5 columns."
    frame, empty, ids, scope, collections = done["tables"]
    assert frame.value["data"] == [["trials", 60, 5, "experiments", "trials.csv"]] and empty.visible is False
    assert scope.value == ["trials"] and "experiments" in [c[0] for c in collections.choices]
    table_id, card, profile, remove, kind, *fields, analyze, sql, past = done["card"]
    assert table_id == ids[0] and card.visible is True and remove.interactive is True
    assert sql == "SELECT *\nFROM trials\nLIMIT 100" and analyze.interactive is False
    # The card: each column's type, gaps and distinct values, numbers' figures and histograms, text's top values.
    assert "trials · 60 rows × 5 columns · trials.csv (CSV, utf-8) · collection experiments" in profile
    for column in ("subject", "condition", "dose", "response", "accuracy"):
        assert f'<span class="column-name">{column}</span>' in profile
    assert profile.count('<svg class="spark"') == 4 and profile.count('class="top-values"') == 1
    assert re.search(r'<span class="label">mean</span><span class="value">63\.75</span>', profile)  # all conditions
    assert "control</span>" in profile and "0 missing · 3 distinct" in profile
    assert "Load report" not in profile  # a clean file: nothing to warn about


@pytest.mark.parametrize("writer", [write_trials_parquet, lambda p: write_trials_csv(p, delimiter="\t")],
                         ids=["parquet", "tsv"])
def test_tsv_and_parquet_come_in_alike(chat_app, tmp_path, writer):
    path = writer(tmp_path / ("trials.parquet" if writer is write_trials_parquet else "trials.tsv"))
    assert finished(add(chat_app, path))["outcome"] == "Added **trials**: 60 rows × 5 columns."


def test_a_workbook_of_several_sheets_asks_which_and_adds_the_chosen_one(chat_app, tmp_path):
    book = write_trials_xlsx(tmp_path / "book.xlsx", extra_sheets=("notes",))
    name_hint, sheet, add_button, message = chat_app.data_file_chosen(str(book))
    assert sheet.visible is True and sheet.choices == [("trials", "trials"), ("notes", "notes")]
    assert add_button.interactive is False and "2 sheets" in sheet.info
    assert chat_app.sheet_chosen("trials").interactive is True
    done = finished(add(chat_app, book, name="experiment", sheet="trials"))
    assert done["outcome"] == "Added **experiment**: 60 rows × 5 columns."
    assert "sheet trials" in done["card"][2]
    # Without a sheet the service refuses, in words, and nothing is half-added.
    refused = finished(add(chat_app, book, name="again"))
    assert "has 2 sheets \\(trials, notes\\); choose one" in refused["outcome"]  # escaped Markdown
    assert [t["name"] for t in chat_app.workspace.data.tables("local")] == ["experiment"]


def test_bad_files_are_refused_with_their_reason_and_never_a_traceback(chat_app, tmp_path, trials):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    done = finished(add(chat_app, empty))
    assert done["outcome"].startswith("**Not added:** empty\\.csv is empty")
    assert done["bar"].visible is False and done["add"].interactive is True
    malformed = tmp_path / "ragged.csv"
    malformed.write_text("a,b\n1,2\n3,4,5\n6,7\n8\n9,10\n", encoding="utf-8")
    assert "malformed row" in finished(add(chat_app, malformed))["outcome"]
    assert chat_app.workspace.data.tables("local") == []
    skipped = finished(add(chat_app, malformed, skip=True))
    assert skipped["outcome"] == "Added **ragged**: 3 rows × 2 columns, 2 malformed rows skipped."
    assert "Load report" in skipped["card"][2] and "2 malformed rows skipped (lines 3, 5)" in skipped["card"][2]
    assert "Not added:** the table name" in finished(add(chat_app, trials, name="Bad Name"))["outcome"]
    finished(add(chat_app, trials))
    assert "a table named 'trials' exists" in finished(add(chat_app, trials))["outcome"]
    with pytest.raises(gr.Error, match="Choose a CSV"):
        list(chat_app.add_table(None, "", "default", None, False))


def test_a_typed_query_answers_with_its_sql_table_chart_csv_and_record(chat_app, trials):
    table_id = finished(add(chat_app, trials))["card"][0]
    sql = "SELECT condition, avg(response) AS mean_response FROM trials GROUP BY condition ORDER BY condition"
    shown = answer_parts(chat_app.run_sql(sql, table_id))
    assert shown["box"].visible is True and shown["empty"].visible is False and shown["sql"] == sql
    assert shown["result"].value["headers"] == ["condition", "mean_response"]
    assert shown["result"].value["data"] == [[c, mean_response(c)] for c in ("control", "drug_a", "drug_b")]
    chart = shown["chart"].value
    assert shown["chart"].visible and chart.startswith('<svg class="data-chart"') and chart.count('class="bar"') == 3
    assert ">77.5</text>" in chart  # drug_b's mean, at the end of its bar
    value = shown["csv"].value  # the file the button hands out
    csv = Path(value["path"] if isinstance(value, dict) else value).read_text(encoding="utf-8")
    assert csv.splitlines() == ["condition,mean_response", "control,50.0", "drug_a,63.75", "drug_b,77.5"]
    assert shown["csv"].interactive is True
    table_hash = chat_app.workspace.data.table("local", table_id)["sha256"]
    assert table_hash in shown["record"] and "result" in shown["record"]
    assert "3 rows" in shown["line"] and "from trials" in shown["line"]
    assert shown["narrative"].visible is False and shown["statistics"].visible is False
    # The edited query runs again as a new answer; both are listed for the table and reopen as saved.
    edited = answer_parts(chat_app.run_sql(sql.replace("avg", "max"), table_id))
    assert edited["result"].value["data"][2] == ["drug_b", 62 + 40.0]
    assert [value for _, value in edited["past"].choices] == [edited["id"], shown["id"]]
    reopened = answer_parts(chat_app.open_answer(shown["id"]))
    assert reopened["sql"] == sql and reopened["result"].value["data"][1] == ["drug_a", 63.75]


def test_the_sandbox_refusals_and_bad_sql_show_as_messages(chat_app, trials):
    finished(add(chat_app, trials))
    assert "ATTACH" in refusal(lambda: chat_app.run_sql("ATTACH 'x.db' AS x", None)).upper()
    assert refusal(lambda: chat_app.run_sql("SELECT * FROM read_csv('/etc/passwd')", None))
    assert "nosuch" in refusal(lambda: chat_app.run_sql("SELECT * FROM nosuch", None))
    assert refusal(lambda: chat_app.run_sql("", None)) == "Type a SQL query first."


def test_remove_hides_the_table_and_undo_brings_it_back(chat_app, trials):
    table_id = finished(add(chat_app, trials))["card"][0]
    outputs = chat_app.remove_table(table_id, ["trials"])
    frame, empty, ids, scope, collections = outputs[:TABLES]
    assert empty.visible is True and ids == [] and scope.value == []
    assert outputs[TABLES] is None and outputs[TABLES + 1].visible is False  # the card put away
    removed, undo = outputs[-2:]
    assert removed == table_id and undo.visible is True
    assert "trials" in refusal(lambda: chat_app.run_sql("SELECT * FROM trials", None))
    outputs = chat_app.undo_remove_table(removed, [])
    assert outputs[2] == [table_id] and outputs[3].value == ["trials"] and outputs[TABLES] == table_id
    assert outputs[-2] is None and outputs[-1].visible is False
    assert answer_parts(chat_app.run_sql("SELECT count(*) AS n FROM trials", None))["result"].value["data"] == [[60]]


def test_the_analysis_form_asks_for_each_kinds_columns(chat_app, trials):
    table_id = finished(add(chat_app, trials))["card"][0]
    card = chat_app.select_table([table_id], gr.SelectData(None, {"index": [0, 0], "value": "trials"}))
    by, measure, x, y, groups = card[5:10]
    assert by.choices == [("condition", "condition")]
    assert [c[0] for c in measure.choices] == ["subject", "dose", "response", "accuracy"]
    assert card[-1].value == ["trials"]  # the Ask scope follows the open table
    form = chat_app.analysis_form(table_id, "compare", "condition", "response", None, None, None)
    visible = [u.visible for u in form[:5]]
    assert visible == [True, True, False, False, True]
    assert form[4].value == ["control", "drug_a"] and form[5].interactive is True
    form = chat_app.analysis_form(table_id, "regression", None, None, "dose", None, None)
    assert [u.visible for u in form[:5]] == [False, False, True, True, False] and form[5].interactive is False
    assert chat_app.analysis_form(table_id, "correlation", None, None, None, None, None)[5].interactive is True
    assert refusal(lambda: chat_app.run_analysis(table_id, "regression", None, None, "dose", None, None)) == \
        "Choose the outcome (y)."
    shown = answer_parts(chat_app.run_analysis(table_id, "groupby", "condition", "response", None, None, None))
    assert shown["box"].visible is True and shown["result"].visible is not False
    sql = shown["sql"] if isinstance(shown["sql"], str) else shown["sql"].value
    assert "mean_response" in sql and "GROUP BY" in sql


def test_ask_checks_its_tables_then_calls_the_service(chat_app, trials):
    finished(add(chat_app, trials))
    assert refusal(lambda: chat_app.ask_data(" ", ["trials"])) == "Type a question about your tables first."
    assert refusal(lambda: chat_app.ask_data("Which is highest?", [])) == "Choose the tables to ask about."
    assert refusal(lambda: chat_app.ask_data("Which is highest?", ["nosuch"])) == "no table 'nosuch'"
    steps = chat_app.ask_data("Which condition had the highest mean response?", ["trials"])
    assert next(steps)[0].startswith("Asking:")


def test_another_users_tables_and_answers_answer_like_missing_ones(chat_app, trials):
    done = finished(add(chat_app, trials, request=ADA))
    table_id = done["card"][0]
    answer_id = answer_parts(chat_app.run_sql("SELECT count(*) AS n FROM trials", table_id, ADA))["id"]
    missing = 10_000
    # Bob sees none of Ada's tables.
    seen = chat_app.show_data(table_id, ["trials"], BOB)
    assert seen[1].visible is True and seen[2] == [] and seen[3].value == [] and seen[TABLES] is None
    for call, args in [
        (chat_app.remove_table, ([],)),
        (chat_app.undo_remove_table, ([],)),
        (chat_app.open_answer, ()),
    ]:
        mine = answer_id if call == chat_app.open_answer else table_id
        assert (refusal(lambda: call(mine, *args, BOB))
                == refusal(lambda: call(missing, *args, BOB)).replace(str(missing), str(mine)))
    assert (refusal(lambda: chat_app.analysis_form(table_id, "compare", "condition", None, None, None, None, BOB))
            == refusal(lambda: chat_app.analysis_form(missing, "compare", "condition", None, None, None, None, BOB))
            .replace(str(missing), str(table_id)))
    assert (refusal(lambda: chat_app.run_analysis(table_id, "correlation", None, None, None, None, None, BOB))
            == refusal(lambda: chat_app.run_analysis(missing, "correlation", None, None, None, None, None, BOB))
            .replace(str(missing), str(table_id)))
    assert (refusal(lambda: chat_app.ask_data("How many?", ["trials"], None, None, BOB))
            == refusal(lambda: chat_app.ask_data("How many?", ["nosuch"], None, None, BOB)).replace("nosuch", "trials"))
    assert (refusal(lambda: chat_app.run_sql("SELECT * FROM trials", None, BOB))
            == refusal(lambda: chat_app.run_sql("SELECT * FROM nosuch", None, BOB)).replace("nosuch", "trials"))
    event = gr.SelectData(None, {"index": [0, 0], "value": "trials"})
    assert [getattr(o, "visible", o) for o in chat_app.select_table([table_id], event, BOB)[:2]] == [None, False]
    # Ada's table and answer are untouched.
    assert chat_app.workspace.data.table("ada", table_id)["rows"] == 60
    assert chat_app.workspace.data.answer("ada", answer_id).rows == [[60]]


def test_views_escape_cells_and_flag_unverified_numbers():
    table = {"name": "t", "rows": 1, "columns": [{"name": "x"}], "filename": "<b>.csv", "kind": "csv",
             "collection": "default", "report": {"renamed": {"<img src=x>": "img_src_x"}}}
    profile = {"rows": 1, "columns": [{"name": "<script>", "type": "VARCHAR", "kind": "text", "missing": 0,
                                       "distinct": 1, "top": [["<i>v</i>", 1]], "warnings": []}]}
    card = profile_html(table, profile)
    assert "<script>" not in card and "<i>" not in card and "<b>" not in card and "<img" not in card
    shown = narrative_html("drug_b is highest at 77.5, about 80 and 0.25 more; 5 groups", ["80", "5"])
    assert '<mark class="unverified" title="not in the result: unverified">80</mark>' in shown
    assert shown.count("<mark") == 2 and "0.2<mark" not in shown  # 5 inside 0.25 is not the number 5
    assert "2 numbers in this text are not in the result: 80, 5" in shown
    assert "every number in this text is in the result" in narrative_html("77.5", [])
    assert [number(v) for v in (1234567, 63.75, 17.46424, 0.012345, 50.0, None)] == \
        ["1,234,567", "63.75", "17.46", "0.01235", "50", "—"]


def test_charts_draw_lines_scatters_with_their_fit_and_heatmaps():
    assert nice_ticks(0, 77.5) == [0, 20, 40, 60, 80]
    columns = [{"name": "dose", "type": "BIGINT"}, {"name": "r", "type": "DOUBLE"}]
    line = chart_html({"kind": "line", "x": "dose", "y": ["r"], "title": "r by dose"}, columns,
                      [[0, 1.0], [10, 2.0], [20, None], [40, 4.0]])
    assert line.count("<circle") == 3 and "<path" in line and "r by dose" in line
    scatter = chart_html({"kind": "scatter", "x": "dose", "y": ["r"], "title": "fit", "fit": {"slope": 0.5,
                                                                                           "intercept": 55}},
                         columns, [[0, 55.0], [40, 75.0]])
    assert 'class="fit"' in scatter and "r = 55 + 0.5 × dose" in scatter
    heat = chart_html({"kind": "heatmap", "x": "column", "y": ["a", "b"], "title": "Correlation",
                       "data": {"columns": ["column", "a", "b"], "rows": [["a", 1.0, -0.8], ["b", -0.8, 1.0]]}},
                      [], [])
    assert heat.count('class="heat strong"') == 4 and "rgba(220,38,38" in heat and "rgba(37,99,235" in heat
    assert chart_html(None, columns, []) == "" and chart_html({"kind": "bar", "x": "nope", "y": ["r"]}, columns,
                                                              [[1, 2]]) == ""


def test_each_data_event_is_wired_to_as_many_outputs_as_its_handler_fills(chat_app):
    expected = {"show_data": TABLES + CARD, "select_table": CARD + 1, "remove_table": TABLES + CARD + 2,
                "undo_remove_table": TABLES + CARD + 2, "run_sql": ANSWER, "open_answer": ANSWER,
                "run_analysis": ANSWER, "ask_data": ANSWER + 1, "analysis_form": 6, "data_file_chosen": 4}
    for name, count in expected.items():
        wired = [f for f in chat_app.demo.fns.values() if f.name == name]
        assert wired and all(len(f.outputs) == count for f in wired), name

"""The Evaluate tab and the Chat tab's arena, through the page's handlers over a real Workspace and SQLite store,
with two models that decode the tiny model for real (the transformers loop) and answer fixed texts, so that
they agree and disagree on known items."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import gradio as gr
import pytest

from chatcore.services.evaluation.arena import Arena
from chatcore.services.evaluation.service import Evaluations
from chatcore.testing.engines import Scripted
from chatcore.testing.workspaces import make_workspace, refusal
from chatcore.web import app
from chatcore.web.arena import NO_VOTES, WAITING
from chatcore.web.evaluate import NO_RUN, NO_TEST_SET, RUNNING
from chatcore.web.views import interval_chart, item_table
from chatcore.web.workspace import StopSignal
from storage import evaluation as db

PARAMS = dict(temperature=0.0, top_p=0.95, top_k=50, max_new_tokens=8, repetition_penalty=1.1, seed="1")
ADA, BOB = gr.Request(username="ada"), gr.Request(username="bob")
MISSING = 987654
CAPITALS = "\n".join(json.dumps(row) for row in [
    {"id": "fr", "question": "What is the capital of France?", "answer": "Paris", "tags": ["europe"]},
    {"id": "uk", "question": "What is the capital of England?", "answer": "London", "tags": ["europe"]},
    {"id": "tx", "question": "What is the capital of Texas?", "answers": ["Austin"], "tags": ["america"]},
]) + "\n"


class Gate:
    """``backend_for`` that waits at a gate: a test acts while a run is certainly running."""

    def __init__(self, backends: dict) -> None:
        self.backends, self.open = backends, threading.Event()

    def __call__(self, spec: str):
        self.open.wait()
        return self.backends[spec]


@pytest.fixture
def chat_app(tmp_path, hf_engine, tiny_model_dir) -> app.ChatApp:
    workspace = make_workspace(tmp_path, hf_engine, model=str(tiny_model_dir))
    backends = {"paris": Scripted(hf_engine, "Paris"), "london": Scripted(hf_engine, "London")}
    workspace.evaluations = Evaluations(workspace.store, backends.__getitem__, library=workspace.library)
    workspace.arena = Arena(workspace.store, backends.__getitem__)
    return app.ChatApp(workspace)


@pytest.fixture
def capitals(tmp_path) -> Path:
    path = tmp_path / "capitals.jsonl"
    path.write_text(CAPITALS)
    return path


def upload(chat_app, path: Path, request=None) -> int:
    """Upload a test set through the handler; returns its id."""
    cleared, message, picker, *_ = chat_app.upload_test_set(str(path), request)
    assert message.startswith("Added") and cleared.value is None
    return picker.value


def run_to_end(chat_app, set_id: int, models=("paris", "london"), scorers=("exact", "f1"), request=None) -> int:
    """Start a run through the handler, wait for it, and return its id."""
    run = chat_app.start_run(set_id, list(models), list(scorers), "", request)
    run_id = run[4].value
    chat_app.workspace.evaluations.wait(run_id)
    return run_id


def results(outputs) -> dict:
    """The named parts of ``poll_run``/``open_run``'s outputs."""
    names = ["bar", "cancel", "resume", "timer", "runs", "empty", "table", "chart", "mcnemar", "tags", "scorer",
             "rescore", "line", "items", "csv", "md"]
    return dict(zip(names, outputs[-len(names):]))


def path_of(button: gr.DownloadButton) -> Path:
    """The file a download button hands out."""
    value = button.value
    return Path(value["path"] if isinstance(value, dict) else value)




# -- test sets ----------------------------------------------------------------------------------------


def test_a_fresh_tab_shows_its_empty_states_and_run_is_off(chat_app):
    outputs = chat_app.show_evaluate(None, None, None, False)
    picker, line, empty, preview, remove, scorers, judge, models = outputs[:8]
    assert picker.choices == [] and empty.visible and empty.value == NO_TEST_SET and preview.visible is False
    assert remove.interactive is False and judge.visible is False
    assert ("default (the server's model)", "default") in models.choices
    run = results(outputs)
    assert run["bar"].visible is False and run["cancel"].visible is False and run["resume"].visible is False
    assert run["empty"].value == NO_RUN and run["table"].visible is False and run["items"].visible is False
    assert run["csv"].interactive is False and run["md"].interactive is False and run["rescore"].interactive is False
    assert chat_app.run_ready(None, ["default"], ["exact"]).interactive is False
    assert chat_app.run_ready(1, [], ["exact"]).interactive is False
    assert chat_app.run_ready(1, ["default"], []).interactive is False
    assert chat_app.run_ready(1, ["default"], ["exact"]).interactive is True


def test_the_example_set_is_previewed_with_its_default_scorers(chat_app):
    message, picker, line, empty, preview, remove, scorers, judge = chat_app.add_example_set()
    assert "65 science questions" in message and picker.value is not None
    assert "65 items" in line and "multiple choice" in line and empty.visible is False
    rows = preview.value["data"]
    assert len(rows) == 10 and rows[0][0] == "phys-01" and rows[0][2] == "B. newton" and "A. joule" in rows[0][3]
    assert {"choice", "loglik", "loglik_norm", "exact", "f1"} <= set(scorers.value) and remove.interactive
    assert chat_app.add_example_set()[1].value == picker.value  # stored once
    assert chat_app.scorers_chosen(["exact", "judge"]).visible is True
    assert chat_app.scorers_chosen(["exact"]).visible is False


def test_a_bad_file_is_refused_with_its_line_and_field_and_nothing_is_stored(chat_app, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "Q?", "answer": "x"}\n{"id": "b", "question": "Q2?", "choices": 3}\n')
    cleared, message, *rest = chat_app.upload_test_set(str(bad))
    assert message.startswith("**Refused:** bad\\.jsonl: line 2: ") and "choices" in message
    assert chat_app.workspace.evaluations.test_sets("local") == []


def test_remove_a_test_set_and_undo(chat_app, capitals):
    set_id = upload(chat_app, capitals)
    message, picker, *_, removed, undo = chat_app.remove_test_set(set_id)
    assert "Removed capitals" in message and picker.choices == [] and removed == set_id and undo.visible
    message, picker, *_, removed, undo = chat_app.undo_remove_test_set(set_id)
    assert message == "Restored." and picker.value == set_id and removed is None and undo.visible is False


# -- runs and results ---------------------------------------------------------------------------------


def test_a_run_on_two_models_ends_with_the_table_chart_tags_mcnemar_and_items(chat_app, capitals):
    set_id = upload(chat_app, capitals)
    started = results(chat_app.start_run(set_id, ["paris", "london"], ["exact", "f1"], ""))
    assert 'role="progressbar"' in started["bar"].value and started["runs"].value is not None
    run_id = started["runs"].value
    assert started["empty"].value in (RUNNING, "") or started["table"].visible
    chat_app.workspace.evaluations.wait(run_id)
    shown = results(chat_app.poll_run(run_id, None, False))
    assert 'aria-valuenow="100"' in shown["bar"].value and "finished · 6/6" in shown["bar"].value
    assert shown["cancel"].visible is False and shown["resume"].visible is False and shown["timer"].active is False
    assert shown["empty"].visible is False and shown["rescore"].interactive
    table = {row[0]: row for row in shown["table"].value["data"]}
    assert set(table) == {"paris", "london"}
    assert table["paris"][1] == "33.3%" and table["paris"][3] == 3 and table["paris"][5] == 0
    assert " – " in table["paris"][2]
    chart = shown["chart"].value
    assert chart.startswith("<svg") and chart.count('class="whisker"') == 2 and ">paris<" in chart
    assert "McNemar, paris vs london" in shown["mcnemar"].value and "on 3 items" in shown["mcnemar"].value
    assert shown["tags"].value["headers"] == ["Tag", "paris", "london"]
    assert [row[0] for row in shown["tags"].value["data"]] == ["america", "europe"]
    assert shown["scorer"].value == "exact" and shown["scorer"].choices == [("exact", "exact"), ("f1", "f1")]
    items = shown["items"].value
    assert items["headers"] == ["Item", "Question", "Accepted", "paris: output", "paris: verdict",
                                "london: output", "london: verdict"]
    rows = {row[0]: row for row in items["data"]}
    assert rows["fr"][2:] == ["Paris", "Paris", "right", "London", "wrong"]
    assert rows["tx"][4] == rows["tx"][6] == "wrong"
    assert shown["line"].startswith("2 items where the models disagree")

    only = results(("",) * 5 + chat_app.show_results(run_id, "exact", True))
    assert [row[0] for row in only["items"].value["data"]] == ["fr", "uk"]
    with open(path_of(only["csv"]), newline="", encoding="utf-8") as f:
        exported = list(csv.reader(f))
    assert exported[0] == items["headers"] and [row[0] for row in exported[1:]] == ["fr", "uk"]
    assert exported[1][4] == "right" and exported[2][6] == "right"
    report = path_of(only["md"]).read_text()
    assert report.startswith("# Evaluation report: capitals") and "| paris |" in report and "McNemar" in report
    # The tab reopened finds the latest run and shows it.
    reopened = results(chat_app.show_evaluate(None, None, None, False))
    assert reopened["runs"].value == run_id and reopened["table"].visible


def test_another_scorer_and_rescore_show_the_results_under_it(chat_app, capitals):
    run_id = run_to_end(chat_app, upload(chat_app, capitals))
    f1 = results(("",) * 5 + chat_app.show_results(run_id, "f1", False))
    assert f1["scorer"].value == "f1" and "Accuracy (f1)" in f1["chart"].value
    rescored = results(("",) * 5 + chat_app.rescore_run(run_id, "contains", "", False))
    assert rescored["scorer"].value == "contains" and ("contains", "contains") in rescored["scorer"].choices
    assert {row[0]: row[1] for row in rescored["table"].value["data"]} == {"paris": "33.3%", "london": "33.3%"}
    assert "Rescore with" not in refusal(lambda: chat_app.rescore_run(run_id, None, "", False))
    assert "scorer" in refusal(lambda: chat_app.rescore_run(run_id, "nonsense", "", False))


def test_cancel_keeps_the_run_resumable_and_resume_finishes_it(chat_app, capitals):
    evaluations = chat_app.workspace.evaluations
    gate = Gate({"paris": evaluations.backend_for("paris"), "london": evaluations.backend_for("london")})
    evaluations.backend_for = gate
    set_id = upload(chat_app, capitals)
    run_id = chat_app.start_run(set_id, ["paris", "london"], ["exact"], "")[4].value
    bar, cancel, resume, timer, runs = chat_app.poll_run(run_id, None, False)[:5]
    assert cancel.visible and cancel.interactive and timer.active and resume.visible is False
    assert chat_app.poll_run(run_id, None, False)[5] is not None  # results skipped while running
    bar, cancel, resume, timer, runs = chat_app.cancel_run(run_id)
    gate.open.set()
    evaluations.wait(run_id)
    shown = results(chat_app.poll_run(run_id, None, False))
    assert "cancelled" in shown["bar"].value and shown["resume"].visible and shown["resume"].interactive
    assert shown["cancel"].visible is False and shown["timer"].active is False
    resumed = results(chat_app.resume_run(run_id))
    evaluations.wait(run_id)
    done = results(chat_app.poll_run(run_id, None, False))
    assert "finished · 6/6" in done["bar"].value and done["resume"].visible is False and done["table"].visible
    assert resumed["bar"].visible


def test_a_run_is_refused_with_a_clear_message(chat_app, capitals):
    set_id = upload(chat_app, capitals)
    assert "at least one model" in refusal(lambda: chat_app.start_run(set_id, [], ["exact"], ""))
    assert "named twice" in refusal(lambda: chat_app.start_run(set_id, ["paris", "paris"], ["exact"], ""))
    assert "judge model" in refusal(lambda: chat_app.start_run(set_id, ["paris"], ["judge"], ""))
    assert "Choose a test set" in refusal(lambda: chat_app.start_run(None, ["paris"], ["exact"], ""))
    assert chat_app.workspace.evaluations.runs("local") == []


def test_another_users_test_sets_runs_and_battles_answer_like_missing_ones(chat_app, capitals):
    bob_set = upload(chat_app, capitals, BOB)
    bob_run = run_to_end(chat_app, bob_set, request=BOB)
    bob_battle = chat_app.workspace.arena.start("bob", "Bob's question", ["paris", "london"])
    before = (chat_app.workspace.evaluations.get_run("bob", bob_run), db.get_battle(chat_app.workspace.store, "bob",
                                                                                      bob_battle))
    set_handlers = {
        "remove": lambda i: chat_app.remove_test_set(i, ADA),
        "undo": lambda i: chat_app.undo_remove_test_set(i, ADA),
        "run": lambda i: chat_app.start_run(i, ["paris"], ["exact"], "", ADA),
    }
    run_handlers = {
        "open": lambda i: chat_app.open_run(i, None, False, ADA),
        "poll": lambda i: chat_app.poll_run(i, None, False, ADA),
        "results": lambda i: chat_app.show_results(i, "exact", False, ADA),
        "cancel": lambda i: chat_app.cancel_run(i, ADA),
        "resume": lambda i: chat_app.resume_run(i, ADA),
        "rescore": lambda i: chat_app.rescore_run(i, "contains", "", ADA),
    }
    battle_handlers = {f"vote {name}": (lambda i, name=name: getattr(chat_app, name)(i, ADA))
                       for name in ("vote_a", "vote_b", "vote_tie", "vote_both_bad")}
    for foreign_id, handlers in ((bob_set, set_handlers), (bob_run, run_handlers), (bob_battle, battle_handlers)):
        for name, handler in handlers.items():
            foreign, missing = refusal(lambda: handler(foreign_id)), refusal(lambda: handler(MISSING))
            assert foreign == missing.replace(str(MISSING), str(foreign_id)), name
    # Choosing a set Ada does not have shows no set, Bob's as a missing one.
    shown = [chat_app.choose_test_set(i, ADA) for i in (bob_set, MISSING)]
    assert [(out[1].value, out[2], out[4].visible) for out in shown] == [(None, "", False)] * 2
    # Ada's tab lists none of Bob's; Bob's are as they were.
    outputs = chat_app.show_evaluate(None, None, None, False, ADA)
    assert outputs[0].choices == [] and results(outputs)["runs"].choices == []
    assert chat_app.show_leaderboard(ADA)[0] == NO_VOTES
    assert (chat_app.workspace.evaluations.get_run("bob", bob_run),
            db.get_battle(chat_app.workspace.store, "bob", bob_battle)) == before
    assert chat_app.workspace.evaluations.test_sets("ada") == []


# -- the arena ----------------------------------------------------------------------------------------


def battle(chat_app, text="Which city?", models=("paris", "london"), request=None) -> list[tuple]:
    """Send through the arena's two steps: accept (the battle starts), then its streamed answers."""
    signal = StopSignal()
    accepted = chat_app.arena_accept(text, list(models), signal, request)
    return [accepted, *chat_app.arena_answer(accepted[0], signal, *PARAMS.values(), request)]


def test_the_arena_streams_two_blind_panes_and_the_vote_reveals_the_names(chat_app):
    area, chat, models = chat_app.toggle_arena(True)
    assert area.visible and chat.visible is False and models.visible and ("paris", "paris") not in models.choices
    outputs = battle(chat_app)
    first, last = outputs[0], outputs[-1]
    battle_id, prompt, pane_a, pane_b, name_a, name_b, *rest = first
    votes, status, message, send, stop = rest[:4], rest[4], rest[5], rest[6], rest[7]
    assert prompt == "**You:** Which city?" and pane_a == pane_b == WAITING and message == ""
    assert all(v.interactive is False for v in votes) and name_a == name_b == ""
    assert send.visible is False and stop.visible is True
    for update in outputs[:-1]:  # no vote before both answers end, and never a name
        assert update[4] == update[5] == ""
        if "Both answers are in" not in update[10]:
            assert all(v.interactive is False for v in update[6:10])
    battle_id, prompt, pane_a, pane_b, name_a, name_b, *rest = last
    assert {pane_a, pane_b} == {"Paris", "London"} and name_a == name_b == ""
    assert all(v.interactive for v in rest[:4]) and "which is better" in rest[4] and len(last) == 11
    assert [b.visible for b in chat_app.arena_done()] == [True, False]
    assert chat_app.workspace.conversation_choices("local") == []  # not a chat conversation

    name_a, name_b, *votes, status = chat_app.vote_a(battle_id)
    expected = "paris" if pane_a == "Paris" else "london"
    assert name_a == f"Model A was **{expected}**" and expected not in name_b and "Model B was **" in name_b
    assert all(v.interactive is False for v in votes) and "A is better" in status
    assert "already has a vote" in refusal(lambda: chat_app.vote_b(battle_id))

    line, table, chart, download = chat_app.show_leaderboard()
    assert line.startswith("not enough votes yet (1 of 10)") and chart.visible is False
    rows = {row[0]: row for row in table.value["data"]}
    assert set(rows) == {"paris", "london"} and rows[expected][1:] == ["—", "—", 1, 1]
    records = [json.loads(line) for line in path_of(download).read_text().splitlines()]
    assert [r["kind"] for r in records] == ["arena"] and records[0]["vote"] == "a"
    assert {("paris", "paris"), ("london", "london")} <= set(chat_app.toggle_arena(True)[2].choices)


def test_a_vote_before_both_answers_end_is_refused_and_an_arena_needs_two_models(chat_app):
    battle_id = chat_app.workspace.arena.start("local", "Not answered yet", ["paris", "london"])
    assert "wait until both answers have finished" in refusal(lambda: chat_app.vote_tie(battle_id))
    assert "Send a message in the arena first" in refusal(lambda: chat_app.vote_a(None))
    assert "has been answered" in refusal(lambda: battle(chat_app)[:1] and chat_app.arena_answer(
        db.battles(chat_app.workspace.store, "local")[-1]["id"], StopSignal(), *PARAMS.values()))
    assert "two different models" in refusal(lambda: battle(chat_app, models=["paris"]))
    assert "empty" in refusal(lambda: battle(chat_app, text="   ")).lower()
    area, chat, models = chat_app.toggle_arena(False)
    assert area.visible is False and chat.visible is True and models.visible is False


def test_the_leaderboard_shows_scores_and_a_chart_with_enough_votes(chat_app):
    store = chat_app.workspace.store
    for n in range(12):
        battle_id = db.create_battle(store, "local", f"q{n}", "paris", "london")
        for side in ("a", "b"):
            db.save_battle_answer(store, "local", battle_id, side, "answer", {"finish_reason": "stop"})
        db.vote(store, "local", battle_id, "a" if n % 3 else "b")
    line, table, chart, download = chat_app.show_leaderboard()
    assert line == "12 votes" and chart.visible and chart.value.count('class="whisker"') == 2
    [first, second] = table.value["data"]
    assert first[0] == "paris" and int(first[1]) > int(second[1]) and " – " in first[2] and first[3:] == [12, 8]


# -- formatting ---------------------------------------------------------------------------------------


def test_the_chart_escapes_labels_and_leaves_out_undefined_whiskers():
    svg = interval_chart([("<b>x</b>", 0.5, 0.4, 0.6), ("empty", float("nan"), float("nan"), float("nan"))],
                         domain=(0.0, 1.0), title="t & t")
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and 'aria-label="t &amp; t"' in svg
    assert svg.count('class="whisker"') == 1 and svg.count("<rect") == 1


def test_the_item_table_counts_disagreements_only_between_right_and_wrong():
    def out(key, model, correct, error=None):
        return {"key": key, "item": {"messages": [{"role": "user", "content": key}], "answers": ["y"]},
                "model": model, "text": "t", "error": error,
                "scores": {} if correct is None else {"exact": {"correct": correct, "value": float(correct)}}}
    outputs = [out("a", "m1", True), out("a", "m2", False), out("b", "m1", True), out("b", "m2", True),
               out("c", "m1", None), out("c", "m2", False), out("d", "m1", False, error="boom")]
    headers, rows, differ = item_table(outputs, ["m1", "m2"], "exact")
    assert differ == 1 and len(rows) == 4
    assert [r[4] for r in rows] == ["right", "right", "not scored", "error"] and rows[3][6] == "not yet"
    assert [r[0] for r in item_table(outputs, ["m1", "m2"], "exact", True)[1]] == ["a"]


def test_a_run_can_answer_from_a_collection_and_score_retrieval(chat_app, tmp_path):
    """The documents picker: each item answers from the chosen collection; recall@5 scores its gold pages."""
    from chatcore.testing.documents import fact_pages, make_pdf
    from chatcore.web.views import COLLECTION_PREFIX

    pages, gold = fact_pages()
    make_pdf(tmp_path / "report.pdf", pages)
    library = chat_app.workspace.library
    job, _ = library.add_paths("ada", [tmp_path / "report.pdf"], "papers")
    library.run_job("ada", job)
    picker = chat_app.eval_source_choices(ADA)
    assert ("Collection: papers", COLLECTION_PREFIX + "papers") in picker.choices
    assert ("Collection: papers", COLLECTION_PREFIX + "papers") not in chat_app.eval_source_choices(BOB).choices
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"g{n}", "question": q, "answer": "x",
                                          "pages": [{"document": "report.pdf", "page": p}]})
                              for n, (q, p) in enumerate(gold[:3])))
    set_id = upload(chat_app, path, ADA)
    assert "library scope" in refusal(lambda: chat_app.start_run(set_id, ["paris"], ["recall@5"], "", ADA))
    run = chat_app.start_run(set_id, ["paris"], ["recall@5"], "", ADA, COLLECTION_PREFIX + "papers")
    run_id = run[4].value
    chat_app.workspace.evaluations.wait(run_id)
    rows = chat_app.workspace.evaluations.outputs("ada", run_id)
    assert len(rows) == 3 and all(r["scores"]["recall@5"]["correct"] for r in rows)

"""The Gradio page: its wiring through ``demo.fns`` and its handlers called directly, with the tiny model."""

from __future__ import annotations

import threading

import gradio as gr
import pytest
from gradio.helpers import special_args

from chatcore.core.errors import ModelError
from chatcore.core.settings import DEFAULT_CONCURRENCY, Settings
from chatcore.services.models import ModelManager
from chatcore.testing.engines import endless
from chatcore.testing.workspaces import make_workspace, refusal
from chatcore.web import app, server
from chatcore.web.stats import stats_frames
from chatcore.web.views import text_of
from chatcore.web.workspace import StopSignal, Workspace
from storage import Store

PARAMS = dict(temperature=0.0, top_p=0.95, top_k=50, max_new_tokens=8, repetition_penalty=1.1, seed="")


@pytest.fixture
def chat_app(tmp_path, tiny_engine, tiny_model_dir) -> app.ChatApp:
    return app.ChatApp(make_workspace(tmp_path, endless(tiny_engine), model=str(tiny_model_dir)))


def fn_named(demo: gr.Blocks, name: str) -> list:
    return [fn for fn in demo.fns.values() if fn.name == name]


def texts(chatbot: gr.Chatbot) -> list[str]:
    """The text of each message a Chatbot update holds (Gradio normalises contents into parts)."""
    return [text_of(m["content"]) for m in chatbot.value]


def ask(chat_app: app.ChatApp, text: str, conversation_id=None, **params):
    values = {**PARAMS, **params}
    signal = StopSignal()
    cleared, shown, pending, send, stop = chat_app.accept(text, [], signal, *values.values())
    assert cleared == "" and shown[-1] == {"role": "user", "content": text} and pending == text
    assert send.visible is False and stop.visible is True
    outputs = list(chat_app.respond(pending, conversation_id, signal, "", *values.values()))
    return outputs


def test_generation_is_queued_with_a_shared_limit_and_cheap_events_never_wait(chat_app):
    demo = chat_app.demo
    generating = [fn for name in ("respond", "retry", "edit") for fn in fn_named(demo, name)]
    assert len(generating) == 4  # Enter, Send, Retry, Edit
    assert all(fn.queue and fn.concurrency_limit == DEFAULT_CONCURRENCY for fn in generating)
    # As many as the local decoder batches: a tab that sends while others answer joins their step.
    from chatcore.api.admission import Admission
    from chatcore.engine.fast.engine import SLOTS

    assert DEFAULT_CONCURRENCY == Admission().running == SLOTS
    assert {fn.concurrency_id for fn in generating} == {"generate"}
    # Cheap events never wait behind an answer. Those that can refuse are queued with no limit (Gradio
    # shows a gr.Error's message only for a queued event); the rest stay out of the queue.
    refusing = ["accept", "begin", "begin_edit", "rate", "open_conversation", "search_conversations",
                "rename_conversation", "delete_conversation", "on_load", "switch_model", "export_markdown",
                "export_json_file"]
    for name in refusing:
        fns = fn_named(demo, name)
        assert fns, name
        assert all(fn.queue and fn.concurrency_limit is None for fn in fns), name
    for name in ["finish", "stop_generation", "new_conversation", "poll_status"]:
        fns = fn_named(demo, name)
        assert fns, name
        assert all(fn.queue is False for fn in fns), name
    # The answer step runs only when the question was accepted.
    assert all(fn.trigger_only_on_success for fn in generating)


def test_chatbot_keeps_html_sanitized_and_renders_latex(chat_app):
    chatbot = chat_app.chatbot
    assert chatbot.sanitize_html is True and chatbot.render_markdown is True
    assert {"left": "$$", "right": "$$", "display": True} in chatbot.latex_delimiters
    assert "copy" in chatbot.buttons and chatbot.editable == "user"


def test_a_question_streams_then_appears_in_the_sidebar(chat_app):
    outputs = ask(chat_app, "Explain attention")
    assert len(outputs) > 3
    final_chatbot, conversation_id, title, context, _ = outputs[-1]
    assert isinstance(final_chatbot, gr.Chatbot) and conversation_id is not None
    assert title == "Explain attention" and context.startswith("Context:")
    assert texts(final_chatbot)[0] == "Explain attention" and "8 tokens" in texts(final_chatbot)[1]
    send, stop, sidebar, *tools = chat_app.finish(conversation_id, "")
    assert send.visible is True and stop.visible is False
    assert len(tools) == 4 and all(tool.interactive is True for tool in tools)  # rename, delete, exports
    assert sidebar.choices == [("Explain attention", conversation_id)] and sidebar.value == conversation_id


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("hi", {"temperature": 5}, "temperature must be in the range [0, 2], got 5"),
        ("hi", {"seed": "abc"}, "seed must be an integer"),
        ("   ", {}, "the message is empty"),
        ("x" * 200_001, {}, "the message is too long"),
    ],
)
def test_bad_input_becomes_a_gradio_message(chat_app, text, params, message):
    with pytest.raises(gr.Error) as error:
        chat_app.accept(text, [], StopSignal(), *{**PARAMS, **params}.values())
    assert message in error.value.message


def test_model_still_loading_is_a_gradio_message_and_history_still_works(tmp_path, tiny_engine):
    from storage import Store

    release = threading.Event()
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model="tiny")
    manager = ModelManager(settings, loader=lambda s, p: (release.wait(10), tiny_engine)[1])
    manager.start()
    chat_app = app.ChatApp(Workspace(manager, Store(settings.db_path)))
    try:
        sidebar, model, device, status, timer = chat_app.on_load()
        assert sidebar.choices == [] and "loading tiny" in status and timer.active is True
        with pytest.raises(gr.Error, match="still loading"):
            chat_app.accept("hello", [], StopSignal(), *PARAMS.values())
    finally:
        release.set()
        manager.wait()
    status, timer = chat_app.poll_status()
    assert "ready: tiny" in status and timer.active is False


def test_a_message_too_long_for_the_window_is_refused_and_given_back(chat_app):
    window = chat_app.workspace.manager.get().context_window
    text = "word " * window
    outputs = []
    with pytest.raises(gr.Error, match="context window"):
        for output in chat_app.respond(text, None, StopSignal(), "", *PARAMS.values()):
            outputs.append(output)
    chatbot, conversation_id, title, _, message = outputs[-1]
    assert conversation_id is None and texts(chatbot) == [] and message == text  # nothing saved, nothing lost
    assert chat_app.workspace.conversation_choices("local") == []


def test_stop_sets_the_sessions_signal_and_the_answer_ends(chat_app):
    signal = StopSignal()
    stream = chat_app.respond("a long one", None, signal, "", *{**PARAMS, "max_new_tokens": 400}.values())
    for i, (chatbot, conversation_id, _, _, _) in enumerate(stream):
        if i == 4:
            app.ChatApp.stop_generation(signal)
    assert signal.is_set()
    saved = chat_app.workspace.store.get_conversation("local", conversation_id)["messages"][-1]
    assert saved["finish_reason"] == "cancelled" and saved["completion_tokens"] < 400


def test_rate_receives_like_data(chat_app):
    _, conversation_id, _, _, _ = ask(chat_app, "rate this")[-1]
    like = gr.LikeData(chat_app.chatbot, {"index": 1, "value": "x", "liked": False})
    args = special_args(chat_app.rate, [conversation_id], event_data=like)[0]
    chat_app.rate(*args)
    assert chat_app.workspace.open("local", conversation_id).feedback == ["Dislike"]


def test_edit_receives_edit_data_and_branches(chat_app):
    _, conversation_id, _, _, _ = ask(chat_app, "first question")[-1]
    opened = chat_app.open_conversation(conversation_id)
    chatbot_value = opened[1].value
    edit = gr.EditData(chat_app.chatbot, {"index": 0, "value": "first question, sharper", "previous_value": "x"})
    args = special_args(chat_app.begin_edit, [chatbot_value, StopSignal()], event_data=edit)[0]
    shown, pending, send, stop = chat_app.begin_edit(*args)
    assert shown == [{"role": "user", "content": "first question, sharper"}] and pending["index"] == 0
    outputs = list(chat_app.edit(pending, conversation_id, StopSignal(), "", *PARAMS.values()))
    _, branch_id, title, _, _ = outputs[-1]
    assert branch_id != conversation_id and title == "first question, sharper"


def test_retry_branches_and_needs_a_conversation(chat_app):
    _, conversation_id, _, _, _ = ask(chat_app, "again please")[-1]
    send, stop = chat_app.begin(StopSignal())
    assert stop.visible is True
    outputs = list(chat_app.retry(conversation_id, StopSignal(), "", *PARAMS.values()))
    assert outputs[-1][1] != conversation_id
    with pytest.raises(gr.Error, match="Open a saved conversation"):
        list(chat_app.retry(None, StopSignal(), "", *PARAMS.values()))


def test_sidebar_open_rename_search_delete_and_undo(chat_app):
    _, conversation_id, _, _, _ = ask(chat_app, "Quantum tunnelling basics")[-1]
    opened_id, chatbot, title, context, system = chat_app.open_conversation(conversation_id)[:5]
    assert opened_id == conversation_id and title == "Quantum tunnelling basics"
    assert [m["role"] for m in chatbot.value] == ["user", "assistant"] and system == ""
    sidebar = chat_app.rename_conversation(conversation_id, "<b>Physics</b> notes", "")
    assert sidebar.choices == [("<b>Physics</b> notes", conversation_id)]  # a plain-text label, never HTML
    hits = chat_app.search_conversations("tunnelling", conversation_id)
    assert hits.choices[0][1] == conversation_id and "«tunnelling»" in hits.choices[0][0]
    deleted = chat_app.delete_conversation(conversation_id, "")
    assert deleted[0] is None and deleted[9].choices == [] and deleted[10] == conversation_id
    assert deleted[11].visible is True
    assert [tool.interactive for tool in deleted[5:9]] == [False] * 4  # nothing open: nothing to rename
    restored = chat_app.undo_delete(conversation_id, "")
    assert restored[0] == conversation_id and restored[9].choices == [("<b>Physics</b> notes", conversation_id)]
    assert [tool.interactive for tool in restored[5:9]] == [True] * 4
    with pytest.raises(gr.Error, match="No conversation"):
        chat_app.open_conversation(10_000)


def test_export_returns_a_file(chat_app):
    _, conversation_id, _, _, _ = ask(chat_app, "export this")[-1]
    file = chat_app.export(conversation_id, fmt="markdown")
    assert file.visible is True and file.value["path"].endswith(".md")
    with pytest.raises(gr.Error, match="open a conversation first"):
        chat_app.export(None, fmt="json")


def test_status_is_plain_text(tmp_path):
    def fail(settings, progress):
        raise ModelError("<img src=x onerror=alert(1)>: *boom*")

    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model="hostile")
    manager = ModelManager(settings, loader=fail)
    manager.start()
    manager.wait()
    status, _ = app.ChatApp(Workspace(manager, Store(settings.db_path))).poll_status()
    assert "<img" not in status and "\\*boom\\*" in status


def test_parse_args_defaults():
    args = server.parse_args([])
    assert (args.host, args.port, args.open, args.model) == ("127.0.0.1", 7860, False, None)
    args = server.parse_args(["--host", "0.0.0.0", "--port", "9000", "--model", "m", "--device", "cpu",
                           "--dtype", "float32", "--open"])
    assert (args.host, args.port, args.model, args.device, args.dtype, args.open) == (
        "0.0.0.0", 9000, "m", "cpu", "float32", True)


def test_importing_the_app_loads_no_model():
    import importlib
    import sys

    for name in [n for n in sys.modules if n.startswith("transformers.models.llama")]:
        del sys.modules[name]
    importlib.reload(app)
    assert not any(n.startswith("transformers.models.llama") for n in sys.modules)


def test_chatcore_serve_is_a_command():
    from click.testing import CliRunner

    from chatcore.cli import main

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--open" in result.output


# -- accounts: every handler runs as the signed-in user --------------------------------------------

ADA, BOB = gr.Request(username="ada"), gr.Request(username="bob")
MISSING = 10_000


def test_owner_is_the_signed_in_user_or_local():
    assert app.ChatApp.owner(ADA) == "ada"
    assert app.ChatApp.owner(None) == app.LOCAL_OWNER == app.ChatApp.owner(gr.Request())




def test_another_users_ids_answer_exactly_like_ids_that_do_not_exist(chat_app):
    values = list(PARAMS.values())
    outputs = list(chat_app.respond("Bob's private question", None, StopSignal(), "", *values, BOB))
    bob_id = outputs[-1][1]
    store = chat_app.workspace.store
    before = store.get_conversation("bob", bob_id)
    assert chat_app.on_load(ADA)[0].choices == [] and chat_app.on_load(BOB)[0].choices == [
        ("Bob's private question", bob_id)]
    assert chat_app.search_conversations("private", None, ADA).choices == []

    like = gr.LikeData(chat_app.chatbot, {"index": 1, "value": "x", "liked": True})
    handlers = {
        "open": lambda cid: chat_app.open_conversation(cid, ADA),
        "rename": lambda cid: chat_app.rename_conversation(cid, "mine now", "", ADA),
        "delete": lambda cid: chat_app.delete_conversation(cid, "", ADA),
        "undo": lambda cid: chat_app.undo_delete(cid, "", ADA),
        "export markdown": lambda cid: chat_app.export_markdown(cid, ADA),
        "export json": lambda cid: chat_app.export_json_file(cid, ADA),
        "respond": lambda cid: chat_app.respond("continue", cid, StopSignal(), "", *values, ADA),
        "retry": lambda cid: chat_app.retry(cid, StopSignal(), "", *values, ADA),
        "edit": lambda cid: chat_app.edit({"index": 0, "text": "x"}, cid, StopSignal(), "", *values, ADA),
        "rate": lambda cid: chat_app.rate(cid, like, ADA),
    }
    for name, handler in handlers.items():
        foreign, missing = refusal(lambda: handler(bob_id)), refusal(lambda: handler(MISSING))
        assert foreign == missing.replace(str(MISSING), str(bob_id)), name
    assert store.get_conversation("bob", bob_id) == before
    assert store.list_conversations("ada") == []


# -- research: templates, answer tools, notes, stats ------------------------------------------------


def select(chat_app, conversation_id, index, request=None):
    event = gr.SelectData(chat_app.chatbot, {"index": index, "value": "x", "selected": True})
    args = special_args(chat_app.select_answer, [conversation_id], event_data=event, request=request)[0]
    return chat_app.select_answer(*args)


def test_a_template_fills_the_message_box_and_the_settings(chat_app):
    picker = chat_app.load_templates()
    assert ("paper-summary" in [value for _, value in picker.choices])
    assert chat_app.choose_template(None)[2].interactive is False  # no template chosen: Use is off
    about, names, use, *boxes = chat_app.choose_template("abstract-draft")
    assert use.interactive is True and names == ["content", "word_limit"] and "abstract" in about
    assert [b.visible for b in boxes[:3]] == [True, True, False] and boxes[0].label == "content (required)"
    assert boxes[1].placeholder == "250"
    with pytest.raises(gr.Error, match="missing required variable.*'content'"):
        chat_app.apply_template("abstract-draft", names, "", "", *[""] * (len(boxes) - 2))
    message, system, temperature, top_p, top_k, max_new_tokens, penalty = chat_app.apply_template(
        "abstract-draft", names, "We measured X.", "", *[""] * (len(boxes) - 2))
    assert "We measured X." in message and "at most 250 words" in message
    assert "scientific editor" in system
    assert (temperature, top_p, max_new_tokens, penalty) == (0.3, 0.9, 500, 1.05)
    assert isinstance(top_k, type(gr.skip()))  # not recommended: the panel keeps its value
    with pytest.raises(gr.Error, match="Choose a template"):
        chat_app.apply_template(None, [])


def test_an_answer_is_selected_saved_as_a_note_and_opened_from_the_notes_tab(chat_app):
    _, conversation_id, _, _, _ = ask(chat_app, "Summarise <b>attention</b>")[-1]
    ignored = select(chat_app, conversation_id, 0)  # the question: nothing selected
    assert "Click one of the answers" in ignored[1]
    selected, line, text, title, comment, tools, verdict, rerun, *buttons = select(chat_app, conversation_id, 1)
    assert selected == {"conversation_id": conversation_id, "index": 1} and tools.open is True
    answer = chat_app.workspace.store.get_conversation("local", conversation_id)["messages"][1]
    assert text == answer["content"] and comment == ""
    kept = "Attention weighs every token"  # the part of the answer kept (the tiny model's answers are noise)
    assert chat_app.save_answer_note(selected, kept, "<script>x</script> Key point", "ml, attention") == ("", "")

    notes, empty, export = chat_app.list_notes("", None)
    [(label, note_id)] = notes.choices
    assert empty.visible is False and export.interactive is True
    assert label == "<script>x</script> Key point"  # a plain-text label
    opened = chat_app.open_note(note_id, None)
    assert opened[:4] == (note_id, "<script>x</script> Key point", "ml, attention", kept)
    assert "Note " in opened[4]
    hits = chat_app.list_notes("key", None)[0]
    assert hits.choices[0][1] == note_id and "«Key»" in hits.choices[0][0]

    source = chat_app.open_note_source(note_id, "")
    assert source[0] == conversation_id and source[-1].selected == "chat"
    assert source[-2].value == conversation_id and len(source[1].value) == 2

    pinned, meta, *controls = chat_app.pin_note(note_id, conversation_id)
    assert [c.interactive for c in controls[1:]] == [True, True, False, True, True]  # pinned: Unpin, not Pin
    assert pinned.startswith("1 note pinned") and "tokens of context" in pinned and "open chat" in meta
    assert chat_app.open_conversation(conversation_id)[-1] == pinned
    assert chat_app.unpin_note(note_id, conversation_id)[0] == ""
    with pytest.raises(gr.Error, match="open a saved conversation"):
        chat_app.pin_note(note_id, None)

    chat_app.save_edited_note(note_id, "Edited", "x", "new body", "", None)
    assert chat_app.workspace.note("local", note_id)["body"] == "new body"
    exported = chat_app.export_all_notes()
    assert "new body" in open(exported.value["path"]).read()
    cleared = chat_app.delete_note(note_id, "")
    assert cleared[0].choices == [] and cleared[1].visible is True and cleared[3] is None
    with pytest.raises(gr.Error, match="choose a note first"):
        chat_app.open_note(None, None)


def test_rating_comment_and_rerun(chat_app):
    _, conversation_id, _, _, _ = ask(chat_app, "rate and re-run")[-1]
    selected = {"conversation_id": conversation_id, "index": 1}
    like = gr.LikeData(chat_app.chatbot, {"index": 1, "value": "x", "liked": True})
    chat_app.rate(*special_args(chat_app.rate, [conversation_id], event_data=like)[0])
    chat_app.save_rating_comment(selected, "clear and short")
    chat_app.rate(*special_args(chat_app.rate, [conversation_id], event_data=like)[0])  # re-rating keeps it
    answer = chat_app.workspace.store.get_conversation("local", conversation_id)["messages"][1]
    assert (answer["rating"], answer["rating_comment"]) == (1, "clear and short")
    assert select(chat_app, conversation_id, 1)[4] == "clear and short"
    verdict, rerun = chat_app.rerun_answer(selected)
    assert verdict.startswith("**Identical**") and rerun.value == answer["content"] and rerun.visible is True
    with pytest.raises(gr.Error, match="click a saved answer"):
        chat_app.rerun_answer(None)


def test_stats_are_dataframes_for_the_plots(chat_app):
    ask(chat_app, "count me")
    messages, ratings, speed = stats_frames(chat_app.workspace.stats("local"))
    assert list(messages.columns) == ["day", "role", "messages"] and set(messages["role"]) == {"user", "assistant"}
    assert list(ratings.columns) == ["day", "rating", "answers"] and ratings.empty
    assert list(speed.columns) == ["model", "tokens_per_s"] and speed["tokens_per_s"].iloc[0] > 0


def test_research_events_are_wired_and_cheap_ones_never_wait(chat_app):
    demo = chat_app.demo
    for name in ("load_templates", "choose_template", "apply_template", "save_answer_note", "save_rating_comment",
                 "list_notes", "open_note", "save_edited_note", "delete_note", "export_all_notes",
                 "open_note_source", "pin_note", "show_stats", "show_notes"):
        fns = fn_named(demo, name)
        assert fns and all(fn.queue and fn.concurrency_limit is None for fn in fns), name  # can refuse
    for name in ("select_answer", "unpin_note", "new_note"):
        fns = fn_named(demo, name)
        assert fns and all(fn.queue is False for fn in fns), name
    [rerun] = fn_named(demo, "rerun_answer")
    assert rerun.queue and rerun.concurrency_id == "generate"
    handlers = [fn for fn in demo.fns.values() if getattr(fn.fn, "__self__", None) is chat_app]
    assert len(handlers) > 40 and all(fn.api_visibility == "private" for fn in handlers)


def test_another_users_notes_and_answers_answer_like_missing_ones(chat_app):
    values = list(PARAMS.values())
    outputs = list(chat_app.respond("Bob's answer to keep", None, StopSignal(), "", *values, BOB))
    bob_cid = outputs[-1][1]
    bob_selected = {"conversation_id": bob_cid, "index": 1}
    chat_app.save_answer_note(bob_selected, "Bob's text", "Bob's note", "", BOB)
    [(_, bob_note)] = chat_app.list_notes("", None, BOB)[0].choices
    store = chat_app.workspace.store
    before = (store.get_conversation("bob", bob_cid), chat_app.workspace.note("bob", bob_note))
    ada_cid = list(chat_app.respond("Ada's own", None, StopSignal(), "", *values, ADA))[-1][1]
    missing_selected = {"conversation_id": MISSING, "index": 1}

    assert chat_app.list_notes("", None, ADA)[0].choices == []
    assert chat_app.list_notes("Bob", None, ADA)[0].choices == []
    assert "Click one of the answers" in select(chat_app, bob_cid, 1, ADA)[1]
    for name, handler in {
        "save note": lambda sel: chat_app.save_answer_note(sel, "stolen", "stolen", "", ADA),
        "comment": lambda sel: chat_app.save_rating_comment(sel, "mine", ADA),
        "rerun": lambda sel: chat_app.rerun_answer(sel, ADA),
    }.items():
        assert refusal(lambda: handler(bob_selected)) == refusal(lambda: handler(missing_selected)).replace(
            str(MISSING), str(bob_cid)), name
    for name, handler in {
        "open": lambda nid: chat_app.open_note(nid, None, ADA),
        "save": lambda nid: chat_app.save_edited_note(nid, "t", "", "b", "", None, ADA),
        "delete": lambda nid: chat_app.delete_note(nid, "", ADA),
        "source": lambda nid: chat_app.open_note_source(nid, "", ADA),
        "pin": lambda nid: chat_app.pin_note(nid, ada_cid, ADA),
        "unpin": lambda nid: chat_app.unpin_note(nid, ada_cid, ADA),
    }.items():
        assert refusal(lambda: handler(bob_note)) == refusal(lambda: handler(MISSING)).replace(
            str(MISSING), str(bob_note)), name
    # Ada's note pinned to Bob's conversation: the conversation answers as missing.
    chat_app.save_answer_note({"conversation_id": ada_cid, "index": 1}, "Ada's text", "Ada's note", "", ADA)
    [(_, ada_note)] = chat_app.list_notes("", None, ADA)[0].choices
    assert refusal(lambda: chat_app.pin_note(ada_note, bob_cid, ADA)) == refusal(
        lambda: chat_app.pin_note(ada_note, MISSING, ADA)).replace(str(MISSING), str(bob_cid))
    assert "Ada" not in open(chat_app.export_all_notes(BOB).value["path"]).read()
    assert (store.get_conversation("bob", bob_cid), chat_app.workspace.note("bob", bob_note)) == before
    messages, _, _ = stats_frames(chat_app.workspace.stats("ada"))
    assert messages["messages"].sum() == 2
    assert chat_app.show_stats(ADA)[0]["visible"] is True


# -- empty states, and actions enabled only when they apply ----------------------------------------


def test_with_nothing_open_the_conversation_tools_are_off_and_an_answer_turns_the_answer_tools_on(chat_app):
    view = chat_app.new_conversation()
    assert view[0] is None and [tool.interactive for tool in view[5:9]] == [False] * 4
    _, conversation_id, _, _, _ = ask(chat_app, "tools please")[-1]
    assert [tool.interactive for tool in chat_app.open_conversation(conversation_id)[5:9]] == [True] * 4
    ignored = select(chat_app, conversation_id, 0)  # a question: the tools stay as they were
    assert all(isinstance(b, type(gr.skip())) for b in ignored[8:]) and len(ignored) == 11
    assert [b.interactive for b in select(chat_app, conversation_id, 1)[8:]] == [True, True, True]


def test_the_notes_tab_says_how_to_make_a_note_and_new_note_writes_one(chat_app):
    notes, empty, export = chat_app.list_notes("", None)
    assert notes.choices == [] and empty.visible is True and "New note" in empty.value
    assert "Save as note" in empty.value and export.interactive is False
    assert "No note matches" in chat_app.list_notes("nothing", None)[1].value
    editor, save, source, pin, unpin, delete = chat_app.new_note(None)[6:]
    assert editor.visible is True and save.interactive is True
    assert [b.interactive for b in (source, pin, unpin, delete)] == [False] * 4
    saved = chat_app.save_edited_note(None, "", "ideas", "Written by hand\nsecond line", "", None)
    note_id, title, notes, empty = saved[:4]
    assert title == "Written by hand" and notes.choices == [("Written by hand", note_id)] and empty.visible is False
    editor, save, source, pin, unpin, delete = saved[-6:]
    # Saved: it can be deleted; it has no source; no chat is open to pin it to.
    assert [b.interactive for b in (save, source, pin, unpin, delete)] == [True, False, False, False, True]
    _, conversation_id, _, _, _ = ask(chat_app, "a chat to pin to")[-1]
    shown = chat_app.show_notes("", note_id, conversation_id)
    assert [b.interactive for b in shown[-4:-1]] == [False, True, False]  # Pin on, Unpin off
    assert [b.interactive for b in chat_app.pin_note(note_id, conversation_id)[-4:-1]] == [False, False, True]


def test_every_empty_chart_has_an_empty_state_and_the_speed_axis_a_human_label(chat_app):
    plots_and_states = chat_app.show_stats()
    plots, states = plots_and_states[:3], plots_and_states[3:]
    assert [p["visible"] for p in plots] == [False] * 3 and [s.visible for s in states] == [True] * 3
    assert "no ratings yet" in states[1].value
    assert chat_app.speed_plot.y_title == "tokens/s"
    ask(chat_app, "count me")
    plots, states = chat_app.show_stats()[:3], chat_app.show_stats()[3:]
    assert [p["visible"] for p in plots] == [True, False, True] and [s.visible for s in states] == [False, True, False]

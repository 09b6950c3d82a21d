"""The web app's service layer with the tiny random model: chat, stop, branches, ratings, sidebar, export."""

from __future__ import annotations

import copy
import json
import threading

import pytest

from chatcore.core.errors import ParameterError
from chatcore.core.settings import Settings
from chatcore.services.models import ModelManager, ModelNotReadyError
from chatcore.testing.engines import endless
from chatcore.testing.workspaces import make_workspace
from chatcore.web.views import MATCH_CLOSE, MATCH_OPEN, answer_markdown, context_markdown, stats_line
from chatcore.web.workspace import StopSignal, Workspace

OWNER = "local"


@pytest.fixture
def workspace(tmp_path, tiny_engine, tiny_model_dir) -> Workspace:
    return make_workspace(tmp_path, endless(tiny_engine), model=str(tiny_model_dir))


def ask(workspace: Workspace, text: str, conversation_id=None, *, tokens: int = 12, cancel=None, system=None):
    params = workspace.params(temperature=0, max_new_tokens=tokens, seed="")
    views = list(workspace.send(OWNER, conversation_id, text, params, system=system, cancel=cancel))
    return views


def test_send_streams_then_shows_the_saved_conversation_with_stats(workspace):
    views = ask(workspace, "What is entropy?", tokens=12)
    final = views[-1]
    assert len(views) > 3  # the question at once, then the answer growing, then the saved view
    growing = [v.messages[-1]["content"] for v in views[1:-1]]
    assert all(len(a) <= len(b) for a, b in zip(growing, growing[1:]))
    assert final.conversation_id is not None and final.title == "What is entropy?"
    assert [m["role"] for m in final.messages] == ["user", "assistant"]
    answer = final.messages[1]["content"]
    assert "<sub>" in answer and "12 tokens" in answer and "tok/s" in answer and "seed " in answer
    assert "hit the token limit" in answer
    assert final.feedback == [None]
    assert final.context.startswith("Context: ") and "tokens" in final.context
    saved = workspace.store.get_conversation(OWNER, final.conversation_id)
    assert saved["messages"][1]["params"]["max_new_tokens"] == 12
    assert saved["source"] == "web"


def test_a_second_question_continues_the_conversation(workspace):
    first = ask(workspace, "one")[-1]
    second = ask(workspace, "two", first.conversation_id)[-1]
    assert second.conversation_id == first.conversation_id
    assert [m["content"] for m in second.messages if m["role"] == "user"] == ["one", "two"]


def test_stop_ends_generation_for_real_and_keeps_the_partial_answer(workspace):
    cancel = StopSignal()
    params = workspace.params(temperature=0.7, max_new_tokens=400, seed="1")
    views = workspace.send(OWNER, None, "Tell me a long story", params, cancel=cancel)
    seen = 0
    for view in views:
        if view.messages[-1]["role"] == "assistant":
            seen += 1
            if seen == 5:
                cancel.set()
    saved = workspace.store.get_conversation(OWNER, view.conversation_id)["messages"][-1]
    assert saved["finish_reason"] == "cancelled" and not saved["complete"]
    assert 0 < saved["completion_tokens"] < 400
    assert "stopped" in view.messages[-1]["content"]


def test_updates_are_coalesced_to_the_stream_interval(tmp_path, tiny_engine):
    workspace = make_workspace(tmp_path, endless(tiny_engine), stream_interval=60.0)
    views = ask(workspace, "coalesce", tokens=20)
    assert len(views) == 3  # the saved question, the first text, then the whole answer at the end
    assert "20 tokens" in views[-1].messages[-1]["content"]


def test_stop_signal_survives_session_state_copying():
    signal = StopSignal()
    assert copy.deepcopy(signal) is signal


def test_retry_answers_again_on_a_branch_and_keeps_the_original(workspace):
    first = ask(workspace, "Question A")[-1]
    params = workspace.params(temperature=0.9, max_new_tokens=8, seed="")
    branch = list(workspace.retry(OWNER, first.conversation_id, params))[-1]
    assert branch.conversation_id != first.conversation_id
    assert [m["content"] for m in branch.messages if m["role"] == "user"] == ["Question A"]
    assert len(workspace.open(OWNER, first.conversation_id).messages) == 2  # untouched
    # Retrying the first answer has nothing to copy, so its branch is a fresh conversation with the same title.
    assert [label for label, _ in workspace.conversation_choices(OWNER)] == ["Question A", "Question A"]


def test_edit_a_later_question_forks_from_just_before_it(workspace):
    first = ask(workspace, "one")[-1]
    second = ask(workspace, "two", first.conversation_id)[-1]
    params = workspace.params(temperature=0, max_new_tokens=6, seed="")
    branch = list(workspace.edit(OWNER, second.conversation_id, 2, "two, edited", params))[-1]
    assert branch.conversation_id not in (None, first.conversation_id)
    assert [m["content"] for m in branch.messages if m["role"] == "user"] == ["one", "two, edited"]
    original = workspace.open(OWNER, first.conversation_id)
    assert [m["content"] for m in original.messages if m["role"] == "user"] == ["one", "two"]
    labels = dict((cid, label) for label, cid in workspace.conversation_choices(OWNER))
    assert labels[branch.conversation_id] == "Branch: one"
    parent = workspace.store.get_conversation(OWNER, branch.conversation_id)["parent_conversation_id"]
    assert parent == first.conversation_id


def test_only_user_messages_can_be_edited(workspace):
    view = ask(workspace, "one")[-1]
    params = workspace.params(max_new_tokens=4)
    with pytest.raises(ParameterError, match="only your own messages"):
        list(workspace.edit(OWNER, view.conversation_id, 1, "x", params))


def test_ratings_are_saved_and_shown_on_reopen(workspace):
    view = ask(workspace, "rate me")[-1]
    workspace.rate(OWNER, view.conversation_id, 1, True)
    assert workspace.open(OWNER, view.conversation_id).feedback == ["Like"]
    workspace.rate(OWNER, view.conversation_id, 1, False)
    assert workspace.open(OWNER, view.conversation_id).feedback == ["Dislike"]
    workspace.rate(OWNER, view.conversation_id, 1, "")
    assert workspace.open(OWNER, view.conversation_id).feedback == [None]
    with pytest.raises(ParameterError, match="only answers"):
        workspace.rate(OWNER, view.conversation_id, 0, True)


def test_search_finds_any_word_and_marks_it(workspace):
    ask(workspace, "Notes on photosynthesis and chlorophyll")
    other = ask(workspace, "Something else entirely")[-1]
    hits = workspace.search(OWNER, "chlorophyll")
    assert len(hits) == 1
    label, _ = hits[0]
    assert f"{MATCH_OPEN}chlorophyll{MATCH_CLOSE}" in label
    assert workspace.search(OWNER, "") == workspace.conversation_choices(OWNER)
    assert other.conversation_id in [cid for _, cid in workspace.conversation_choices(OWNER)]
    assert workspace.search(OWNER, '"unbalanced (* OR') == []  # any text is safe to search


def test_rename_delete_and_restore(workspace):
    view = ask(workspace, "to be renamed")[-1]
    workspace.rename(OWNER, view.conversation_id, "  My   title ")
    assert ("My title", view.conversation_id) in workspace.conversation_choices(OWNER)
    assert workspace.delete(OWNER, view.conversation_id) == "My title"
    assert workspace.conversation_choices(OWNER) == []
    workspace.restore(OWNER, view.conversation_id)
    assert workspace.conversation_choices(OWNER) == [("My title", view.conversation_id)]


def test_export_writes_markdown_and_json(workspace, tmp_path):
    view = ask(workspace, "export me")[-1]
    md = workspace.export(OWNER, view.conversation_id, "markdown", tmp_path / "out")
    assert md.suffix == ".md" and "export me" in md.read_text()
    js = workspace.export(OWNER, view.conversation_id, "json", tmp_path / "out")
    assert json.loads(js.read_text())["conversations"][0]["messages"][0]["content"] == "export me"
    with pytest.raises(ParameterError, match="open a conversation"):
        workspace.export(OWNER, None, "json", tmp_path / "out")


def test_settings_are_validated_and_name_the_parameter(workspace):
    assert workspace.params(seed=" ").seed is None
    assert workspace.params(seed="42").seed == 42
    with pytest.raises(ParameterError) as error:
        workspace.params(temperature=5)
    assert error.value.param == "temperature"
    window = workspace.manager.get().context_window
    with pytest.raises(ParameterError, match="max_new_tokens"):
        workspace.params(max_new_tokens=window)


def test_settings_apply_to_the_next_message_and_are_saved_with_it(workspace):
    view = ask(workspace, "first", tokens=5)[-1]
    params = workspace.params(temperature=0.3, top_k=7, max_new_tokens=6, seed="99")
    view = list(workspace.send(OWNER, view.conversation_id, "second", params, system="Answer in French."))[-1]
    saved = workspace.store.get_conversation(OWNER, view.conversation_id)["messages"]
    assert saved[1]["params"]["max_new_tokens"] == 5
    expected = {"temperature": 0.3, "top_k": 7, "max_new_tokens": 6, "seed": 99, "system_prompt": "Answer in French."}
    assert expected.items() <= saved[3]["params"].items()
    assert "seed 99" in view.messages[3]["content"]


def test_check_send_refuses_while_the_model_loads(tmp_path, tiny_engine):
    from storage import Store

    release = threading.Event()

    def slow_loader(settings, progress):
        progress("reading weights")
        release.wait(10)
        return tiny_engine

    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model="tiny")
    manager = ModelManager(settings, loader=slow_loader)
    manager.start()
    workspace = Workspace(manager, Store(settings.db_path))
    try:
        status, loading = workspace.model_status()
        assert loading and "loading tiny" in status
        with pytest.raises(ModelNotReadyError, match="still loading"):
            workspace.check_send("hello")
        assert workspace.conversation_choices(OWNER) == []  # history works meanwhile
    finally:
        release.set()
        manager.wait()
    workspace.check_send("hello")
    assert workspace.model_status() == ("ready: tiny", False)


def test_check_send_refuses_empty_and_oversized_messages(workspace):
    with pytest.raises(ParameterError, match="empty"):
        workspace.check_send("   ")
    with pytest.raises(ParameterError, match="too long"):
        workspace.check_send("x" * 200_001)


def test_a_message_too_long_for_the_window_is_a_clear_error(workspace):
    params = workspace.params(max_new_tokens=8)
    window = workspace.manager.get().context_window
    from chatcore.core.errors import ContextOverflowError

    with pytest.raises(ContextOverflowError, match="context window"):
        list(workspace.send(OWNER, None, "word " * window, params))


def test_model_choices_include_the_current_model_and_switching_loads_in_background(workspace, tiny_model_dir):
    choices = workspace.model_choices()
    assert choices[0] == (tiny_model_dir.name, str(tiny_model_dir))
    assert workspace.switch_model(str(tiny_model_dir), "cpu") == str(workspace.manager.status)  # nothing to do
    workspace.switch_model(str(tiny_model_dir), "auto")
    workspace.manager.wait()
    assert workspace.manager.settings.device == "auto"
    assert "auto" in workspace.device_choices() and "cpu" in workspace.device_choices()


def test_stats_and_context_lines():
    message = {"model": "/models/smol", "completion_tokens": 1234, "ttft_ms": 45.2, "tokens_per_s": 31.25,
               "params": {"seed": 7}, "finish_reason": "cancelled", "complete": False}
    assert stats_line(message) == "smol · 1,234 tokens · first token 45 ms · 31.2 tok/s · seed 7 · stopped"
    assert context_markdown(1000, 2048) == "Context: 1,000 / 2,048 tokens (49%)"
    assert "2 oldest messages" in context_markdown(1000, 2048, dropped=2)
    assert context_markdown(None, 2048) == ""


def test_answer_markdown_closes_an_open_fence_and_escapes_the_stats():
    shown = answer_markdown("```python\nprint(1)", "<b>model</b>")
    assert shown.startswith("```python\nprint(1)\n```")
    assert "&lt;b&gt;model&lt;/b&gt;" in shown and "<b>" not in shown


# -- research -------------------------------------------------------------------------------------


def test_notes_from_answers_pins_and_their_token_line(workspace):
    from chatcore.services.templates import TemplateError

    conversation_id = ask(workspace, "pin a note here")[-1].conversation_id
    note_id = workspace.save_note(OWNER, conversation_id, 1, "Kept part", title="", tags="a, b ,")
    note = workspace.note(OWNER, note_id)
    assert (note["title"], note["body"], note["tags"]) == ("Kept part", "Kept part", ["a", "b"])
    with pytest.raises(ParameterError, match="only answers"):
        workspace.save_note(OWNER, conversation_id, 0, "a question")
    assert workspace.pinned_line(OWNER, conversation_id) == ""
    line = workspace.pin(OWNER, note_id, conversation_id)
    tokens = workspace.manager.get().count_tokens("\n\nNotes pinned to this conversation:\n\n## Kept part\nKept part")
    assert line == f"1 note pinned · {tokens:,} tokens of context"
    assert workspace.open(OWNER, conversation_id).pinned == line
    workspace.manager.adopt(object())  # a backend that cannot count tokens (a remote server) as the default
    assert workspace.pinned_line(OWNER, conversation_id) == "1 note pinned"
    with pytest.raises(TemplateError, match="'content'"):
        workspace.use_template("abstract-draft", {"content": "  ", "word_limit": ""})
    assert "at most 250 words" in workspace.use_template("abstract-draft", {"content": "c", "word_limit": " "}).text


def test_rerun_says_whether_the_answer_is_reproduced(workspace):
    conversation_id = ask(workspace, "reproduce me")[-1].conversation_id
    text, identical = workspace.rerun(OWNER, conversation_id, 1)
    saved = workspace.store.get_conversation(OWNER, conversation_id)["messages"][1]
    assert identical and text == saved["content"]
    workspace.store.finish_message(saved["id"], "edited since", finish_reason="length", complete=True)
    assert workspace.rerun(OWNER, conversation_id, 1) == (text, False)


def test_a_held_answer_waits_after_its_first_piece_until_released_or_stopped(tmp_path, tiny_engine, tiny_model_dir):
    from chatcore.testing.engines import Held

    engine = Held(endless(tiny_engine))
    workspace = make_workspace(tmp_path, engine, model=str(tiny_model_dir))
    results: dict[str, list] = {}

    def answer(name: str, cancel: threading.Event) -> None:
        results[name] = ask(workspace, name, tokens=64, cancel=cancel)

    stop, keep = threading.Event(), threading.Event()
    with engine.holding():
        threads = [threading.Thread(target=answer, args=args) for args in (("stopped", stop), ("released", keep))]
        for thread in threads:
            thread.start()
        engine.wait_until_held(2)  # both answers wait after their first piece
        stop.set()
        threads[0].join(60)
        assert not threads[0].is_alive() and threads[1].is_alive()  # Stop ends a held answer; the other waits
    threads[1].join(60)
    reasons = {name: workspace.store.get_conversation(OWNER, views[-1].conversation_id)["messages"][-1]
               for name, views in results.items()}
    assert reasons["stopped"]["finish_reason"] == "cancelled" and reasons["stopped"]["completion_tokens"] < 64
    assert reasons["released"]["finish_reason"] == "length" and reasons["released"]["completion_tokens"] == 64

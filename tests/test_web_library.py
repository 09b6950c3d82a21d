"""The Library tab and the Chat tab's sources, through the page's handlers over a real Workspace, SQLite store
and library, with the tiny model (the transformers loop) answering."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import pytest

from chatcore.services.library import Library
from chatcore.testing.documents import make_pdf
from chatcore.testing.workspaces import make_workspace
from chatcore.web import app
from chatcore.web.library import NO_DOCUMENTS, NO_SOURCES
from chatcore.web.views import (
    COLLECTION_PREFIX,
    SOURCES_ALL,
    SOURCES_OFF,
    mark,
    page_html,
    sources_markdown,
    text_of,
)
from chatcore.web.workspace import StopSignal
from storage.library import save_message_sources

PARAMS = dict(temperature=0.0, top_p=0.95, top_k=50, max_new_tokens=8, repetition_penalty=1.1, seed="1")
ADA, BOB = gr.Request(username="ada"), gr.Request(username="bob")
PAGES = ["The capital of Zorbia is Quillton, a city of bridges.",
         "Ripe bananas are yellow. Green bananas are not ripe yet.",
         "Script text: <script>alert(1)</script> & <b>bold</b> stays text."]


class GatedLibrary(Library):
    """A library whose background jobs wait at a gate, so a test can act while a job is certainly running."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def run_job(self, owner, job_id, **kwargs):
        self.gate.wait()
        return super().run_job(owner, job_id, **kwargs)


@pytest.fixture
def chat_app(tmp_path, hf_engine, tiny_model_dir) -> app.ChatApp:
    return app.ChatApp(make_workspace(tmp_path, hf_engine, model=str(tiny_model_dir)))


@pytest.fixture
def facts_pdf(tmp_path) -> Path:
    return make_pdf(tmp_path / "facts.pdf", PAGES)


def add(chat_app: app.ChatApp, paths, collection="default", request=None):
    """Add files through the handler and wait for the job; returns the add's outputs."""
    outputs = chat_app.add_files([str(p) for p in paths], collection, request)
    chat_app.workspace.library.wait(outputs[3])
    return outputs


def table(chat_app: app.ChatApp, request=None) -> list[list]:
    frame, empty, ids = chat_app.show_library(None, request)[:3]
    return frame.value["data"] if frame.visible else []


def ask(chat_app: app.ChatApp, text: str, sources: str | None, conversation_id=None, request=None):
    values = list(PARAMS.values())
    return list(chat_app.respond(text, conversation_id, StopSignal(), "", *values, request, sources))


def test_upload_indexes_with_a_progress_bar_that_reaches_done(chat_app, facts_pdf):
    documents, empty, ids = chat_app.show_library(None)[:3]
    assert documents.visible is False and empty.visible is True and empty.value == NO_DOCUMENTS
    assert chat_app.files_chosen([]).interactive is False and chat_app.files_chosen([str(facts_pdf)]).interactive
    upload, add_button, outcome, job_id, bar, cancel, timer, *rest = chat_app.add_files([str(facts_pdf)], "papers")
    assert upload.value is None and add_button.interactive is False
    assert outcome.startswith("1 file queued") and "Refused" not in outcome
    assert bar.visible and 'role="progressbar"' in bar.value
    chat_app.workspace.library.wait(job_id)
    job_id_after, bar, cancel, timer, frame, empty, ids, collection, sources = chat_app.poll_job(job_id)
    assert 'aria-valuenow="100"' in bar.value and "done: 1 of 1 files indexed" in bar.value
    assert cancel.visible is False and timer.active is False
    [row] = frame.value["data"]
    assert row[1:] == ["facts.pdf", "papers", 3, 3, "ready", ""]
    assert empty.visible is False and ids == [chat_app.workspace.library.documents("local")[0]["id"]]
    assert "papers" in collection.choices[-1] or ("papers", "papers") in collection.choices
    assert ("Collection: papers", COLLECTION_PREFIX + "papers") in sources.choices


def test_uploads_are_stored_under_their_base_name_only(chat_app, tmp_path):
    nested = tmp_path / "deep" / "dir"
    nested.mkdir(parents=True)
    path = make_pdf(nested / "report.pdf", ["A report about dams."])
    add(chat_app, [path])
    assert [d["filename"] for d in chat_app.workspace.library.documents("local")] == ["report.pdf"]


def test_a_refused_file_is_listed_with_its_reason_and_the_others_are_indexed(chat_app, facts_pdf, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    fake = tmp_path / "fake.pdf"
    fake.write_text("not a pdf at all")
    outputs = add(chat_app, [facts_pdf, empty, fake, tmp_path / "vanished.txt"])
    outcome = outputs[2]
    assert outcome.startswith("1 file queued") and "**Refused:**" in outcome
    assert "- vanished\\.txt: " in outcome and "No such file" in outcome  # a temp file gone: refused alone
    assert "empty\\.txt: empty\\.txt is empty \\(0 bytes\\)" in outcome
    assert "fake\\.pdf is not a PDF" in outcome
    rows = {row[1]: row for row in table(chat_app)}
    assert rows["facts.pdf"][5] == "ready"
    assert rows["empty.txt"][5] == "failed" and "is empty (0 bytes)" in rows["empty.txt"][6]
    bar = chat_app.poll_job(outputs[3])[1].value
    assert "done: 1 of 4 files indexed, 3 failed" in bar


def test_no_files_is_refused_with_a_clear_error(chat_app):
    with pytest.raises(gr.Error, match="choose one or more files"):
        chat_app.add_files([], "default")


def test_cancel_stops_a_running_job_and_says_so(chat_app, facts_pdf):
    library = GatedLibrary(chat_app.workspace.store)
    chat_app.workspace.library = chat_app.workspace.service.library = library
    job_id = chat_app.add_files([str(facts_pdf)], "default")[3]
    job, bar, cancel, timer = chat_app.show_library(None)[5:]  # a reload finds the running job
    assert job == job_id and cancel.visible and cancel.interactive and timer.active
    job, bar, cancel, timer, frame, empty, ids = chat_app.cancel_job(job_id)
    assert "cancelled" in bar.value and cancel.visible is False and timer.active is False
    library.gate.set()
    library.wait(job_id)
    assert [row[5] for row in chat_app.poll_job(job_id)[4].value["data"]] == ["cancelled"]
    with pytest.raises(gr.Error, match="No indexing job"):
        chat_app.cancel_job(None)


def test_search_lists_matching_passages_with_best_sentences_marked_and_escaped(chat_app, facts_pdf):
    add(chat_app, [facts_pdf])
    found = chat_app.search_library("capital of Zorbia")
    assert found.visible and "[1] facts.pdf, page 1" in found.value
    assert "<mark>The capital of Zorbia is Quillton, a city of bridges.</mark>" in found.value
    escaped = chat_app.search_library("script alert bold").value
    assert "<script>" not in escaped and "&lt;script&gt;alert(1)&lt;/script&gt;" in escaped
    assert "No passage matches" in chat_app.search_library("xylophone quasar").value
    assert chat_app.search_library("  ").visible is False


def test_delete_and_undo(chat_app, facts_pdf):
    add(chat_app, [facts_pdf])
    ids = chat_app.show_library(None)[2]
    selected, line, delete = chat_app.select_document(ids, gr.SelectData(None, {"index": [0, 1], "value": ""}))
    assert selected == ids[0] and delete.interactive and line == "Selected: facts\\.pdf"
    stale = chat_app.select_document(ids, gr.SelectData(None, {"index": [5, 0], "value": ""}))
    assert stale[0] is None and stale[2].interactive is False
    frame, empty, ids_after, selected, line, delete, deleted, undo = chat_app.delete_document(selected)
    assert frame.visible is False and empty.visible and ids_after == [] and undo.visible
    assert delete.interactive is False and deleted == ids[0]
    assert "No passage matches" in chat_app.search_library("Zorbia").value  # gone from search too
    frame, empty, ids_after, selected, line, delete, deleted, undo = chat_app.undo_delete_document(deleted)
    assert ids_after == ids and frame.visible and undo.visible is False and deleted is None
    assert "Quillton" in chat_app.search_library("Zorbia").value
    with pytest.raises(gr.Error, match="Click a document"):
        chat_app.delete_document(None)


def test_a_grounded_answer_lists_its_sources_and_opens_one_on_its_page(chat_app, facts_pdf):
    add(chat_app, [facts_pdf])
    assert chat_app.choose_sources(SOURCES_ALL, None).interactive  # no chat open: kept for the next message
    outputs = ask(chat_app, "What is the capital of Zorbia?", SOURCES_ALL)
    chatbot, conversation_id, title, context, _ = outputs[-1]
    answer = text_of(chatbot.value[-1]["content"])
    assert "Sources" in answer and "&#91;1&#93; facts\\.pdf, page 1" in answer
    assert "answered from" in context and "passage" in context and "the whole library" in context
    # The viewer lists the last grounded answer's sources, and the picker shows the chat's scope.
    picker, message_id, radio, line, page, image, save, accordion, evidence, evidence_view = (
        chat_app.conversation_sources(conversation_id))
    assert picker.value == SOURCES_ALL and evidence.interactive and accordion.open
    assert evidence_view.visible is False  # the evidence of an earlier question is put away
    assert radio.visible and radio.choices[0][1] == 1 and radio.choices[0][0].startswith("[1] facts.pdf, page 1")
    line, page, image, save = chat_app.show_source(message_id, 1)
    assert "facts\\.pdf, page 1" in line and save.interactive
    assert '<mark id="cited-passage">The capital of Zorbia is Quillton' in page.value
    assert image.visible and image.value is not None
    note_id_before = len(chat_app.workspace.notes("local"))
    chat_app.save_source_note(message_id, 1)
    [note] = chat_app.workspace.notes("local")[: len(chat_app.workspace.notes("local")) - note_id_before]
    assert note["body"].startswith("The capital of Zorbia") and note["source_document"] == "facts.pdf"


def test_sources_of_earlier_answers_come_back_when_a_chat_is_reopened(chat_app, facts_pdf):
    add(chat_app, [facts_pdf])
    conversation_id = ask(chat_app, "Are green bananas ripe?", SOURCES_ALL)[-1][1]
    view = chat_app.workspace.open("local", conversation_id)
    assert list(view.grounded) == [1] and view.grounded[1]["sources"][0]["filename"] == "facts.pdf"
    assert "facts\\.pdf" in view.messages[1]["content"]
    # Turning Sources off for the open chat is saved, and the next answer has none.
    assert chat_app.choose_sources(SOURCES_OFF, conversation_id).interactive is False
    assert chat_app.workspace.library.scope("local", conversation_id) is None
    ask(chat_app, "And ripe ones?", SOURCES_OFF, conversation_id)
    view = chat_app.workspace.open("local", conversation_id)
    assert list(view.grounded) == [1] and "Sources" not in view.messages[3]["content"]
    assert chat_app.conversation_sources(conversation_id)[0].value == SOURCES_OFF


def test_verified_and_unverified_citations_show_with_the_reason(chat_app, facts_pdf):
    add(chat_app, [facts_pdf])
    store = chat_app.workspace.store
    conversation_id = ask(chat_app, "What is the capital of Zorbia?", SOURCES_ALL)[-1][1]
    message_id = store.add_message(conversation_id, "assistant",
                                   'It is Quillton [1]. It says "Zorbia has no capital" [2]. See also [9].')
    passage = chat_app.workspace.library.search("local", "capital Zorbia")[0]
    row = {"chunk_id": passage.chunk_id, "document_id": passage.document_id, "filename": "facts.pdf", "page": 1,
           "char_start": passage.char_start, "char_end": passage.char_end, "text": passage.text}
    save_message_sources(store, message_id, [{**row, "n": 1, "cited": True, "verified": True},
                                             {**row, "n": 2, "cited": True, "verified": False},
                                             {**row, "n": 3, "cited": False, "verified": None}])
    view = chat_app.workspace.open("local", conversation_id)
    content = view.messages[-1]["content"]
    assert "&#91;1&#93; facts\\.pdf, page 1 · cited · verified" in content
    assert ("&#91;2&#93; facts\\.pdf, page 1 · cited · unverified &#40;the quoted text is not in source &#91;2&#93;&#41;"
            in content)
    assert "&#91;3&#93; facts\\.pdf, page 1 · not cited" in content


def test_evidence_ranks_passages_and_generates_and_saves_nothing(chat_app, facts_pdf):
    add(chat_app, [facts_pdf], collection="papers")
    before = chat_app.workspace.store.list_conversations("local")
    shown = chat_app.show_evidence("Which city is the capital of Zorbia?", COLLECTION_PREFIX + "papers")
    assert shown.visible and '<div class="passages"><div class="passage"><div class="where">[1] facts.pdf, page 1<' in shown.value
    assert "<mark>The capital of Zorbia is Quillton, a city of bridges.</mark>" in shown.value
    assert chat_app.workspace.store.list_conversations("local") == before
    with pytest.raises(gr.Error, match="choose Sources"):
        chat_app.show_evidence("capital?", SOURCES_OFF)
    with pytest.raises(gr.Error, match="no collection named 'nope'"):
        chat_app.show_evidence("capital?", COLLECTION_PREFIX + "nope")
    with pytest.raises(gr.Error, match="question is empty"):
        chat_app.show_evidence("  ", SOURCES_ALL)


def test_an_answer_without_sources_has_an_empty_viewer(chat_app):
    conversation_id = ask(chat_app, "Hello there", SOURCES_OFF)[-1][1]
    picker, message_id, radio, line, *_ = chat_app.conversation_sources(conversation_id)
    assert picker.value == SOURCES_OFF and message_id is None and radio.visible is False and line == NO_SOURCES
    picker, message_id, radio, line, *_, evidence_view = chat_app.conversation_sources(None)
    assert message_id is None and radio.visible is False and evidence_view.visible is False


def test_another_owners_documents_jobs_and_sources_answer_like_missing_ones(chat_app, facts_pdf):
    job_id = add(chat_app, [facts_pdf], request=ADA)[3]
    [document] = chat_app.workspace.library.documents("ada")
    conversation_id = ask(chat_app, "capital of Zorbia?", SOURCES_ALL, request=ADA)[-1][1]
    message_id = chat_app.conversation_sources(conversation_id, ADA)[1]
    assert table(chat_app, BOB) == [] and chat_app.show_library(None, BOB)[5] is None
    assert "No passage matches" in chat_app.search_library("Zorbia", BOB).value

    def refusal(call, *args) -> str:
        with pytest.raises(gr.Error) as caught:
            call(*args)
        return str(caught.value)

    missing = 10_000
    for call, mine, theirs in [
        (chat_app.delete_document, document["id"], missing),
        (chat_app.poll_job, job_id, missing),
        (chat_app.cancel_job, job_id, missing),
    ]:
        assert refusal(call, mine, BOB) == refusal(call, theirs, BOB).replace(str(theirs), str(mine))
    assert (refusal(chat_app.show_source, message_id, 1, BOB)
            == refusal(chat_app.show_source, missing, 1, BOB).replace(str(missing), str(message_id)))
    assert (refusal(chat_app.save_source_note, message_id, 1, BOB)
            == refusal(chat_app.save_source_note, missing, 1, BOB).replace(str(missing), str(message_id)))
    assert (refusal(chat_app.choose_sources, SOURCES_ALL, conversation_id, BOB)
            == refusal(chat_app.choose_sources, SOURCES_ALL, missing, BOB).replace(str(missing), str(conversation_id)))
    assert (refusal(chat_app.undo_delete_document, document["id"], BOB)
            == refusal(chat_app.undo_delete_document, missing, BOB).replace(str(missing), str(document["id"])))
    # Ada's things are untouched, and Bob's view of her answer has no sources.
    assert chat_app.workspace.library.document("ada", document["id"])["status"] == "ready"
    assert chat_app.workspace.answer_sources("bob", message_id) == []


def test_views_escape_document_text():
    assert mark("<b>x</b> & y", [(0, 8)]) == "<mark>&lt;b&gt;x&lt;/b&gt;</mark> &amp; y"
    html = page_html("a <script>alert(1)</script> b", 2, 29, "<img src=x onerror=alert(1)>.pdf, page 1")
    assert "<script>" not in html and "<img" not in html
    assert sources_markdown([]) == ""
    assert "\\[" not in sources_markdown([{"n": 1, "filename": "a.pdf", "page": 2, "cited": False}])  # not LaTeX
    assert "\\<" not in sources_markdown([{"n": 1, "filename": "<b>.pdf", "page": 2, "cited": False}])
    assert "&lt;b&gt;" in sources_markdown([{"n": 1, "filename": "<b>.pdf", "page": 2, "cited": False}])


def test_the_library_is_wired_to_the_page(chat_app):
    names = {fn.name for fn in chat_app.demo.fns.values()}
    assert {"show_library", "add_files", "poll_job", "cancel_job", "delete_document", "undo_delete_document",
            "search_library", "choose_sources", "show_source", "save_source_note", "show_evidence",
            "conversation_sources", "select_answer_sources"} <= names
    respond = next(fn for fn in chat_app.demo.fns.values() if fn.name == "respond")
    assert respond.inputs[-3] is chat_app.sources  # then this tab's model and device pickers
    # Gradio puts the request where respond declares it, and the Sources picker's value and the pickers after it.
    from gradio.helpers import special_args

    args = special_args(chat_app.respond, list(range(len(respond.inputs))), request=ADA)[0]
    assert args[-4] is ADA and args[-3:] == [len(respond.inputs) - 3, len(respond.inputs) - 2, len(respond.inputs) - 1]


def test_a_retry_of_a_grounded_answer_is_grounded_in_the_same_sources(chat_app, facts_pdf):
    add(chat_app, [facts_pdf], collection="papers")
    conversation_id = ask(chat_app, "What is the capital of Zorbia?", COLLECTION_PREFIX + "papers")[-1][1]
    ask(chat_app, "And its bridges?", None, conversation_id)  # None: the chat keeps its saved sources
    assert list(chat_app.workspace.open("local", conversation_id).grounded) == [1, 3]
    values = list(PARAMS.values())
    branch = list(chat_app.retry(conversation_id, StopSignal(), "", *values))[-1][1]
    assert branch != conversation_id
    assert chat_app.conversation_sources(branch)[0].value == COLLECTION_PREFIX + "papers"
    assert 3 in chat_app.workspace.open("local", branch).grounded


def test_clicking_an_answer_lists_its_sources_and_a_question_changes_nothing(chat_app, facts_pdf):
    add(chat_app, [facts_pdf])
    conversation_id = ask(chat_app, "What is the capital of Zorbia?", SOURCES_ALL)[-1][1]
    ask(chat_app, "Say hello", SOURCES_OFF, conversation_id)

    def click(index):
        return chat_app.select_answer_sources(conversation_id, gr.SelectData(None, {"index": index, "value": ""}))

    message_id, radio, line, *_ = click(1)
    assert message_id is not None and radio.visible and radio.choices[0][1] == 1
    message_id, radio, line, *_ = click(3)  # the later answer had Sources off
    assert message_id is None and radio.visible is False and line == NO_SOURCES
    assert all(isinstance(out, type(gr.skip())) for out in click(0))

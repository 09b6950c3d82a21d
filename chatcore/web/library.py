"""The Library tab's handlers, and the Chat tab's sources: upload and index files with progress, cancel,
list, search and delete documents (with Undo); choose the Sources of the next answer, see each answer's
sources, open one on its page, save it as a note, and ask for evidence without an answer.

A mixin of :class:`chatcore.web.app.ChatApp`. Every handler passes the page's owner to the workspace,
whose library checks ownership itself: another account's document, job or answer answers exactly like a
missing one.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from chatcore.web.handling import EXPECTED_ERRORS, enabled, event_index, owner, user_errors
from chatcore.web.views import (
    DOCUMENT_HEADERS,
    SOURCES_OFF,
    document_row,
    page_html,
    passages_html,
    plain,
    progress_html,
    refused_markdown,
    source_choices,
    source_label,
    source_state,
    source_value,
)
from chatcore.web.workspace import Workspace

NO_DOCUMENTS = ("**No documents yet.** Choose PDF, HTML, DOCX, Markdown or text files above and press "
                "**Add to library**; then pick them under *Sources* in the Chat tab.")
NO_SOURCES = "No sources: this answer was not grounded in the library. Choose *Sources* before you send."
NO_SOURCE_OPEN = "Click a source to see its passage on its page."
NO_RESULTS = "No passage matches this search."
NO_EVIDENCE = "No passage within these sources matches the question."
JOB_POLL_S = 1.0


class LibraryHandlers:
    """The Library tab, and the Sources picker, source viewer and Evidence button of the Chat tab."""

    workspace: Workspace
    owner = staticmethod(owner)

    # -- the documents ---------------------------------------------------------------------------

    def _documents(self, owner: str) -> tuple[gr.Dataframe, gr.Markdown, list[int]]:
        """The documents table (hidden when empty), its empty state, and the ids in table order."""
        documents = self.workspace.library.documents(owner)
        rows = [document_row(d) for d in documents]
        return (gr.Dataframe(value=rows, headers=DOCUMENT_HEADERS, visible=bool(rows)),
                gr.Markdown(NO_DOCUMENTS, visible=not rows), [d["id"] for d in documents])

    def _collections(self, owner: str, chosen: str | None = None) -> tuple[gr.Dropdown, gr.Dropdown]:
        """The Library tab's collection box and the Chat tab's Sources picker, with the owner's collections."""
        names = self.workspace.collection_names(owner)
        box = gr.Dropdown(choices=sorted({"default", *names}), **({"value": chosen} if chosen else {}))
        return box, gr.Dropdown(choices=source_choices(names))

    def _job(self, owner: str, job_id: int | None) -> tuple[Any, gr.HTML, gr.Button, gr.Timer]:
        """A job's id, its progress bar, Cancel (while it runs) and the timer that polls it (while it runs)."""
        if job_id is None:
            return None, gr.HTML("", visible=False), gr.Button(visible=False), gr.Timer(active=False)
        progress = self.workspace.library.job(owner, job_id)
        bar = progress_html(progress.fraction, progress.describe(), progress.status)
        running = not progress.finished
        return (job_id, gr.HTML(bar, visible=True), gr.Button(visible=running, interactive=running),
                gr.Timer(active=running))

    @user_errors
    def show_library(self, job_id: int | None, request: gr.Request = None) -> tuple:
        """The tab comes into view (or the page loads): documents, collections, and a running job's progress."""
        owner = self.owner(request)
        if job_id is None:  # a job started from another tab, or before a reload, still shows its progress
            active = self.workspace.library.active_jobs(owner)
            job_id = active[0].job_id if active else None
        try:
            job = self._job(owner, job_id)
        except EXPECTED_ERRORS:  # a job this page no longer knows
            job = self._job(owner, None)
        return (*self._documents(owner), *self._collections(owner), *job)

    @staticmethod
    def files_chosen(files: list[str] | None) -> gr.Button:
        """Add to library: enabled once files are chosen."""
        return enabled(bool(files))

    @user_errors
    def add_files(self, files: list[str] | None, collection: str, request: gr.Request = None) -> tuple:
        """Store the chosen files and index them in the background; refused ones are listed with their reasons."""
        owner = self.owner(request)
        job_id, outcomes = self.workspace.add_uploads(owner, list(files or []), collection)
        queued = sum(o.status in ("added", "requeued") for o in outcomes)
        if queued:
            gr.Info(f"Indexing {queued} file{'s' if queued != 1 else ''} in the background.")
        else:
            gr.Warning("Nothing new to index: see below why.")
        return (gr.File(value=None), enabled(False), refused_markdown(outcomes), *self._job(owner, job_id),
                *self._documents(owner), *self._collections(owner, (collection or "").strip() or "default"))

    @user_errors
    def poll_job(self, job_id: int | None, request: gr.Request = None) -> tuple:
        """The timer's tick: the job's bar; when it ends the table, collections and Sources picker too."""
        owner = self.owner(request)
        job = self._job(owner, job_id)
        return (*job, *self._documents(owner), *self._collections(owner))

    @user_errors
    def cancel_job(self, job_id: int | None, request: gr.Request = None) -> tuple:
        if job_id is None:
            raise gr.Error("No indexing job is running.")
        owner = self.owner(request)
        self.workspace.library.cancel_job(owner, job_id)
        gr.Info("Cancelled: files not yet indexed are left out (add them again to index them).")
        return (*self._job(owner, job_id), *self._documents(owner))

    def select_document(self, ids: list[int], event: gr.SelectData, request: gr.Request = None) -> tuple:
        """Clicking a row selects its document for Delete."""
        index = event_index(event)
        try:
            document = self.workspace.library.document(self.owner(request), ids[index])
        except (IndexError, TypeError, *EXPECTED_ERRORS):  # a stale table: nothing to select
            return None, "", enabled(False)
        return document["id"], "Selected: " + plain(document["filename"]), enabled(True)

    @user_errors
    def delete_document(self, document_id: int | None, request: gr.Request = None) -> tuple:
        if document_id is None:
            raise gr.Error("Click a document in the table first.")
        owner = self.owner(request)
        filename = self.workspace.library.document(owner, document_id)["filename"]
        self.workspace.library.delete(owner, document_id)
        gr.Info(f"Deleted {filename} from the library. Undo brings it back.")
        return (*self._documents(owner), None, "", enabled(False), document_id, gr.Button(visible=True))

    @user_errors
    def undo_delete_document(self, deleted_id: int | None, request: gr.Request = None) -> tuple:
        if deleted_id is None:
            raise gr.Error("Nothing to undo.")
        owner = self.owner(request)
        self.workspace.library.restore(owner, deleted_id)
        gr.Info("Restored.")
        return (*self._documents(owner), None, "", enabled(False), None, gr.Button(visible=False))

    @user_errors
    def search_library(self, query: str, request: gr.Request = None) -> gr.HTML:
        """The passages that best match ``query`` in the whole library, their best sentences marked."""
        if not (query or "").strip():
            return gr.HTML("", visible=False)
        found = self.workspace.library.evidence(self.owner(request), query, k=10)
        items = [(e.n, e.passage.filename, e.passage.page, e.passage.text, e.highlights) for e in found]
        return gr.HTML(passages_html(items, NO_RESULTS), visible=True)

    # -- the chat's sources ------------------------------------------------------------------------

    def _source_list(self, grounded: dict[str, Any] | None) -> tuple:
        """The source viewer for one answer: its message id, the list of its sources, and a cleared viewer."""
        cleared = (gr.HTML("", visible=False), gr.Image(value=None, visible=False), enabled(False))
        if not grounded:
            return (None, gr.Radio(choices=[], value=None, visible=False), NO_SOURCES, *cleared,
                    gr.Accordion(open=False))
        choices = [(f"{source_label(s)} · {source_state(s)}", s["n"]) for s in grounded["sources"]]
        return (grounded["message_id"], gr.Radio(choices=choices, value=None, visible=True), NO_SOURCE_OPEN,
                *cleared, gr.Accordion(open=True))

    @user_errors
    def conversation_sources(self, conversation_id: int | None, request: gr.Request = None) -> tuple:
        """A conversation opened: the Sources picker shows its scope, the viewer its last grounded answer, and the
        evidence of an earlier question is put away."""
        owner = self.owner(request)
        names = self.workspace.collection_names(owner)
        no_evidence = gr.HTML(value="", visible=False)
        if conversation_id is None:  # a new chat: the picker keeps its choice for the first message
            return (gr.Dropdown(choices=source_choices(names)), *self._source_list(None), gr.skip(), no_evidence)
        value = source_value(self.workspace.library.scope(owner, conversation_id))
        view = self.workspace.open(owner, conversation_id)
        return (gr.Dropdown(choices=source_choices(names), value=value), *self._source_list(view.last_grounded()),
                enabled(value != SOURCES_OFF), no_evidence)

    @user_errors
    def choose_sources(self, value: str | None, conversation_id: int | None, request: gr.Request = None) -> gr.Button:
        """The Sources picker changed: saved as the open conversation's scope; Evidence enabled unless Off."""
        self.workspace.set_sources(self.owner(request), conversation_id, value)
        return enabled(bool(value) and value != SOURCES_OFF)

    def select_answer_sources(self, conversation_id: int | None, event: gr.SelectData,
                              request: gr.Request = None) -> tuple:
        """Clicking an answer in the chat lists its sources in the viewer; clicking a question changes nothing."""
        index = event_index(event)
        try:
            view = self.workspace.open(self.owner(request), conversation_id)
        except EXPECTED_ERRORS:
            return self._source_list(None)
        if not 0 <= index < len(view.messages) or view.messages[index]["role"] != "assistant":
            return tuple(gr.skip() for _ in range(7))
        return self._source_list(view.grounded.get(index))

    @user_errors
    def show_source(self, message_id: int | None, n: int | None, request: gr.Request = None) -> tuple:
        """One source on its page: the page's text with the passage marked, and the PDF page as an image."""
        if n is None:
            return NO_SOURCE_OPEN, gr.HTML("", visible=False), gr.Image(value=None, visible=False), enabled(False)
        owner = self.owner(request)
        source = self.workspace.source(owner, message_id, n)
        where = f"[{source['n']}] {source['filename']}, page {source['page']} · {source_state(source)}"
        try:
            text = self.workspace.library.page_text(owner, source["document_id"], source["page"])
            shown = page_html(text, source["char_start"], source["char_end"], where)
            line = plain(where)
        except EXPECTED_ERRORS:  # deleted since: the passage the answer saw is still kept with it
            shown = page_html(source["text"], 0, len(source["text"]), where)
            line = plain(where) + " · the document is no longer in the library; this is the passage as it was"
        try:
            image = gr.Image(value=self.workspace.library.page_image(owner, source["document_id"], source["page"]),
                             visible=True, label=f"{source['filename']}, page {source['page']}")
        except EXPECTED_ERRORS:  # not a PDF, or gone: no page to draw
            image = gr.Image(value=None, visible=False)
        return line, gr.HTML(shown, visible=True), image, enabled(True)

    @user_errors
    def save_source_note(self, message_id: int | None, n: int | None, request: gr.Request = None) -> None:
        """Save the open source's passage as a note that keeps its file and page."""
        from chatcore.services.notes import save_passage_as_note

        if message_id is None or n is None:
            raise gr.Error("Click a source first.")
        note_id = save_passage_as_note(self.workspace.store, self.owner(request), message_id, int(n))
        gr.Info(f"Saved the passage as note {note_id}; find it in the Notes tab.")

    @user_errors
    def show_evidence(self, question: str, value: str | None, request: gr.Request = None) -> gr.HTML:
        """Evidence mode: the ranked passages for the typed question, best sentences marked; nothing is generated
        or saved."""
        found = self.workspace.evidence(self.owner(request), question, value)
        items = [(e.n, e.passage.filename, e.passage.page, e.passage.text, e.highlights) for e in found]
        return gr.HTML(passages_html(items, NO_EVIDENCE), visible=True)

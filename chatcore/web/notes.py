"""The Notes tab's handlers: list and search notes, write, edit, pin and delete them, open their source.

A mixin of :class:`chatcore.web.app.ChatApp`. The editor shows only while a note is open or being
written, and each of its buttons is enabled only when its action applies (``note_controls``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from chatcore.web.chat import chat_view
from chatcore.web.handling import EXPECTED_ERRORS, enabled, owner, user_errors
from chatcore.web.views import note_meta, plain
from chatcore.web.workspace import Workspace

NO_NOTES = ("**No notes yet.** Click an answer in the Chat tab and use *Save as note* under *Answer tools*, "
            "or write one here with **New note**.")
NO_MATCHES = "No note matches this search."
NEW_NOTE = "A new note: write it, then Save."


def note_controls(note: dict[str, Any] | None, conversation_id: int | None, drafting: bool = False) -> tuple:
    """The editor (shown while a note is open or written) and its Save, Open source conversation, Pin,
    Unpin and Delete buttons, each enabled only when it applies."""
    pinned = note is not None and conversation_id in (note.get("pinned_to") or [])
    can_pin = note is not None and conversation_id is not None
    return (gr.Column(visible=note is not None or drafting),
            enabled(note is not None or drafting),
            enabled(note is not None and note["source_message_id"] is not None and note["source_available"]),
            enabled(can_pin and not pinned),
            enabled(can_pin and pinned),
            enabled(note is not None))


class NotesHandlers:
    """The Notes tab."""

    workspace: Workspace
    export_dir: Path
    owner = staticmethod(owner)

    def _note_or_none(self, owner: str, note_id: int | None) -> dict[str, Any] | None:
        """The note, or ``None`` when none is open or it is gone (deleted in another tab)."""
        if note_id is None:
            return None
        try:
            return self.workspace.note(owner, note_id)
        except EXPECTED_ERRORS:
            return None

    @user_errors
    def list_notes(self, query: str, note_id: int | None, request: gr.Request = None) -> tuple:
        """The notes (or the search hits), an empty state when there are none, and Export while there are some."""
        owner = self.owner(request)
        choices = self.workspace.note_choices(owner, query)
        empty = NO_MATCHES if query.strip() else NO_NOTES
        exportable = bool(choices) or (bool(query.strip()) and bool(self.workspace.note_choices(owner)))
        return (gr.Radio(choices=choices, value=note_id if note_id in {i for _, i in choices} else None),
                gr.Markdown(value=empty, visible=not choices), enabled(exportable))

    @user_errors
    def show_notes(self, query: str, note_id: int | None, conversation_id: int | None,
                   request: gr.Request = None) -> tuple:
        """The tab comes into view: the list, and the open note's buttons for the chat open now."""
        listed = self.list_notes(query, note_id, request)
        if note_id is None:  # nothing open, or a new note being written: the editor stays as it is
            return (*listed, gr.skip(), *(gr.skip() for _ in range(6)))
        note = self._note_or_none(self.owner(request), note_id)
        meta = plain(note_meta(note, conversation_id)) if note is not None else ""
        return (*listed, meta, *note_controls(note, conversation_id))

    @user_errors
    def open_note(self, note_id: int | None, conversation_id: int | None, request: gr.Request = None) -> tuple:
        note = self.workspace.note(self.owner(request), note_id)
        return (note_id, note["title"], ", ".join(note["tags"]), note["body"], plain(note_meta(note, conversation_id)),
                *note_controls(note, conversation_id))

    def new_note(self, conversation_id: int | None) -> tuple:
        """An empty editor for a note written by hand; Save creates it."""
        return (None, "", "", "", NEW_NOTE, gr.Radio(value=None), *note_controls(None, conversation_id, drafting=True))

    @user_errors
    def save_edited_note(self, note_id: int | None, title: str, tags: str, body: str, query: str,
                         conversation_id: int | None, request: gr.Request = None) -> tuple:
        """Save the open note, or create the one being written."""
        owner = self.owner(request)
        if note_id is None:
            note_id = self.workspace.new_note(owner, title=title, body=body, tags=tags)
            gr.Info("Note created.")
        else:
            self.workspace.update_note(owner, note_id, title=title, body=body, tags=tags)
            gr.Info("Note saved.")
        note = self.workspace.note(owner, note_id)
        return (note_id, note["title"], *self.list_notes(query, note_id, request),
                plain(note_meta(note, conversation_id)), *note_controls(note, conversation_id))

    @user_errors
    def delete_note(self, note_id: int | None, query: str, conversation_id: int | None = None,
                    request: gr.Request = None) -> tuple:
        title = self.workspace.delete_note(self.owner(request), note_id)
        gr.Info(f"Deleted note “{title}”.")
        return (*self.list_notes(query, None, request), None, "", "", "", "", *note_controls(None, conversation_id))

    @user_errors
    def export_all_notes(self, request: gr.Request = None) -> gr.File:
        return gr.File(value=str(self.workspace.export_notes(self.owner(request), self.export_dir)), visible=True)

    @user_errors
    def open_note_source(self, note_id: int | None, query: str, request: gr.Request = None) -> tuple:
        """Open the conversation a note was saved from in the Chat tab."""
        owner = self.owner(request)
        conversation_id = self.workspace.note_source(owner, note_id)
        view = self.workspace.open(owner, conversation_id)
        return (*chat_view(view), gr.File(value=None, visible=False), plain(view.pinned),
                self.sidebar(owner, query, conversation_id), gr.Tabs(selected="chat"))

    @user_errors
    def pin_note(self, note_id: int | None, conversation_id: int | None, request: gr.Request = None,
                 pinned: bool = True) -> tuple:
        owner = self.owner(request)
        line = self.workspace.pin(owner, note_id, conversation_id, pinned)
        gr.Info("Pinned: the note goes with every answer in that chat." if pinned else "Unpinned.")
        note = self.workspace.note(owner, note_id)
        return (plain(line), plain(note_meta(note, conversation_id)), *note_controls(note, conversation_id))

    def unpin_note(self, note_id: int | None, conversation_id: int | None, request: gr.Request = None) -> tuple:
        return self.pin_note(note_id, conversation_id, request, pinned=False)

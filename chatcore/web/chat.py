"""The Chat tab's handlers: the sidebar, the chat and its streaming answers, templates and answer tools.

A mixin of :class:`chatcore.web.app.ChatApp` (which lays the page out and wires these to it); each
handler is a thin call into the ``Workspace`` and returns component updates in the order the wiring
lists its outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from chatcore.web.handling import EXPECTED_ERRORS, enabled, event_index, owner, user_errors
from chatcore.web.views import plain, preview, status_markdown, text_of
from chatcore.web.workspace import ChatView, StopSignal, Workspace

PARAM_NAMES = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")
# The template form's boxes; the built-in templates take at most 4 variables.
MAX_TEMPLATE_VARIABLES = 8
NO_ANSWER = "Click one of the answers (a saved one) to save it as a note, comment on its rating or re-run it."


def conversation_tools(conversation_id: int | None) -> tuple[gr.Button, ...]:
    """Rename, Delete, Export Markdown and Export JSON: enabled only while a saved conversation is open."""
    return tuple(enabled(conversation_id is not None) for _ in range(4))


def chat_view(view: ChatView) -> tuple:
    """A conversation's outputs: id, chat, title, context line, system prompt, then its tools."""
    chatbot = gr.Chatbot(value=view.messages, feedback_value=view.feedback)
    return (view.conversation_id, chatbot, view.title, view.context, view.system_prompt or "",
            *conversation_tools(view.conversation_id))


def param_values(*values: Any) -> dict[str, Any]:
    """The settings panel's values by name, in ``PARAM_NAMES`` order."""
    return dict(zip(PARAM_NAMES, values))


class ChatHandlers:
    """The sidebar, the chat, the model status, templates and the answer tools."""

    workspace: Workspace
    export_dir: Path
    owner = staticmethod(owner)

    def sidebar(self, owner: str, query: str = "", selected: int | None = None) -> gr.Radio:
        """The sidebar's conversations: the recent ones, or the hits for ``query``; ``selected`` marked."""
        choices = self.workspace.search(owner, query)  # a blank query lists the recent conversations
        value = selected if selected in {cid for _, cid in choices} else None
        return gr.Radio(choices=choices, value=value)

    def _status(self) -> tuple[str, gr.Timer]:
        status, loading = self.workspace.model_status()
        return status_markdown(status, loading), gr.Timer(active=loading)

    # -- the page and the model ----------------------------------------------------------------

    @user_errors
    def on_load(self, request: gr.Request = None) -> tuple:
        current = self.workspace.manager.settings
        model = gr.Dropdown(choices=self.workspace.model_choices(), value=current.model)
        devices = self.workspace.device_choices()
        device = gr.Dropdown(choices=devices if current.device in devices else [current.device, *devices],
                             value=current.device)
        return (self.sidebar(self.owner(request)), model, device, *self._status())

    def poll_status(self) -> tuple[str, gr.Timer]:
        return self._status()

    @user_errors
    def switch_model(self, model: str, device: str) -> tuple[str, gr.Timer]:
        self.workspace.switch_model(model, device)
        return self._status()

    # -- the sidebar ---------------------------------------------------------------------------

    def new_conversation(self) -> tuple:
        return (*chat_view(ChatView()), gr.Radio(value=None), gr.File(value=None, visible=False), "")

    @user_errors
    def open_conversation(self, conversation_id: int | None, request: gr.Request = None) -> tuple:
        view = self.workspace.open(self.owner(request), conversation_id)
        return (*chat_view(view), gr.File(value=None, visible=False), plain(view.pinned))

    @user_errors
    def search_conversations(self, query: str, conversation_id: int | None, request: gr.Request = None) -> gr.Radio:
        return self.sidebar(self.owner(request), query, conversation_id)

    @user_errors
    def rename_conversation(self, conversation_id: int | None, title: str, query: str,
                            request: gr.Request = None) -> gr.Radio:
        owner = self.owner(request)
        self.workspace.rename(owner, conversation_id, title)
        return self.sidebar(owner, query, conversation_id)

    @user_errors
    def delete_conversation(self, conversation_id: int | None, query: str, request: gr.Request = None) -> tuple:
        owner = self.owner(request)
        title = self.workspace.delete(owner, conversation_id)
        gr.Info(f"Deleted “{title}”. Undo brings it back.")
        return (*chat_view(ChatView()), self.sidebar(owner, query), conversation_id, gr.Button(visible=True), "")

    @user_errors
    def undo_delete(self, deleted_id: int | None, query: str, request: gr.Request = None) -> tuple:
        if deleted_id is None:
            raise gr.Error("Nothing to undo.")
        owner = self.owner(request)
        self.workspace.restore(owner, deleted_id)
        view = self.workspace.open(owner, deleted_id)
        return (*chat_view(view), self.sidebar(owner, query, deleted_id), None, gr.Button(visible=False),
                plain(view.pinned))

    @user_errors
    def export(self, conversation_id: int | None, fmt: str, request: gr.Request = None) -> gr.File:
        path = self.workspace.export(self.owner(request), conversation_id, fmt, self.export_dir)
        return gr.File(value=str(path), visible=True)

    def export_markdown(self, conversation_id: int | None, request: gr.Request = None) -> gr.File:
        return self.export(conversation_id, "markdown", request)

    def export_json_file(self, conversation_id: int | None, request: gr.Request = None) -> gr.File:
        return self.export(conversation_id, "json", request)

    # -- the chat ------------------------------------------------------------------------------

    @user_errors
    def accept(self, text: str, chatbot: list, stop_signal: StopSignal, temperature: float, top_p: float,
               top_k: float, max_new_tokens: float, repetition_penalty: float, seed: str) -> tuple:
        """Check the message and settings, then show the question at once."""
        self.workspace.check_send(text, **param_values(temperature, top_p, top_k, max_new_tokens,
                                                       repetition_penalty, seed))
        stop_signal.clear()
        shown = [*chatbot, {"role": "user", "content": text}]
        return "", shown, text, gr.Button(visible=False), gr.Button(visible=True)

    @user_errors
    def begin(self, stop_signal: StopSignal) -> tuple:
        """Before a retry or an edit: the model must be there; show Stop."""
        self.workspace.manager.get()
        stop_signal.clear()
        return gr.Button(visible=False), gr.Button(visible=True)

    @user_errors
    def begin_edit(self, chatbot: list, stop_signal: StopSignal, event: gr.EditData) -> tuple:
        """An edited question: keep the chat up to it, remember what to ask, show Stop."""
        self.workspace.manager.get()
        index = event_index(event)
        text = text_of(event.value)
        stop_signal.clear()
        shown = [*chatbot[:index], {"role": "user", "content": text}]
        return shown, {"index": index, "text": text}, gr.Button(visible=False), gr.Button(visible=True)

    @user_errors
    def respond(self, text: str, conversation_id: int | None, stop_signal: StopSignal, system: str,
                temperature: float, top_p: float, top_k: float, max_new_tokens: float,
                repetition_penalty: float, seed: str, request: gr.Request = None,
                sources: str | None = None) -> Iterator[tuple]:
        """Answer ``text``; ``sources`` (the Sources picker) grounds it in the library, ``None`` keeps the chat's.

        ``sources`` comes after ``request``: Gradio puts the request where it is declared and the inputs in
        order around it, and callers that pass the request by position keep working.
        """
        owner = self.owner(request)
        params = self.workspace.params(**param_values(temperature, top_p, top_k, max_new_tokens,
                                                      repetition_penalty, seed))
        views = self.workspace.send(owner, conversation_id, text, params, system=system, cancel=stop_signal,
                                    sources=sources)
        yield from self._stream(owner, views, conversation_id, unsent=text)

    @user_errors
    def retry(self, conversation_id: int | None, stop_signal: StopSignal, system: str, temperature: float,
              top_p: float, top_k: float, max_new_tokens: float, repetition_penalty: float, seed: str,
              request: gr.Request = None) -> Iterator[tuple]:
        if conversation_id is None:
            raise gr.Error("Open a saved conversation to retry.")
        owner = self.owner(request)
        params = self.workspace.params(**param_values(temperature, top_p, top_k, max_new_tokens,
                                                      repetition_penalty, seed))
        views = self.workspace.retry(owner, conversation_id, params, system=system, cancel=stop_signal)
        gr.Info("Retrying as a new branch; the earlier answer stays in the original conversation.")
        yield from self._stream(owner, views, conversation_id)

    @user_errors
    def edit(self, pending: dict, conversation_id: int | None, stop_signal: StopSignal, system: str,
             temperature: float, top_p: float, top_k: float, max_new_tokens: float, repetition_penalty: float,
             seed: str, request: gr.Request = None) -> Iterator[tuple]:
        if conversation_id is None:
            raise gr.Error("Open a saved conversation to edit it.")
        owner = self.owner(request)
        params = self.workspace.params(**param_values(temperature, top_p, top_k, max_new_tokens,
                                                      repetition_penalty, seed))
        views = self.workspace.edit(owner, conversation_id, pending["index"], pending["text"], params,
                                    system=system, cancel=stop_signal)
        gr.Info("Asking again from the edited message, as a new branch.")
        yield from self._stream(owner, views, conversation_id)

    def _stream(self, owner: str, views: Iterator[ChatView], conversation_id: int | None,
                unsent: str | None = None) -> Iterator[tuple]:
        """Chat updates as the answer grows. On an error the chat shows what was saved, and a question
        that was refused before it was saved goes back into the message box, so nothing typed is lost."""
        last: ChatView | None = None
        try:
            for view in views:
                last = view
                yield view.messages, view.conversation_id, view.title, view.context, gr.skip()
        except EXPECTED_ERRORS:
            saved_id = last.conversation_id if last is not None else None
            saved = self.workspace.open(owner, saved_id if saved_id is not None else conversation_id)
            restore = unsent if saved_id is None and unsent is not None else gr.skip()
            yield (gr.Chatbot(value=saved.messages, feedback_value=saved.feedback), saved.conversation_id,
                   saved.title, saved.context, restore)
            raise
        if last is not None:
            yield (gr.Chatbot(value=last.messages, feedback_value=last.feedback), last.conversation_id, last.title,
                   last.context, gr.skip())

    def finish(self, conversation_id: int | None, query: str, request: gr.Request = None) -> tuple:
        """An answer ended: Send back, the sidebar updated, the conversation's tools enabled."""
        return (gr.Button(visible=True), gr.Button(visible=False),
                self.sidebar(self.owner(request), query, conversation_id), *conversation_tools(conversation_id))

    @staticmethod
    def stop_generation(stop_signal: StopSignal) -> None:
        stop_signal.set()

    @user_errors
    def rate(self, conversation_id: int | None, event: gr.LikeData, request: gr.Request = None) -> None:
        self.workspace.rate(self.owner(request), conversation_id, event_index(event), event.liked)

    # -- templates -----------------------------------------------------------------------------

    @user_errors
    def load_templates(self) -> gr.Dropdown:
        return gr.Dropdown(choices=[(f"{t.name}: {t.description}", t.name) for t in self.workspace.templates()])

    @user_errors
    def choose_template(self, name: str | None) -> tuple:
        """The template's form: one box per variable (its description as help), the rest hidden; Use
        enabled once a template is chosen."""
        if not name:
            hidden = (gr.Textbox(visible=False, value="") for _ in range(MAX_TEMPLATE_VARIABLES))
            return ("", [], enabled(False), *hidden)
        template = self.workspace.template(name)
        names = list(template.variables)[:MAX_TEMPLATE_VARIABLES]
        about = plain(template.description)
        if len(template.variables) > MAX_TEMPLATE_VARIABLES:
            about += (f" (only the first {MAX_TEMPLATE_VARIABLES} variables fit this form; "
                      "use `chatcore ask --template`)")
        boxes = []
        for i in range(MAX_TEMPLATE_VARIABLES):
            if i >= len(names):
                boxes.append(gr.Textbox(visible=False, value=""))
                continue
            variable = template.variables[names[i]]
            label = names[i] + (" (required)" if variable.required else "")
            boxes.append(gr.Textbox(visible=True, value="", label=label, info=variable.description,
                                    placeholder=variable.default or ""))
        return (about, names, enabled(True), *boxes)

    @user_errors
    def apply_template(self, name: str | None, names: list[str], *values: str) -> tuple:
        """Fill the chosen template into the message box; its system prompt and settings into the panel."""
        if not name:
            raise gr.Error("Choose a template first.")
        rendered = self.workspace.use_template(name, dict(zip(names, values)))
        settings = [rendered.settings.get(key, gr.skip()) for key in PARAM_NAMES[:-1]]
        gr.Info(f"Template “{name}” is in the message box; its settings are applied. Send when ready.")
        return (rendered.text, rendered.system or "", *settings)

    # -- answer tools --------------------------------------------------------------------------

    def select_answer(self, conversation_id: int | None, event: gr.SelectData, request: gr.Request = None) -> tuple:
        """Clicking an answer makes it the one the answer tools work on (and enables them); clicking a
        question does nothing."""
        index = event_index(event)
        try:
            answer = self.workspace.answer(self.owner(request), conversation_id, index)
        except EXPECTED_ERRORS:
            return (gr.skip(), NO_ANSWER, *(gr.skip() for _ in range(9)))
        selected = {"conversation_id": conversation_id, "index": index}
        return (selected, "Selected answer: " + plain(preview(answer["content"])), answer["content"], "",
                answer.get("rating_comment") or "", gr.Accordion(open=True), "", gr.Textbox(value="", visible=False),
                enabled(True), enabled(True), enabled(True))

    @user_errors
    def save_answer_note(self, selected: dict | None, text: str, title: str, tags: str,
                         request: gr.Request = None) -> tuple:
        selected = selected or {}
        note_id = self.workspace.save_note(self.owner(request), selected.get("conversation_id"),
                                           selected.get("index"), text, title=title, tags=tags)
        gr.Info(f"Saved as note {note_id}; find it in the Notes tab.")
        return "", ""

    @user_errors
    def save_rating_comment(self, selected: dict | None, comment: str, request: gr.Request = None) -> None:
        selected = selected or {}
        self.workspace.comment(self.owner(request), selected.get("conversation_id"), selected.get("index"), comment)
        gr.Info("Comment saved with the answer's rating.")

    @user_errors
    def rerun_answer(self, selected: dict | None, request: gr.Request = None) -> tuple:
        selected = selected or {}
        text, identical = self.workspace.rerun(self.owner(request), selected.get("conversation_id"),
                                               selected.get("index"))
        verdict = ("**Identical**: the same settings and seed gave the same answer." if identical else
                   "**Different** from the saved answer (another model, device or precision, or a "
                   "non-deterministic kernel).")
        return verdict, gr.Textbox(value=text, visible=True)

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

    def _status(self, spec: str | None = None) -> tuple[str, gr.Timer]:
        status, loading = self.workspace.model_status(spec)
        return status_markdown(status, loading), gr.Timer(active=loading)

    def _spec(self, model: str | None, device: str | None) -> str | None:
        """The spec this tab's pickers stand for; ``None`` from a caller without pickers (the chat's own)."""
        if model is None and device is None:
            return None
        return self.workspace.model_spec(model, device)

    # -- the page and the model ----------------------------------------------------------------
    # The model and device pickers are this tab's own (Gradio keeps each session's values): each send, retry
    # and edit passes them, so choosing a model in one tab changes nothing for other tabs or users.

    @user_errors
    def on_load(self, request: gr.Request = None) -> tuple:
        """The sidebar, and the pickers at the model this user chose last (loading it), or the default."""
        owner = self.owner(request)
        spec = self.workspace.user_model(owner)
        if spec != "default":
            self.workspace.manager.load(spec)
        value, device_value = self.workspace.picker_values(spec)
        choices = self.workspace.model_choices()
        if value not in [v for _, v in choices]:
            choices.append((value, value))
        devices = self.workspace.device_choices()
        model = gr.Dropdown(choices=choices, value=value)
        device = gr.Dropdown(choices=devices if device_value in devices else [device_value, *devices],
                             value=device_value)
        return (self.sidebar(owner), model, device, *self._status(None if spec == "default" else spec))

    def poll_status(self, model: str | None = None, device: str | None = None) -> tuple[str, gr.Timer]:
        """The status of this tab's model (the default's without pickers)."""
        try:
            spec = self._spec(model, device)
        except EXPECTED_ERRORS:  # a half-typed spec in the picker: the default's line until it is chosen
            spec = None
        return self._status(None if spec == "default" else spec)

    @user_errors
    def switch_model(self, model: str, device: str, request: gr.Request = None) -> tuple[str, gr.Timer]:
        """This tab's (and this user's next sessions') model: loads it in the background; others keep theirs."""
        spec, _ = self.workspace.choose_model(self.owner(request), model, device)
        return self._status(None if spec == "default" else spec)

    @user_errors
    def conversation_model(self, conversation_id: int | None, request: gr.Request = None) -> tuple:
        """An opened conversation selects the model it was answered by (nothing changes if it does not say)."""
        spec = self.workspace.conversation_model(self.owner(request), conversation_id)
        if spec is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        value, device = self.workspace.picker_values(spec)
        return (value, device, *self._status(None if spec == "default" else spec))

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
               top_k: float, max_new_tokens: float, repetition_penalty: float, seed: str,
               model: str | None = None, device: str | None = None) -> tuple:
        """Check the message, the settings and this tab's model (loading it if needed), then show the question."""
        self.workspace.check_send(text, self._spec(model, device),
                                  **param_values(temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed))
        stop_signal.clear()
        shown = [*chatbot, {"role": "user", "content": text}]
        return "", shown, text, gr.Button(visible=False), gr.Button(visible=True)

    @user_errors
    def begin(self, stop_signal: StopSignal, model: str | None = None, device: str | None = None) -> tuple:
        """Before a retry or an edit: the model must be there; show Stop."""
        self.workspace.manager.get(self._spec(model, device))
        stop_signal.clear()
        return gr.Button(visible=False), gr.Button(visible=True)

    @user_errors
    def begin_edit(self, chatbot: list, stop_signal: StopSignal, event: gr.EditData, model: str | None = None,
                   device: str | None = None) -> tuple:
        """An edited question: keep the chat up to it, remember what to ask, show Stop."""
        self.workspace.manager.get(self._spec(model, device))
        index = event_index(event)
        text = text_of(event.value)
        stop_signal.clear()
        shown = [*chatbot[:index], {"role": "user", "content": text}]
        return shown, {"index": index, "text": text}, gr.Button(visible=False), gr.Button(visible=True)

    @user_errors
    def respond(self, text: str, conversation_id: int | None, stop_signal: StopSignal, system: str,
                temperature: float, top_p: float, top_k: float, max_new_tokens: float,
                repetition_penalty: float, seed: str, request: gr.Request = None,
                sources: str | None = None, model: str | None = None, device: str | None = None) -> Iterator[tuple]:
        """Answer ``text``; ``sources`` (the Sources picker) grounds it in the library, ``None`` keeps the chat's;
        ``model`` and ``device`` (this tab's pickers) choose the model, ``None`` the conversation's own.

        ``sources`` comes after ``request``: Gradio puts the request where it is declared and the inputs in
        order around it, and callers that pass the request by position keep working.
        """
        owner = self.owner(request)
        spec = self._spec(model, device)
        params = self.workspace.params(spec, **param_values(temperature, top_p, top_k, max_new_tokens,
                                                            repetition_penalty, seed))
        views = self.workspace.send(owner, conversation_id, text, params, system=system, cancel=stop_signal,
                                    sources=sources, model=spec)
        yield from self._stream(owner, views, conversation_id, unsent=text)

    @user_errors
    def retry(self, conversation_id: int | None, stop_signal: StopSignal, system: str, temperature: float,
              top_p: float, top_k: float, max_new_tokens: float, repetition_penalty: float, seed: str,
              request: gr.Request = None, model: str | None = None, device: str | None = None) -> Iterator[tuple]:
        if conversation_id is None:
            raise gr.Error("Open a saved conversation to retry.")
        owner = self.owner(request)
        spec = self._spec(model, device)
        params = self.workspace.params(spec, **param_values(temperature, top_p, top_k, max_new_tokens,
                                                            repetition_penalty, seed))
        views = self.workspace.retry(owner, conversation_id, params, system=system, cancel=stop_signal, model=spec)
        gr.Info("Retrying as a new branch; the earlier answer stays in the original conversation.")
        yield from self._stream(owner, views, conversation_id)

    @user_errors
    def edit(self, pending: dict, conversation_id: int | None, stop_signal: StopSignal, system: str,
             temperature: float, top_p: float, top_k: float, max_new_tokens: float, repetition_penalty: float,
             seed: str, request: gr.Request = None, model: str | None = None,
             device: str | None = None) -> Iterator[tuple]:
        if conversation_id is None:
            raise gr.Error("Open a saved conversation to edit it.")
        owner = self.owner(request)
        spec = self._spec(model, device)
        params = self.workspace.params(spec, **param_values(temperature, top_p, top_k, max_new_tokens,
                                                            repetition_penalty, seed))
        views = self.workspace.edit(owner, conversation_id, pending["index"], pending["text"], params,
                                    system=system, cancel=stop_signal, model=spec)
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

"""ChatCore's page: layout and event wiring only; what happens lives in ``chatcore.web.workspace``, and
``chatcore.web.server`` serves it."""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from chatcore.core.errors import ChatCoreError
from chatcore.core.params import GenerationParams
from chatcore.core.settings import DEFAULT_CONCURRENCY
from chatcore.web.workspace import ChatView, StopSignal, Workspace, model_label
from storage import LOCAL_OWNER

# Events waiting for a turn; past this a browser is told the queue is full at once instead of waiting on
# an ever longer line (Gradio answers the join with 503 and the page shows "Queue is full").
MAX_QUEUE = 64
STATUS_POLL_S = 1.0
# The quick events (all but generating). Gradio shows a handler's gr.Error only for a queued event (an
# unqueued one just marks its outputs "Error", without the message, and CSS hides that mark), so a
# handler that can refuse (_user_errors) is queued, with no concurrency limit so that it never waits
# behind an answer. The others stay out of the queue: Stop and an answer's end must get through even
# when it is full.
REFUSABLE_EVENT = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}
UNQUEUED_EVENT = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "$", "right": "$", "display": False},
]
# The template form's boxes; the built-in templates take at most 4 variables.
MAX_TEMPLATE_VARIABLES = 8
PARAM_NAMES = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")
# Nothing in a message may reach another host: no remote images (tracking pixels), frames or forms.
HEAD = (
    "<meta http-equiv=\"Content-Security-Policy\" content=\"img-src 'self' data: blob:; media-src 'self' data: blob:; "
    "frame-src 'none'; object-src 'none'; form-action 'self'; base-uri 'self'\">"
)
CSS = """
#chat-title textarea, #chat-title input { font-size: 1.15rem; font-weight: 600; }
#conversations { max-height: calc(100vh - 330px); overflow-y: auto; }
#conversations label { width: 100%; }
#model-status, #context-line { font-size: 0.85rem; opacity: 0.85; }
.message sub { opacity: 0.7; }
/* A refused action leaves the page as it was, and its toast says why. Gradio also covers each of the
   event's outputs with an "Error" badge on white: a refused message hid the whole conversation. */
.wrap:has(> .error) { display: none !important; }
"""


def _user_errors(handler: Callable) -> Callable:
    """Errors a user can act on (bad settings, model loading, a deleted conversation) become Gradio messages."""

    def convert(exc: Exception) -> gr.Error:
        return gr.Error(str(exc), title="ChatCore")

    if _is_generator(handler):
        @functools.wraps(handler)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from handler(*args, **kwargs)
            except _EXPECTED as exc:
                raise convert(exc) from exc
        return stream

    @functools.wraps(handler)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except _EXPECTED as exc:
            raise convert(exc) from exc
    return call


def _is_generator(fn: Callable) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


def _expected_errors() -> tuple[type[Exception], ...]:
    from storage import StorageError

    return (ChatCoreError, StorageError)


_EXPECTED = _expected_errors()


def _text_of(content: Any) -> str:
    """The text of a chat message's content, which Gradio may hand over as a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return "".join(_text_of(part) for part in content)
    return str(content)


def _event_index(event: Any) -> int:
    """The chat message an event (like, select, edit) is about; Gradio may send ``[row, column]``."""
    return int(event.index[0] if isinstance(event.index, (list, tuple)) else event.index)


def _plain(text: str) -> str:
    """Text shown inside Markdown exactly as written: no markup, no HTML."""
    import html

    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", html.escape(text, quote=False))


class ChatApp:
    """The page: a sidebar of conversations, the chat, and a settings panel."""

    def __init__(self, workspace: Workspace, *, concurrency_limit: int = DEFAULT_CONCURRENCY) -> None:
        self.workspace = workspace
        self.concurrency_limit = concurrency_limit
        self.export_dir = Path(tempfile.mkdtemp(prefix="chatcore-export-"))
        with gr.Blocks(title="ChatCore", fill_height=True, analytics_enabled=False) as self.demo:
            self._render_state()
            self._render_sidebar()
            self._render_settings()
            with gr.Column(scale=1), gr.Tabs(selected="chat") as self.tabs:
                with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
                    self._render_chat()
                    self._render_templates()
                    self._render_answer_tools()
                with gr.Tab("Notes", id="notes", elem_id="notes-tab") as self.notes_tab:
                    self._render_notes()
                with gr.Tab("Stats", id="stats", elem_id="stats-tab") as self.stats_tab:
                    self._render_stats()
            self._wire_events()
            self._wire_research()

    # -- layout --------------------------------------------------------------------------------

    def _render_state(self) -> None:
        self.conversation_id = gr.State(None)  # the open conversation, per browser tab
        self.pending = gr.State("")  # the message being answered
        self.stop_signal = gr.State(StopSignal)  # a fresh one per tab
        self.deleted_id = gr.State(None)  # for Undo
        self.selected = gr.State(None)  # the answer clicked in the chat: {"conversation_id", "index"}
        self.note_id = gr.State(None)  # the note open in the Notes tab
        self.template_variables = gr.State([])  # the names the template form's boxes stand for, in order
        self.status_timer = gr.Timer(STATUS_POLL_S, active=True)

    def _render_sidebar(self) -> None:
        with gr.Sidebar(label="Conversations", open=True, width=300, elem_id="history-panel"):
            gr.Markdown("### ChatCore")
            self.new_chat = gr.Button("＋ New chat", variant="primary", size="sm")
            self.search = gr.Textbox(placeholder="Search all messages…", show_label=False, container=False,
                                     elem_id="search", max_lines=1)
            self.conversations = gr.Radio(choices=[], show_label=False, container=False, elem_id="conversations")
            self.undo = gr.Button("Undo delete", size="sm", visible=False)

    def _render_chat(self) -> None:
        with gr.Row(equal_height=True):
            self.title = gr.Textbox(placeholder="New chat", show_label=False, container=False, scale=6,
                                    elem_id="chat-title", max_lines=1, info=None)
            self.rename = gr.Button("Rename", size="sm", scale=0, min_width=80)
            self.delete = gr.Button("Delete", size="sm", variant="stop", scale=0, min_width=80)
            self.export_md = gr.Button("⤓ Markdown", size="sm", scale=0, min_width=100)
            self.export_json = gr.Button("⤓ JSON", size="sm", scale=0, min_width=80)
        self.export_file = gr.File(label="Export", visible=False, interactive=False)
        self.chatbot = gr.Chatbot(
            elem_id="chatbot", show_label=False, scale=1, height="65vh", layout="panel",
            sanitize_html=True, render_markdown=True, latex_delimiters=LATEX, editable="user",
            buttons=["copy", "copy_all"], feedback_options=("Like", "Dislike"),
            placeholder="Ask anything. Answers stream from the local model; every chat is saved.",
        )
        with gr.Row(equal_height=True):
            self.message = gr.Textbox(placeholder="Message ChatCore (Enter sends, Shift+Enter for a new line)",
                                      show_label=False, container=False, scale=8, lines=1, max_lines=10,
                                      elem_id="message", autofocus=True)
            self.send = gr.Button("Send", variant="primary", scale=0, min_width=90, elem_id="send")
            self.stop = gr.Button("■ Stop", variant="stop", scale=0, min_width=90, visible=False, elem_id="stop")
        with gr.Row():
            self.context = gr.Markdown("", elem_id="context-line")
            self.pinned = gr.Markdown("", elem_id="pinned-line")
            self.status = gr.Markdown("", elem_id="model-status")

    def _render_settings(self) -> None:
        defaults = GenerationParams()
        with gr.Sidebar(label="Settings", open=False, position="right", width=320, elem_id="settings-panel"):
            gr.Markdown("### Settings\nApplied to the next message and saved with it.")
            self.model = gr.Dropdown(label="Model", choices=[], allow_custom_value=True, elem_id="model-picker")
            self.device = gr.Dropdown(label="Device", choices=["auto"], value="auto", elem_id="device-picker")
            self.temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature",
                                         info="0 is greedy (deterministic)")
            self.top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p")
            self.top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top-k", info="0 turns it off")
            self.max_new_tokens = gr.Slider(16, 4096, value=defaults.max_new_tokens, step=16, label="Max new tokens",
                                            elem_id="max-new-tokens")
            self.repetition_penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.01,
                                                label="Repetition penalty", info="1 is off")
            self.seed = gr.Textbox(label="Seed", placeholder="random", max_lines=1, elem_id="seed",
                                   info="Blank draws a fresh seed; the one used is shown under each answer")
            self.system = gr.Textbox(label="System prompt", lines=4, max_lines=12, placeholder="None")

    def _render_templates(self) -> None:
        with gr.Accordion("Research templates", open=False, elem_id="templates"):
            with gr.Row(equal_height=True):
                self.template = gr.Dropdown(label="Template", choices=[], value=None, scale=4,
                                            elem_id="template-picker")
                self.use_template = gr.Button("Use", variant="primary", scale=0, min_width=90, elem_id="use-template")
            self.template_about = gr.Markdown("", elem_id="template-about")
            self.template_fields = [
                gr.Textbox(visible=False, lines=1, max_lines=8, elem_id=f"template-var-{i}")
                for i in range(MAX_TEMPLATE_VARIABLES)
            ]

    def _render_answer_tools(self) -> None:
        with gr.Accordion("Answer tools: click an answer in the chat", open=False,
                          elem_id="answer-tools") as self.tools:
            self.selected_line = gr.Markdown("No answer selected.", elem_id="selected-answer")
            self.note_text = gr.Textbox(label="Note text (trim it to the part you want to keep)", lines=4,
                                        max_lines=12, elem_id="note-text")
            with gr.Row(equal_height=True):
                self.note_title = gr.Textbox(label="Title", placeholder="from its first line", max_lines=1, scale=3,
                                             elem_id="note-title")
                self.note_tags = gr.Textbox(label="Tags", placeholder="comma, separated", max_lines=1, scale=2,
                                            elem_id="note-tags")
                self.save_note = gr.Button("Save as note", variant="primary", scale=0, min_width=120,
                                           elem_id="save-note")
            with gr.Row(equal_height=True):
                self.rating_comment = gr.Textbox(label="Comment on your 👍/👎 rating", max_lines=3, scale=4,
                                                 elem_id="rating-comment")
                self.save_comment = gr.Button("Save comment", scale=0, min_width=120, elem_id="save-comment")
            with gr.Row(equal_height=True):
                self.rerun = gr.Button("Re-run with the same settings", scale=0, min_width=220, elem_id="rerun")
                self.rerun_verdict = gr.Markdown("", elem_id="rerun-verdict")
            self.rerun_text = gr.Textbox(label="Re-run answer", interactive=False, visible=False, lines=3,
                                         max_lines=12, elem_id="rerun-text")

    def _render_notes(self) -> None:
        with gr.Row(equal_height=True):
            self.notes_search = gr.Textbox(placeholder="Search notes…", show_label=False, container=False, scale=6,
                                           max_lines=1, elem_id="notes-search")
            self.export_notes = gr.Button("⤓ All notes as Markdown", size="sm", scale=0, min_width=180,
                                          elem_id="export-notes")
        self.notes_file = gr.File(label="Notes export", visible=False, interactive=False)
        with gr.Row():
            with gr.Column(scale=2):
                self.notes_list = gr.Radio(choices=[], show_label=False, container=False, elem_id="notes-list")
            with gr.Column(scale=3):
                self.note_edit_title = gr.Textbox(label="Title", max_lines=1, elem_id="note-edit-title")
                self.note_edit_tags = gr.Textbox(label="Tags", placeholder="comma, separated", max_lines=1,
                                                 elem_id="note-edit-tags")
                self.note_edit_body = gr.Textbox(label="Note", lines=10, max_lines=30, elem_id="note-edit-body")
                self.note_meta = gr.Markdown("", elem_id="note-meta")
                with gr.Row():
                    self.note_save = gr.Button("Save", variant="primary", size="sm", elem_id="note-save")
                    self.note_open = gr.Button("Open source conversation", size="sm", elem_id="note-open-source")
                    self.note_pin = gr.Button("📌 Pin to open chat", size="sm", elem_id="note-pin")
                    self.note_unpin = gr.Button("Unpin", size="sm", elem_id="note-unpin")
                    self.note_delete = gr.Button("Delete", variant="stop", size="sm", elem_id="note-delete")

    def _render_stats(self) -> None:
        self.stats_refresh = gr.Button("Refresh", size="sm", elem_id="stats-refresh")
        # Bars for counts (a single day still shows), a line for ratings over time; every y axis from 0.
        self.messages_plot = gr.BarPlot(x="day", y="messages", color="role", title="Messages per day",
                                        y_lim=[0, None], elem_id="messages-plot")
        self.ratings_plot = gr.LinePlot(x="day", y="answers", color="rating", title="Rated answers per day",
                                        y_lim=[0, None], elem_id="ratings-plot")
        self.speed_plot = gr.BarPlot(x="model", y="tokens_per_s", title="Decoding speed by model (mean tokens/s)",
                                     y_lim=[0, None], elem_id="speed-plot")

    @property
    def _params(self) -> list[gr.components.Component]:
        return [self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.repetition_penalty, self.seed]

    # -- wiring --------------------------------------------------------------------------------

    def _wire_events(self) -> None:
        # Every event is the page's own, not an API (that is /v1): kept out of the API page and the Gradio
        # clients. Defense in depth only: the browser can still call them, so each handler checks ownership.
        view = [self.conversation_id, self.chatbot, self.title, self.context, self.system]
        self.demo.load(self.on_load, None, [self.conversations, self.model, self.device, self.status,
                                            self.status_timer], **REFUSABLE_EVENT)
        self.status_timer.tick(self.poll_status, None, [self.status, self.status_timer], **UNQUEUED_EVENT)

        # Sidebar: cheap database reads and writes, never waiting behind an answer.
        for trigger in (self.new_chat.click, self.chatbot.clear):  # the chat's own Clear starts a new chat too
            trigger(self.new_conversation, None, [*view, self.conversations, self.export_file, self.pinned],
                    **UNQUEUED_EVENT)
        self.conversations.input(self.open_conversation, [self.conversations],
                                 [*view, self.export_file, self.pinned], **REFUSABLE_EVENT)
        self.search.change(self.search_conversations, [self.search, self.conversation_id], [self.conversations],
                           **REFUSABLE_EVENT)
        for trigger in (self.title.submit, self.rename.click):
            trigger(self.rename_conversation, [self.conversation_id, self.title, self.search],
                    [self.conversations], **REFUSABLE_EVENT)
        self.delete.click(self.delete_conversation, [self.conversation_id, self.search],
                          [*view, self.conversations, self.deleted_id, self.undo, self.pinned], **REFUSABLE_EVENT)
        self.undo.click(self.undo_delete, [self.deleted_id, self.search],
                        [*view, self.conversations, self.deleted_id, self.undo, self.pinned], **REFUSABLE_EVENT)
        self.export_md.click(self.export_markdown, [self.conversation_id], [self.export_file], **REFUSABLE_EVENT)
        self.export_json.click(self.export_json_file, [self.conversation_id], [self.export_file], **REFUSABLE_EVENT)

        # Settings: switching model or device loads in the background; the timer shows progress.
        for picker in (self.model, self.device):
            picker.input(self.switch_model, [self.model, self.device], [self.status, self.status_timer],
                         **REFUSABLE_EVENT)

        # The chat: validate and show the question at once, answer in the queue, then tidy up.
        generating = {"concurrency_limit": self.concurrency_limit, "concurrency_id": "generate",
                      "show_progress": "minimal", "api_visibility": "private"}
        answer_out = [self.chatbot, self.conversation_id, self.title, self.context, self.message]
        busy_out = [self.send, self.stop]
        for trigger in (self.message.submit, self.send.click):
            (trigger(self.accept, [self.message, self.chatbot, self.stop_signal, *self._params],
                     [self.message, self.chatbot, self.pending, *busy_out], **REFUSABLE_EVENT)
             .success(self.respond, [self.pending, self.conversation_id, self.stop_signal, self.system, *self._params],
                      answer_out, **generating)
             .then(self.finish, [self.conversation_id, self.search], [*busy_out, self.conversations], **UNQUEUED_EVENT))
        (self.chatbot.retry(self.begin, [self.stop_signal], busy_out, **REFUSABLE_EVENT)
         .success(self.retry, [self.conversation_id, self.stop_signal, self.system, *self._params], answer_out,
                  **generating)
         .then(self.finish, [self.conversation_id, self.search], [*busy_out, self.conversations], **UNQUEUED_EVENT))
        (self.chatbot.edit(self.begin_edit, [self.chatbot, self.stop_signal], [self.chatbot, self.pending, *busy_out],
                           **REFUSABLE_EVENT)
         .success(self.edit, [self.pending, self.conversation_id, self.stop_signal, self.system, *self._params],
                  answer_out, **generating)
         .then(self.finish, [self.conversation_id, self.search], [*busy_out, self.conversations], **UNQUEUED_EVENT))
        # Stop sets the session's signal: the decoder ends at its next token and the partial answer is saved.
        self.stop.click(self.stop_generation, [self.stop_signal], None, **UNQUEUED_EVENT)
        self.chatbot.like(self.rate, [self.conversation_id], None, **REFUSABLE_EVENT)

    def _wire_research(self) -> None:
        """Templates, answer tools, the Notes and Stats tabs."""
        self.demo.load(self.load_templates, None, [self.template], **REFUSABLE_EVENT)
        self.template.input(self.choose_template, [self.template],
                            [self.template_about, self.template_variables, *self.template_fields], **REFUSABLE_EVENT)
        self.use_template.click(self.apply_template, [self.template, self.template_variables, *self.template_fields],
                                [self.message, self.system, *self._params[:-1]], **REFUSABLE_EVENT)

        self.chatbot.select(self.select_answer, [self.conversation_id],
                            [self.selected, self.selected_line, self.note_text, self.note_title, self.rating_comment,
                             self.tools, self.rerun_verdict, self.rerun_text], **UNQUEUED_EVENT)
        self.save_note.click(self.save_answer_note, [self.selected, self.note_text, self.note_title, self.note_tags],
                             [self.note_title, self.note_tags], **REFUSABLE_EVENT)
        self.save_comment.click(self.save_rating_comment, [self.selected, self.rating_comment], None, **REFUSABLE_EVENT)
        self.rerun.click(self.rerun_answer, [self.selected], [self.rerun_verdict, self.rerun_text],
                         concurrency_limit=self.concurrency_limit, concurrency_id="generate", show_progress="minimal",
                         api_visibility="private")

        editor = [self.note_id, self.note_edit_title, self.note_edit_tags, self.note_edit_body, self.note_meta]
        self.notes_tab.select(self.list_notes, [self.notes_search, self.note_id], [self.notes_list], **REFUSABLE_EVENT)
        self.notes_search.change(self.list_notes, [self.notes_search, self.note_id], [self.notes_list],
                                 **REFUSABLE_EVENT)
        self.notes_list.input(self.open_note, [self.notes_list, self.conversation_id], editor, **REFUSABLE_EVENT)
        self.note_save.click(self.save_edited_note, [self.note_id, self.note_edit_title, self.note_edit_tags,
                                                     self.note_edit_body, self.notes_search, self.conversation_id],
                             [self.notes_list, self.note_meta], **REFUSABLE_EVENT)
        self.note_delete.click(self.delete_note, [self.note_id, self.notes_search], [self.notes_list, *editor],
                               **REFUSABLE_EVENT)
        self.export_notes.click(self.export_all_notes, None, [self.notes_file], **REFUSABLE_EVENT)
        self.note_open.click(self.open_note_source, [self.note_id, self.search],
                             [self.conversation_id, self.chatbot, self.title, self.context, self.system,
                              self.export_file, self.pinned, self.conversations, self.tabs], **REFUSABLE_EVENT)
        self.note_pin.click(self.pin_note, [self.note_id, self.conversation_id], [self.pinned, self.note_meta],
                            **REFUSABLE_EVENT)
        self.note_unpin.click(self.unpin_note, [self.note_id, self.conversation_id], [self.pinned, self.note_meta],
                              **UNQUEUED_EVENT)

        for trigger in (self.stats_tab.select, self.stats_refresh.click):
            trigger(self.show_stats, None, [self.messages_plot, self.ratings_plot, self.speed_plot], **REFUSABLE_EVENT)

    # -- handlers: each is a thin call into the workspace --------------------------------------

    @staticmethod
    def owner(request: gr.Request | None = None) -> str:
        """Whose history this is: the signed-in account, or the single local user when nobody signs in.

        Every handler takes the request and passes its owner to the workspace, which checks ownership
        itself: another account's id answers exactly as an id that does not exist.
        """
        username = getattr(request, "username", None)
        return username if isinstance(username, str) and username else LOCAL_OWNER

    def _sidebar(self, owner: str, query: str = "", selected: int | None = None) -> gr.Radio:
        choices = self.workspace.search(owner, query)  # a blank query lists the recent conversations
        value = selected if selected in {cid for _, cid in choices} else None
        return gr.Radio(choices=choices, value=value)

    @staticmethod
    def _view(view: ChatView) -> tuple:
        chatbot = gr.Chatbot(value=view.messages, feedback_value=view.feedback)
        return view.conversation_id, chatbot, view.title, view.context, view.system_prompt or ""

    def _status(self) -> tuple[str, gr.Timer]:
        status, loading = self.workspace.model_status()
        icon = "⏳" if loading else ("✅" if status.startswith("ready") else "⚠️")
        return f"{icon} {_plain(status)}", gr.Timer(active=loading)

    @_user_errors
    def on_load(self, request: gr.Request = None) -> tuple:
        current = self.workspace.manager.settings
        model = gr.Dropdown(choices=self.workspace.model_choices(), value=current.model)
        devices = self.workspace.device_choices()
        device = gr.Dropdown(choices=devices if current.device in devices else [current.device, *devices],
                             value=current.device)
        return (self._sidebar(self.owner(request)), model, device, *self._status())

    def poll_status(self) -> tuple[str, gr.Timer]:
        return self._status()

    @_user_errors
    def switch_model(self, model: str, device: str) -> tuple[str, gr.Timer]:
        self.workspace.switch_model(model, device)
        return self._status()

    def new_conversation(self) -> tuple:
        return (*self._view(ChatView()), gr.Radio(value=None), gr.File(value=None, visible=False), "")

    @_user_errors
    def open_conversation(self, conversation_id: int | None, request: gr.Request = None) -> tuple:
        view = self.workspace.open(self.owner(request), conversation_id)
        return (*self._view(view), gr.File(value=None, visible=False), _plain(view.pinned))

    @_user_errors
    def search_conversations(self, query: str, conversation_id: int | None, request: gr.Request = None) -> gr.Radio:
        return self._sidebar(self.owner(request), query, conversation_id)

    @_user_errors
    def rename_conversation(self, conversation_id: int | None, title: str, query: str,
                            request: gr.Request = None) -> gr.Radio:
        owner = self.owner(request)
        self.workspace.rename(owner, conversation_id, title)
        return self._sidebar(owner, query, conversation_id)

    @_user_errors
    def delete_conversation(self, conversation_id: int | None, query: str, request: gr.Request = None) -> tuple:
        owner = self.owner(request)
        title = self.workspace.delete(owner, conversation_id)
        gr.Info(f"Deleted “{title}”. Undo brings it back.")
        return (*self._view(ChatView()), self._sidebar(owner, query), conversation_id, gr.Button(visible=True), "")

    @_user_errors
    def undo_delete(self, deleted_id: int | None, query: str, request: gr.Request = None) -> tuple:
        if deleted_id is None:
            raise gr.Error("Nothing to undo.")
        owner = self.owner(request)
        self.workspace.restore(owner, deleted_id)
        view = self.workspace.open(owner, deleted_id)
        return (*self._view(view), self._sidebar(owner, query, deleted_id), None, gr.Button(visible=False),
                _plain(view.pinned))

    @_user_errors
    def export(self, conversation_id: int | None, fmt: str, request: gr.Request = None) -> gr.File:
        path = self.workspace.export(self.owner(request), conversation_id, fmt, self.export_dir)
        return gr.File(value=str(path), visible=True)

    def export_markdown(self, conversation_id: int | None, request: gr.Request = None) -> gr.File:
        return self.export(conversation_id, "markdown", request)

    def export_json_file(self, conversation_id: int | None, request: gr.Request = None) -> gr.File:
        return self.export(conversation_id, "json", request)

    @_user_errors
    def accept(self, text: str, chatbot: list, stop_signal: StopSignal, temperature: float, top_p: float,
               top_k: float, max_new_tokens: float, repetition_penalty: float, seed: str) -> tuple:
        """Check the message and settings, then show the question at once."""
        self.workspace.check_send(text, **self._values(temperature, top_p, top_k, max_new_tokens,
                                                       repetition_penalty, seed))
        stop_signal.clear()
        shown = [*chatbot, {"role": "user", "content": text}]
        return "", shown, text, gr.Button(visible=False), gr.Button(visible=True)

    @_user_errors
    def begin(self, stop_signal: StopSignal) -> tuple:
        """Before a retry or an edit: the model must be there; show Stop."""
        self.workspace.manager.get()
        stop_signal.clear()
        return gr.Button(visible=False), gr.Button(visible=True)

    @_user_errors
    def begin_edit(self, chatbot: list, stop_signal: StopSignal, event: gr.EditData) -> tuple:
        """An edited question: keep the chat up to it, remember what to ask, show Stop."""
        self.workspace.manager.get()
        index = _event_index(event)
        text = _text_of(event.value)
        stop_signal.clear()
        shown = [*chatbot[:index], {"role": "user", "content": text}]
        return shown, {"index": index, "text": text}, gr.Button(visible=False), gr.Button(visible=True)

    @_user_errors
    def respond(self, text: str, conversation_id: int | None, stop_signal: StopSignal, system: str,
                temperature: float, top_p: float, top_k: float, max_new_tokens: float,
                repetition_penalty: float, seed: str, request: gr.Request = None) -> Iterator[tuple]:
        owner = self.owner(request)
        params = self.workspace.params(**self._values(temperature, top_p, top_k, max_new_tokens,
                                                      repetition_penalty, seed))
        yield from self._stream(owner, self.workspace.send(owner, conversation_id, text, params, system=system,
                                                           cancel=stop_signal), conversation_id, unsent=text)

    @_user_errors
    def retry(self, conversation_id: int | None, stop_signal: StopSignal, system: str, temperature: float,
              top_p: float, top_k: float, max_new_tokens: float, repetition_penalty: float, seed: str,
              request: gr.Request = None) -> Iterator[tuple]:
        if conversation_id is None:
            raise gr.Error("Open a saved conversation to retry.")
        owner = self.owner(request)
        params = self.workspace.params(**self._values(temperature, top_p, top_k, max_new_tokens,
                                                      repetition_penalty, seed))
        views = self.workspace.retry(owner, conversation_id, params, system=system, cancel=stop_signal)
        gr.Info("Retrying as a new branch (⑂); the earlier answer stays in the original conversation.")
        yield from self._stream(owner, views, conversation_id)

    @_user_errors
    def edit(self, pending: dict, conversation_id: int | None, stop_signal: StopSignal, system: str,
             temperature: float, top_p: float, top_k: float, max_new_tokens: float, repetition_penalty: float,
             seed: str, request: gr.Request = None) -> Iterator[tuple]:
        if conversation_id is None:
            raise gr.Error("Open a saved conversation to edit it.")
        owner = self.owner(request)
        params = self.workspace.params(**self._values(temperature, top_p, top_k, max_new_tokens,
                                                      repetition_penalty, seed))
        views = self.workspace.edit(owner, conversation_id, pending["index"], pending["text"], params,
                                    system=system, cancel=stop_signal)
        gr.Info("Asking again from the edited message, as a new branch (⑂).")
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
        except _EXPECTED:
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
        return gr.Button(visible=True), gr.Button(visible=False), self._sidebar(self.owner(request), query,
                                                                                conversation_id)

    @staticmethod
    def stop_generation(stop_signal: StopSignal) -> None:
        stop_signal.set()

    @_user_errors
    def rate(self, conversation_id: int | None, event: gr.LikeData, request: gr.Request = None) -> None:
        index = _event_index(event)
        self.workspace.rate(self.owner(request), conversation_id, index, event.liked)

    # -- research handlers ---------------------------------------------------------------------

    @_user_errors
    def load_templates(self) -> gr.Dropdown:
        return gr.Dropdown(choices=[(f"{t.name}: {t.description}", t.name) for t in self.workspace.templates()])

    @_user_errors
    def choose_template(self, name: str | None) -> tuple:
        """The template's form: one box per variable (its description as help), the rest hidden."""
        if not name:
            return ("", [], *(gr.Textbox(visible=False, value="") for _ in self.template_fields))
        template = self.workspace.template(name)
        names = list(template.variables)[:MAX_TEMPLATE_VARIABLES]
        about = _plain(template.description)
        if len(template.variables) > MAX_TEMPLATE_VARIABLES:
            about += f" (only the first {MAX_TEMPLATE_VARIABLES} variables fit this form; use `chatcore ask --template`)"
        boxes = []
        for i in range(MAX_TEMPLATE_VARIABLES):
            if i >= len(names):
                boxes.append(gr.Textbox(visible=False, value=""))
                continue
            variable = template.variables[names[i]]
            label = names[i] + (" (required)" if variable.required else "")
            boxes.append(gr.Textbox(visible=True, value="", label=label, info=variable.description,
                                    placeholder=variable.default or ""))
        return (about, names, *boxes)

    @_user_errors
    def apply_template(self, name: str | None, names: list[str], *values: str) -> tuple:
        """Fill the chosen template into the message box; its system prompt and settings into the panel."""
        if not name:
            raise gr.Error("Choose a template first.")
        rendered = self.workspace.use_template(name, dict(zip(names, values)))
        settings = [rendered.settings.get(key, gr.skip()) for key in PARAM_NAMES[:-1]]
        gr.Info(f"Template “{name}” is in the message box; its settings are applied. Send when ready.")
        return (rendered.text, rendered.system or "", *settings)

    def select_answer(self, conversation_id: int | None, event: gr.SelectData, request: gr.Request = None) -> tuple:
        """Clicking an answer makes it the one the answer tools work on; clicking a question does nothing."""
        index = _event_index(event)
        try:
            answer = self.workspace.answer(self.owner(request), conversation_id, index)
        except _EXPECTED:
            return (gr.skip(), "Click one of the answers (a saved one) to save it as a note, comment on its rating "
                               "or re-run it.", *(gr.skip() for _ in range(6)))
        selected = {"conversation_id": conversation_id, "index": index}
        preview = " ".join(answer["content"].split())
        preview = preview[:80] + ("…" if len(preview) > 80 else "")
        return (selected, "Selected answer: " + _plain(preview), answer["content"], "",
                answer.get("rating_comment") or "", gr.Accordion(open=True), "", gr.Textbox(value="", visible=False))

    @_user_errors
    def save_answer_note(self, selected: dict | None, text: str, title: str, tags: str,
                         request: gr.Request = None) -> tuple:
        selected = selected or {}
        note_id = self.workspace.save_note(self.owner(request), selected.get("conversation_id"),
                                           selected.get("index"), text, title=title, tags=tags)
        gr.Info(f"Saved as note {note_id}; find it in the Notes tab.")
        return "", ""

    @_user_errors
    def save_rating_comment(self, selected: dict | None, comment: str, request: gr.Request = None) -> None:
        selected = selected or {}
        self.workspace.comment(self.owner(request), selected.get("conversation_id"), selected.get("index"), comment)
        gr.Info("Comment saved with the answer's rating.")

    @_user_errors
    def rerun_answer(self, selected: dict | None, request: gr.Request = None) -> tuple:
        selected = selected or {}
        text, identical = self.workspace.rerun(self.owner(request), selected.get("conversation_id"),
                                               selected.get("index"))
        verdict = ("✅ Identical: the same settings and seed gave the same answer." if identical else
                   "⚠️ Different from the saved answer (another model, device or precision, or a non-deterministic kernel).")
        return verdict, gr.Textbox(value=text, visible=True)

    @_user_errors
    def list_notes(self, query: str, note_id: int | None, request: gr.Request = None) -> gr.Radio:
        choices = self.workspace.note_choices(self.owner(request), query)
        return gr.Radio(choices=choices, value=note_id if note_id in {i for _, i in choices} else None)

    def _note_meta(self, note: dict, conversation_id: int | None) -> str:
        """Where a note came from and where it is pinned, as plain text inside Markdown."""
        parts = [f"Note {note['id']}", f"updated {note['updated'][:16].replace('T', ' ')}"]
        if note.get("model"):
            parts.append(f"from {model_label(note['model'])}")
        if note["source_message_id"] is not None and not note["source_available"]:
            parts.append("its conversation is gone")
        pinned = note.get("pinned_to") or []
        if conversation_id in pinned:
            parts.append("📌 pinned to the open chat")
        elif pinned:
            parts.append(f"📌 pinned to {len(pinned)} chat{'s' if len(pinned) != 1 else ''}")
        return _plain(" · ".join(parts))

    @_user_errors
    def open_note(self, note_id: int | None, conversation_id: int | None, request: gr.Request = None) -> tuple:
        note = self.workspace.note(self.owner(request), note_id)
        return note_id, note["title"], ", ".join(note["tags"]), note["body"], self._note_meta(note, conversation_id)

    @_user_errors
    def save_edited_note(self, note_id: int | None, title: str, tags: str, body: str, query: str,
                         conversation_id: int | None, request: gr.Request = None) -> tuple:
        owner = self.owner(request)
        self.workspace.update_note(owner, note_id, title=title, body=body, tags=tags)
        gr.Info("Note saved.")
        return (self.list_notes(query, note_id, request),
                self._note_meta(self.workspace.note(owner, note_id), conversation_id))

    @_user_errors
    def delete_note(self, note_id: int | None, query: str, request: gr.Request = None) -> tuple:
        title = self.workspace.delete_note(self.owner(request), note_id)
        gr.Info(f"Deleted note “{title}”.")
        return self.list_notes(query, None, request), None, "", "", "", ""

    @_user_errors
    def export_all_notes(self, request: gr.Request = None) -> gr.File:
        return gr.File(value=str(self.workspace.export_notes(self.owner(request), self.export_dir)), visible=True)

    @_user_errors
    def open_note_source(self, note_id: int | None, query: str, request: gr.Request = None) -> tuple:
        """Open the conversation a note was saved from in the Chat tab."""
        owner = self.owner(request)
        conversation_id = self.workspace.note_source(owner, note_id)
        view = self.workspace.open(owner, conversation_id)
        return (*self._view(view), gr.File(value=None, visible=False), _plain(view.pinned),
                self._sidebar(owner, query, conversation_id), gr.Tabs(selected="chat"))

    @_user_errors
    def pin_note(self, note_id: int | None, conversation_id: int | None, request: gr.Request = None,
                 pinned: bool = True) -> tuple:
        owner = self.owner(request)
        line = self.workspace.pin(owner, note_id, conversation_id, pinned)
        gr.Info("Pinned: the note goes with every answer in that chat." if pinned else "Unpinned.")
        return _plain(line), self._note_meta(self.workspace.note(owner, note_id), conversation_id)

    def unpin_note(self, note_id: int | None, conversation_id: int | None, request: gr.Request = None) -> tuple:
        return self.pin_note(note_id, conversation_id, request, pinned=False)

    @_user_errors
    def show_stats(self, request: gr.Request = None) -> tuple:
        import pandas as pd

        stats = self.workspace.stats(self.owner(request))
        messages = pd.DataFrame(stats["messages"], columns=["day", "role", "messages"])
        ratings = pd.DataFrame(stats["ratings"], columns=["day", "up", "down"]).melt(
            id_vars="day", value_vars=["up", "down"], var_name="rating", value_name="answers")
        speed = pd.DataFrame(stats["speed"], columns=["model", "answers", "mean_tokens_per_s", "median_tokens_per_s"])
        speed = speed.rename(columns={"mean_tokens_per_s": "tokens_per_s"})
        speed["model"] = [model_label(m) for m in speed["model"]]
        ratings["day"] = pd.to_datetime(ratings["day"])  # a time axis; the bars keep one label per day
        return messages, ratings, speed[["model", "tokens_per_s"]]

    @staticmethod
    def _values(*values: Any) -> dict[str, Any]:
        return dict(zip(PARAM_NAMES, values))


def build_app(workspace: Workspace, *, concurrency_limit: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The page over ``workspace``; launch it with :func:`launch`."""
    return ChatApp(workspace, concurrency_limit=concurrency_limit).demo

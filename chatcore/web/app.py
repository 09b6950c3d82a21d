"""ChatCore's page: its layout and all its event wiring. What each tab does lives in ``chat.py``,
``arena.py``, ``notes.py``, ``library.py``, ``evaluate.py`` and ``stats.py``, how things are shown in ``views.py``, and ``chatcore.web.server`` serves it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from chatcore.core.params import GenerationParams
from chatcore.core.settings import DEFAULT_CONCURRENCY
from chatcore.services.evaluation.arena import VOTE_LABELS
from chatcore.web.arena import ARENA_EMPTY, NO_VOTES, ArenaHandlers
from chatcore.web.chat import MAX_TEMPLATE_VARIABLES, ChatHandlers
from chatcore.web.data import ANALYSES, DATA_FILE_TYPES, NO_ANSWER, NO_TABLES, DataHandlers
from chatcore.web.dataviews import TABLE_HEADERS
from chatcore.web.evaluate import DEFAULT_SPEC, NO_RUN, NO_TEST_SET, PAGE_SCORERS, RUN_POLL_S, EvaluateHandlers
from chatcore.web.handling import REFUSABLE_EVENT, UNQUEUED_EVENT
from chatcore.web.library import JOB_POLL_S, NO_DOCUMENTS, NO_SOURCES, LibraryHandlers
from chatcore.web.notes import NotesHandlers
from chatcore.web.stats import StatsHandlers
from chatcore.web.style import CSS, HEAD, LATEX
from chatcore.web.views import (
    DOCUMENT_HEADERS,
    LEADERBOARD_HEADERS,
    RESULT_HEADERS,
    SOURCES_OFF,
    TEST_SET_HEADERS,
    source_choices,
)
from chatcore.web.workspace import StopSignal, Workspace
from storage import LOCAL_OWNER

__all__ = ["CSS", "HEAD", "LOCAL_OWNER", "MAX_QUEUE", "ChatApp", "build_app"]

# Events waiting for a turn; past this a browser is told the queue is full at once instead of waiting on
# an ever longer line (Gradio answers the join with 503 and the page shows "Queue is full").
MAX_QUEUE = 64
STATUS_POLL_S = 1.0


class ChatApp(ChatHandlers, ArenaHandlers, NotesHandlers, LibraryHandlers, DataHandlers, EvaluateHandlers,
              StatsHandlers):
    """The page: a sidebar of conversations, the Chat (with its arena), Library (documents and data tables),
    Evaluate, Notes and Stats tabs, and a settings panel."""

    def __init__(self, workspace: Workspace, *, concurrency_limit: int = DEFAULT_CONCURRENCY) -> None:
        self.workspace = workspace
        self.concurrency_limit = concurrency_limit
        # Removed with the page (or at exit): every page made one that was never removed before.
        self._exports = tempfile.TemporaryDirectory(prefix="chatcore-export-")
        self.export_dir = Path(self._exports.name)
        with gr.Blocks(title="ChatCore", fill_height=True, analytics_enabled=False) as self.demo:
            self._render_state()
            self._render_sidebar()
            self._render_settings()
            with gr.Column(scale=1), gr.Tabs(selected="chat") as self.tabs:
                with gr.Tab("Chat", id="chat", elem_id="chat-tab"):
                    self._render_arena()  # its switch on top; when on, its area stands in for the chat's
                    with gr.Column(scale=1, elem_id="chat-area") as self.chat_area:
                        self._render_chat()
                        self._render_sources()
                        self._render_templates()
                        self._render_answer_tools()
                with gr.Tab("Library", id="library", elem_id="library-tab") as self.library_tab:
                    with gr.Tabs(selected="documents"):
                        with gr.Tab("Documents", id="documents", elem_id="documents-tab"):
                            self._render_library()
                        with gr.Tab("Data", id="data", elem_id="data-tab") as self.data_tab:
                            self._render_data()
                with gr.Tab("Evaluate", id="evaluate", elem_id="evaluate-tab") as self.evaluate_tab:
                    self._render_evaluate()
                with gr.Tab("Notes", id="notes", elem_id="notes-tab") as self.notes_tab:
                    self._render_notes()
                with gr.Tab("Stats", id="stats", elem_id="stats-tab") as self.stats_tab:
                    self._render_stats()
            self._setup_events()

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
        self.job_id = gr.State(None)  # the library's indexing job this tab shows
        self.document_ids = gr.State([])  # the documents table's ids, in row order
        self.document_id = gr.State(None)  # the document clicked in the table
        self.deleted_document = gr.State(None)  # for the Library's Undo
        self.source_message = gr.State(None)  # the answer whose sources the viewer lists
        self.job_timer = gr.Timer(JOB_POLL_S, active=False)

    def _render_sidebar(self) -> None:
        with gr.Sidebar(label="Conversations", open=True, width=300, elem_id="history-panel"):
            gr.Markdown("### ChatCore")
            self.new_chat = gr.Button("New chat", variant="primary", size="sm", elem_id="new-chat")
            self.search = gr.Textbox(placeholder="Search all messages…", show_label=False, container=False,
                                     elem_id="search", max_lines=1)
            # Its empty state ("No conversations yet") is CSS (style.py): it follows the list as drawn.
            self.conversations = gr.Radio(choices=[], show_label=False, container=False, elem_id="conversations")
            self.undo = gr.Button("Undo delete", size="sm", visible=False)

    def _render_chat(self) -> None:
        with gr.Row(equal_height=True):
            self.title = gr.Textbox(placeholder="New chat", show_label=False, container=False, scale=6,
                                    elem_id="chat-title", max_lines=1, info=None)
            # A conversation's tools: enabled only while one is open (chat.conversation_tools).
            self.rename = gr.Button("Rename", size="sm", scale=0, min_width=80, interactive=False,
                                    elem_id="rename")
            self.delete = gr.Button("Delete", size="sm", variant="stop", scale=0, min_width=80, interactive=False,
                                    elem_id="delete")
            self.export_md = gr.Button("Export Markdown", size="sm", scale=0, min_width=140, interactive=False,
                                       elem_id="export-markdown")
            self.export_json = gr.Button("Export JSON", size="sm", scale=0, min_width=110, interactive=False,
                                         elem_id="export-json")
        self.export_file = gr.File(label="Export", visible=False, interactive=False)
        self.chatbot = gr.Chatbot(
            elem_id="chatbot", show_label=False, scale=1, height="65vh", layout="panel",
            sanitize_html=True, render_markdown=True, latex_delimiters=LATEX, editable="user",
            buttons=["copy", "copy_all"], feedback_options=("Like", "Dislike"),
            placeholder="**No conversation open.** Ask anything below: answers stream from the local model, "
                        "and every chat is saved in the sidebar.",
        )
        with gr.Row(equal_height=True):
            self.message = gr.Textbox(placeholder="Message ChatCore (Enter sends, Shift+Enter for a new line)",
                                      show_label=False, container=False, scale=8, lines=1, max_lines=10,
                                      elem_id="message", autofocus=True)
            self.send = gr.Button("Send", variant="primary", scale=0, min_width=90, elem_id="send")
            self.stop = gr.Button("Stop", variant="stop", scale=0, min_width=90, visible=False, elem_id="stop")
            # Evidence: the passages for the typed question, nothing generated; enabled once Sources are chosen.
            self.evidence = gr.Button("Evidence", scale=0, min_width=100, interactive=False, elem_id="evidence")
        with gr.Row(equal_height=True):
            self.sources = gr.Dropdown(label="Sources", choices=source_choices([]), value=SOURCES_OFF, scale=0,
                                       min_width=260, elem_id="sources-picker",
                                       info="What the next answer is grounded in; saved with the chat")
            self.evidence_view = gr.HTML("", visible=False, elem_id="evidence-view", padding=False)
        with gr.Row():
            self.context = gr.Markdown("", elem_id="context-line")
            self.pinned = gr.Markdown("", elem_id="pinned-line")
            self.status = gr.Markdown("", elem_id="model-status")

    def _render_sources(self) -> None:
        with gr.Accordion("Sources of the answer: click one to see it on its page", open=False,
                          elem_id="source-viewer") as self.source_viewer:
            self.source_line = gr.Markdown(NO_SOURCES, elem_id="source-line")
            self.source_list = gr.Radio(choices=[], show_label=False, container=False, visible=False,
                                        elem_id="source-list")
            with gr.Row():
                self.source_page = gr.HTML("", visible=False, elem_id="source-page", padding=False)
                self.source_image = gr.Image(type="pil", interactive=False, visible=False, elem_id="source-image",
                                             buttons=["download", "fullscreen"], height=520)
            self.save_source = gr.Button("Save passage as note", size="sm", interactive=False,
                                         elem_id="save-source-note")

    def _render_library(self) -> None:
        with gr.Row(equal_height=True):
            self.upload = gr.File(label="Add files (PDF, HTML, DOCX, Markdown, text)", file_count="multiple",
                                  type="filepath", scale=4, height=140, elem_id="library-upload")
            with gr.Column(scale=2, min_width=220):
                self.collection = gr.Dropdown(label="Collection", choices=["default"], value="default",
                                              allow_custom_value=True, elem_id="library-collection",
                                              info="Type a new name to start a collection")
                self.add = gr.Button("Add to library", variant="primary", interactive=False, elem_id="library-add")
        with gr.Row(equal_height=True):
            self.job_progress = gr.HTML("", visible=False, elem_id="library-progress", padding=False)
            self.cancel_job_button = gr.Button("Cancel", variant="stop", size="sm", scale=0, min_width=90,
                                               visible=False, elem_id="library-cancel")
        self.add_outcome = gr.Markdown("", elem_id="library-outcome")
        self.documents_empty = gr.Markdown(NO_DOCUMENTS, elem_classes="empty-state", elem_id="library-empty")
        self.documents = gr.Dataframe(headers=DOCUMENT_HEADERS, value=[], interactive=False, visible=False,
                                      wrap=True, elem_id="library-documents")
        with gr.Row(equal_height=True):
            self.document_line = gr.Markdown("", elem_id="library-selected")
            self.delete_document_button = gr.Button("Delete document", variant="stop", size="sm", scale=0,
                                                    min_width=150, interactive=False, elem_id="library-delete")
            self.undo_document = gr.Button("Undo delete", size="sm", scale=0, min_width=120, visible=False,
                                           elem_id="library-undo")
        self.library_search = gr.Textbox(placeholder="Search passages in the library…", show_label=False,
                                         max_lines=1, elem_id="library-search")
        self.library_results = gr.HTML("", visible=False, elem_id="library-results", padding=False)

    def _render_data(self) -> None:
        """Add a table; the tables; the chosen one's profile card with its analyses and Ask; the answer."""
        self.data_table = gr.State(None)  # the table whose card is open
        self.data_table_ids = gr.State([])  # the tables list's ids, in row order
        self.data_removed = gr.State(None)  # for the tables' Undo
        self.data_answer = gr.State(None)  # the answer on show
        with gr.Row(equal_height=True):
            self.data_upload = gr.File(label="Add a table (CSV, TSV, Excel .xlsx, Parquet)", type="filepath",
                                       file_types=DATA_FILE_TYPES, scale=4, height=150, elem_id="data-upload")
            with gr.Column(scale=3, min_width=280):
                with gr.Row(equal_height=True):
                    self.data_name = gr.Textbox(label="Table name", placeholder="from the file name",
                                                max_lines=1, elem_id="data-name", info="The name you write in SQL")
                    self.data_collection = gr.Dropdown(label="Collection", choices=["default"], value="default",
                                                       allow_custom_value=True, elem_id="data-collection",
                                                       info="Shared with the documents")
                self.data_sheet = gr.Dropdown(label="Sheet", choices=[], value=None, visible=False,
                                              elem_id="data-sheet")
                with gr.Row(equal_height=True):
                    self.data_skip = gr.Checkbox(label="Skip malformed rows (else the file is refused, with counts)",
                                                 value=False, scale=3, elem_id="data-skip")
                    self.data_add = gr.Button("Add table", variant="primary", interactive=False, scale=1,
                                              min_width=120, elem_id="data-add")
        self.data_progress = gr.HTML("", visible=False, elem_id="data-progress", padding=False)
        self.data_outcome = gr.Markdown("", elem_id="data-outcome")
        self.data_empty = gr.Markdown(NO_TABLES, elem_classes="empty-state", elem_id="data-empty")
        self.data_tables = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, visible=False,
                                        elem_id="data-tables", label="Your tables: click one to open its profile")
        with gr.Column(visible=False, elem_id="data-card") as self.data_card:
            self.data_profile = gr.HTML("", elem_id="data-profile", padding=False)
            with gr.Row(equal_height=True):
                self.data_remove = gr.Button("Remove table", variant="stop", size="sm", scale=0, min_width=140,
                                             interactive=False, elem_id="data-remove")
                self.data_undo = gr.Button("Undo remove", size="sm", scale=0, min_width=120, visible=False,
                                           elem_id="data-undo")
            self._render_data_questions()
        self._render_data_answer()

    def _render_data_questions(self) -> None:
        """An analysis without the model, and a question for the tab's model, over the open table."""
        gr.Markdown("#### Analyse without a model", elem_classes="data-heading")
        with gr.Row(equal_height=True, elem_id="data-analysis"):
            self.data_kind = gr.Dropdown(label="Analysis", choices=ANALYSES, value=None, scale=3, min_width=200,
                                         elem_id="data-kind")
            self.data_by = gr.Dropdown(label="Group by", visible=False, scale=2, min_width=120, elem_id="data-by")
            self.data_measure = gr.Dropdown(label="Measure", visible=False, scale=2, min_width=120,
                                            elem_id="data-measure")
            self.data_x = gr.Dropdown(label="x (predictor)", visible=False, scale=2, min_width=120, elem_id="data-x")
            self.data_y = gr.Dropdown(label="y (outcome)", visible=False, scale=2, min_width=120, elem_id="data-y")
            self.data_groups = gr.Dropdown(label="Groups (two)", multiselect=True, max_choices=2, visible=False,
                                           scale=3, info="Welch's t-test with its effect size, and Mann–Whitney", min_width=120, elem_id="data-groups")
            self.data_analyze = gr.Button("Run analysis", variant="primary", interactive=False, scale=0,
                                          min_width=130, elem_id="data-analyze")
        gr.Markdown("#### Ask the model", elem_classes="data-heading")
        with gr.Row(equal_height=True):
            self.data_question = gr.Textbox(placeholder="Ask about the tables, e.g. which condition had the highest "
                                                        "mean response?", show_label=False, max_lines=3, scale=5,
                                            elem_id="data-question")
            self.data_scope = gr.Dropdown(label="Tables in scope", choices=[], value=[], multiselect=True, scale=2,
                                          elem_id="data-scope")
            self.data_ask = gr.Button("Ask", variant="primary", interactive=False, scale=0, min_width=90,
                                      elem_id="data-ask")
        self.data_ask_status = gr.Markdown("", elem_id="data-ask-status",
                                           value="The model (the Settings panel's) writes SQL from the schemas and "
                                                 "profiles; every number comes from the query that ran.")

    def _render_data_answer(self) -> None:
        """The answer: its editable SQL with Run, narrative, chart, table, statistics, CSV, record, past answers."""
        gr.Markdown("#### Answer", elem_classes="data-heading")
        with gr.Row(equal_height=True):
            self.data_sql = gr.Code(language="sql", interactive=True, label="SQL (edit it and press Run)",
                                    lines=4, max_lines=16, scale=6, elem_id="data-sql")
            self.data_run = gr.Button("Run", variant="primary", interactive=False, scale=0, min_width=90,
                                      elem_id="data-run")
        self.data_answer_empty = gr.Markdown(NO_ANSWER, elem_classes="empty-state", elem_id="data-answer-empty")
        with gr.Column(visible=False, elem_id="data-answer") as self.data_answer_box:
            self.data_answer_line = gr.Markdown("", elem_id="data-answer-line")
            self.data_narrative = gr.HTML("", visible=False, elem_id="data-narrative", padding=False)
            self.data_chart = gr.HTML("", visible=False, elem_id="data-chart", padding=False)
            self.data_statistics = gr.HTML("", visible=False, elem_id="data-statistics", padding=False)
            self.data_result = gr.Dataframe(value=[], interactive=False, max_height=420, elem_id="data-result",
                                            label="Result")
            with gr.Row(equal_height=False):
                self.data_csv = gr.DownloadButton("Download CSV", interactive=False, size="sm", scale=0,
                                                  min_width=150, elem_id="data-csv")
                self.data_past = gr.Dropdown(label="Past answers for this table", choices=[], value=None, scale=4,
                                             elem_id="data-past")
            with gr.Accordion("Reproducibility record: the tables' and the result's hashes", open=False,
                              elem_id="data-record-box"):
                self.data_record = gr.HTML("", elem_id="data-record", padding=False)

    def _render_evaluate(self) -> None:
        """Test set, models and scorers, the run, and its results; each part with its empty state."""
        self.eval_removed = gr.State(None)  # for the test set's Undo
        self.eval_timer = gr.Timer(RUN_POLL_S, active=False)
        gr.Markdown("#### 1. Test set")
        with gr.Row(equal_height=True):
            self.eval_upload = gr.File(label="Upload a test set (.jsonl, .json, .csv, .tsv)", type="filepath",
                                       file_types=[".jsonl", ".json", ".csv", ".tsv"], scale=3, height=130,
                                       elem_id="eval-upload")
            with gr.Column(scale=3, min_width=280):
                self.eval_sets = gr.Dropdown(label="Test set", choices=[], value=None, elem_id="eval-test-set")
                with gr.Row():
                    self.eval_example = gr.Button("Add the example set", size="sm", elem_id="eval-example")
                    self.eval_remove = gr.Button("Remove", variant="stop", size="sm", interactive=False,
                                                 elem_id="eval-remove")
                    self.eval_undo = gr.Button("Undo remove", size="sm", visible=False, elem_id="eval-undo")
        self.eval_set_message = gr.Markdown("", elem_id="eval-set-message")
        self.eval_set_empty = gr.Markdown(NO_TEST_SET, elem_classes="empty-state", elem_id="eval-set-empty")
        self.eval_set_line = gr.Markdown("", elem_id="eval-set-line")
        self.eval_preview = gr.Dataframe(headers=TEST_SET_HEADERS, value=[], visible=False, interactive=False,
                                         wrap=True, max_height=280, elem_id="eval-preview")
        gr.Markdown("#### 2. Models and scorers")
        with gr.Row(equal_height=True):
            self.eval_models = gr.Dropdown(label="Models", multiselect=True, allow_custom_value=True,
                                           choices=[(f"{DEFAULT_SPEC} (the server's model)", DEFAULT_SPEC)],
                                           value=[DEFAULT_SPEC], scale=3, elem_id="eval-models",
                                           info="Type a spec and press Enter for another configuration, "
                                                "e.g. default@quant=none")
            self.eval_scorers = gr.CheckboxGroup(label="Scorers", choices=PAGE_SCORERS, value=[], scale=3,
                                                 elem_id="eval-scorers", info="The test set's defaults are ticked")
            self.eval_judge = gr.Textbox(label="Judge model", placeholder="a model spec, e.g. default", max_lines=1,
                                         visible=False, scale=2, elem_id="eval-judge")
            self.eval_sources = gr.Dropdown(label="Answer from documents", choices=source_choices([]),
                                            value=SOURCES_OFF, scale=2, elem_id="eval-sources",
                                            info="recall@5 and citations need documents")
        gr.Markdown("#### 3. Run")
        with gr.Row(equal_height=True):
            self.eval_start = gr.Button("Run", variant="primary", interactive=False, scale=0, min_width=120,
                                        elem_id="eval-run")
            self.eval_runs = gr.Dropdown(label="Open a run", choices=[], value=None, scale=4, elem_id="eval-runs")
        with gr.Row(equal_height=True):
            self.eval_progress = gr.HTML("", visible=False, elem_id="eval-progress", padding=False)
            self.eval_cancel = gr.Button("Cancel", variant="stop", size="sm", scale=0, min_width=90, visible=False,
                                         elem_id="eval-cancel")
            self.eval_resume = gr.Button("Resume", size="sm", scale=0, min_width=90, visible=False,
                                         elem_id="eval-resume")
        gr.Markdown("#### 4. Results")
        self.eval_results_empty = gr.Markdown(NO_RUN, elem_classes="empty-state", elem_id="eval-results-empty")
        self.eval_results = gr.Dataframe(headers=RESULT_HEADERS, value=[], visible=False, interactive=False,
                                         elem_id="eval-results")
        self.eval_chart = gr.HTML("", visible=False, elem_id="eval-chart", padding=False)
        self.eval_mcnemar = gr.Markdown("", visible=False, elem_id="eval-mcnemar")
        self.eval_tags = gr.Dataframe(value=[], visible=False, interactive=False, elem_id="eval-tags")
        with gr.Row(equal_height=True):
            self.eval_scorer = gr.Dropdown(label="Show the results under", choices=[], value=None, scale=2,
                                           elem_id="eval-scorer")
            self.eval_rescore_with = gr.Dropdown(label="Rescore with (nothing is generated again)",
                                                 choices=PAGE_SCORERS, value=None, scale=2,
                                                 elem_id="eval-rescore-with")
            self.eval_rescore = gr.Button("Rescore", interactive=False, scale=0, min_width=110,
                                          elem_id="eval-rescore")
        with gr.Row(equal_height=True):
            self.eval_only_differ = gr.Checkbox(label="Only where the models disagree", value=False, scale=2,
                                                elem_id="eval-only-disagree")
            self.eval_items_line = gr.Markdown("", elem_id="eval-items-line")
            self.eval_csv = gr.DownloadButton("Download items (CSV)", interactive=False, size="sm", scale=0,
                                              min_width=180, elem_id="eval-csv")
            self.eval_md = gr.DownloadButton("Download report (Markdown)", interactive=False, size="sm", scale=0,
                                             min_width=220, elem_id="eval-md")
        self.eval_items = gr.Dataframe(value=[], visible=False, interactive=False, wrap=True, max_height=520,
                                       elem_id="eval-items")

    def _render_arena(self) -> None:
        """The arena's switch and models, and its area: two blind panes, the votes, a message box, the leaderboard."""
        self.arena_battle = gr.State(None)  # the battle on show, per browser tab
        self.arena_stop_signal = gr.State(StopSignal)  # a fresh one per tab
        with gr.Row(equal_height=True, elem_id="arena-switch"):
            self.arena_on = gr.Checkbox(label="Arena: compare two models blind", value=False, scale=1,
                                        elem_id="arena-toggle")
            self.arena_models = gr.Dropdown(label="Arena models (two are drawn for each message)", multiselect=True,
                                            allow_custom_value=True, value=[DEFAULT_SPEC],
                                            choices=[(f"{DEFAULT_SPEC} (the server's model)", DEFAULT_SPEC)],
                                            visible=False, scale=4, elem_id="arena-models")
        with gr.Column(visible=False, elem_id="arena-area") as self.arena_area:
            self.arena_prompt = gr.Markdown(ARENA_EMPTY, elem_id="arena-prompt")
            with gr.Row(equal_height=True):
                answers, names = [], []
                for side in ("a", "b"):
                    with gr.Column(elem_classes="arena-pane", elem_id=f"arena-pane-{side}"):
                        gr.Markdown(f"#### Model {side.upper()}", elem_classes="arena-title")
                        answers.append(gr.Markdown("", elem_id=f"arena-answer-{side}", elem_classes="arena-answer"))
                        names.append(gr.Markdown("", elem_id=f"arena-name-{side}", elem_classes="arena-name"))
                self.arena_a, self.arena_b = answers
                self.arena_name_a, self.arena_name_b = names
            with gr.Row(elem_id="arena-votes"):
                self.arena_votes = [gr.Button(label, interactive=False, elem_id=f"arena-vote-{key.replace('_', '-')}")
                                    for key, label in VOTE_LABELS.items()]
            self.arena_status = gr.Markdown("", elem_id="arena-status")
            with gr.Row(equal_height=True):
                self.arena_message = gr.Textbox(placeholder="Message both models (Enter sends, Shift+Enter for a new "
                                                            "line)", show_label=False, container=False, scale=8,
                                                lines=1, max_lines=10, elem_id="arena-message")
                self.arena_send_button = gr.Button("Send", variant="primary", scale=0, min_width=90,
                                                   elem_id="arena-send")
                self.arena_stop_button = gr.Button("Stop", variant="stop", scale=0, min_width=90, visible=False,
                                                   elem_id="arena-stop")
            with gr.Accordion("Leaderboard", open=False, elem_id="arena-leaderboard") as self.arena_board:
                self.arena_board_line = gr.Markdown(NO_VOTES, elem_id="arena-board-line")
                self.arena_board_table = gr.Dataframe(headers=LEADERBOARD_HEADERS, value=[], visible=False,
                                                      interactive=False, elem_id="arena-board-table")
                self.arena_board_chart = gr.HTML("", visible=False, elem_id="arena-board-chart", padding=False)
                self.arena_download = gr.DownloadButton("Download votes and ratings (JSONL)", interactive=False,
                                                        size="sm", elem_id="arena-download")

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
                self.use_template = gr.Button("Use", variant="primary", scale=0, min_width=90, interactive=False,
                                              elem_id="use-template")
            self.template_about = gr.Markdown("Choose a template to see what it asks for.", elem_id="template-about")
            self.template_fields = [
                gr.Textbox(visible=False, lines=1, max_lines=8, elem_id=f"template-var-{i}")
                for i in range(MAX_TEMPLATE_VARIABLES)
            ]

    def _render_answer_tools(self) -> None:
        with gr.Accordion("Answer tools: click an answer in the chat", open=False,
                          elem_id="answer-tools") as self.tools:
            self.selected_line = gr.Markdown("No answer selected: click an answer in the chat.",
                                             elem_id="selected-answer")
            self.note_text = gr.Textbox(label="Note text (trim it to the part you want to keep)", lines=4,
                                        max_lines=12, elem_id="note-text")
            with gr.Row(equal_height=True):
                self.note_title = gr.Textbox(label="Title", placeholder="from its first line", max_lines=1, scale=3,
                                             elem_id="note-title")
                self.note_tags = gr.Textbox(label="Tags", placeholder="comma, separated", max_lines=1, scale=2,
                                            elem_id="note-tags")
                self.save_note = gr.Button("Save as note", variant="primary", scale=0, min_width=120,
                                           interactive=False, elem_id="save-note")
            with gr.Row(equal_height=True):
                self.rating_comment = gr.Textbox(label="Comment on your rating (the thumbs under the answer)",
                                                 max_lines=3, scale=4, elem_id="rating-comment")
                self.save_comment = gr.Button("Save comment", scale=0, min_width=120, interactive=False,
                                              elem_id="save-comment")
            with gr.Row(equal_height=True):
                self.rerun = gr.Button("Re-run with the same settings", scale=0, min_width=220, interactive=False,
                                       elem_id="rerun")
                self.rerun_verdict = gr.Markdown("", elem_id="rerun-verdict")
            self.rerun_text = gr.Textbox(label="Re-run answer", interactive=False, visible=False, lines=3,
                                         max_lines=12, elem_id="rerun-text")

    def _render_notes(self) -> None:
        with gr.Row(equal_height=True):
            self.notes_search = gr.Textbox(placeholder="Search notes…", show_label=False, container=False, scale=6,
                                           max_lines=1, elem_id="notes-search")
            self.note_new = gr.Button("New note", variant="primary", size="sm", scale=0, min_width=120,
                                      elem_id="note-new")
            self.export_notes = gr.Button("Export all notes", size="sm", scale=0, min_width=150, interactive=False,
                                          elem_id="export-notes")
        self.notes_file = gr.File(label="Notes export", visible=False, interactive=False)
        with gr.Row():
            with gr.Column(scale=2):
                self.notes_empty = gr.Markdown("", visible=False, elem_id="notes-empty", elem_classes="empty-state")
                self.notes_list = gr.Radio(choices=[], show_label=False, container=False, elem_id="notes-list")
            with gr.Column(scale=3, visible=False, elem_id="note-editor") as self.note_editor:
                self._render_note_editor()

    def _render_note_editor(self) -> None:
        self.note_edit_title = gr.Textbox(label="Title", placeholder="from its first line", max_lines=1,
                                          elem_id="note-edit-title")
        self.note_edit_tags = gr.Textbox(label="Tags", placeholder="comma, separated", max_lines=1,
                                         elem_id="note-edit-tags")
        self.note_edit_body = gr.Textbox(label="Note", lines=10, max_lines=30, elem_id="note-edit-body")
        self.note_meta = gr.Markdown("", elem_id="note-meta")
        # Each enabled only when it applies (notes.note_controls): nothing is live with no note open.
        with gr.Row():
            self.note_save = gr.Button("Save", variant="primary", size="sm", interactive=False, elem_id="note-save")
            self.note_open = gr.Button("Open source conversation", size="sm", interactive=False,
                                       elem_id="note-open-source")
            self.note_pin = gr.Button("Pin to open chat", size="sm", interactive=False, elem_id="note-pin")
            self.note_unpin = gr.Button("Unpin", size="sm", interactive=False, elem_id="note-unpin")
            self.note_delete = gr.Button("Delete", variant="stop", size="sm", interactive=False,
                                         elem_id="note-delete")

    def _render_stats(self) -> None:
        self.stats_refresh = gr.Button("Refresh", size="sm", elem_id="stats-refresh")
        # Bars for counts (a single day still shows), a line for ratings over time; every y axis from 0. Each
        # chart is hidden behind its empty state until it has data (stats.show_stats).
        self.messages_empty = gr.Markdown("", visible=False, elem_id="messages-empty", elem_classes="empty-state")
        self.messages_plot = gr.BarPlot(x="day", y="messages", color="role", title="Messages per day",
                                        x_title="day", y_title="messages", y_lim=[0, None], visible=False,
                                        elem_id="messages-plot")
        self.ratings_empty = gr.Markdown("", visible=False, elem_id="ratings-empty", elem_classes="empty-state")
        self.ratings_plot = gr.LinePlot(x="day", y="answers", color="rating", title="Rated answers per day",
                                        x_title="day", y_title="answers", y_lim=[0, None], visible=False,
                                        elem_id="ratings-plot")
        self.speed_empty = gr.Markdown("", visible=False, elem_id="speed-empty", elem_classes="empty-state")
        self.speed_plot = gr.BarPlot(x="model", y="tokens_per_s", title="Decoding speed by model (mean tokens/s)",
                                     x_title="model", y_title="tokens/s", y_lim=[0, None], visible=False,
                                     elem_id="speed-plot")

    @property
    def _params(self) -> list[gr.components.Component]:
        return [self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.repetition_penalty, self.seed]

    # -- wiring: every event of the page, in one place -------------------------------------------

    def _setup_events(self) -> None:
        # Every event is the page's own, not an API (that is /v1): kept out of the API page and the Gradio
        # clients. Defense in depth only: the browser can still call them, so each handler checks ownership.
        self._wire_sidebar()
        self._wire_chat()
        self._wire_answer_tools()
        self._wire_notes()
        self._wire_library()
        self._wire_data()
        self._wire_sources()
        self._setup_evaluate()
        self._setup_arena()
        for trigger in (self.stats_tab.select, self.stats_refresh.click):
            trigger(self.show_stats, None, [self.messages_plot, self.ratings_plot, self.speed_plot,
                                            self.messages_empty, self.ratings_empty, self.speed_empty],
                    **REFUSABLE_EVENT)

    @property
    def _view(self) -> list[gr.components.Component]:
        """The outputs of chat.chat_view: the open conversation and its tools."""
        return [self.conversation_id, self.chatbot, self.title, self.context, self.system,
                self.rename, self.delete, self.export_md, self.export_json]

    def _wire_sidebar(self) -> None:
        """The page's load, the model status and pickers, and the sidebar: cheap, never behind an answer."""
        self.demo.load(self.on_load, None, [self.conversations, self.model, self.device, self.status,
                                            self.status_timer], **REFUSABLE_EVENT)
        self.demo.load(self.load_templates, None, [self.template], **REFUSABLE_EVENT)
        pickers = [self.model, self.device]
        self.status_timer.tick(self.poll_status, pickers, [self.status, self.status_timer], **UNQUEUED_EVENT)
        # Choosing a model or device (for this tab and this user) loads it in the background; the timer shows progress.
        for picker in (self.model, self.device):
            picker.input(self.switch_model, [self.model, self.device], [self.status, self.status_timer],
                         **REFUSABLE_EVENT)
        for trigger in (self.new_chat.click, self.chatbot.clear):  # the chat's own Clear starts a new chat too
            (trigger(self.new_conversation, None, [*self._view, self.conversations, self.export_file, self.pinned],
                     **UNQUEUED_EVENT)
             .then(*self._after_answer, **REFUSABLE_EVENT))
        (self.conversations.input(self.open_conversation, [self.conversations],
                                  [*self._view, self.export_file, self.pinned], **REFUSABLE_EVENT)
         .then(*self._after_answer, **REFUSABLE_EVENT)
         .then(*self._conversation_model, **REFUSABLE_EVENT))
        self.search.change(self.search_conversations, [self.search, self.conversation_id], [self.conversations],
                           **REFUSABLE_EVENT)
        for trigger in (self.title.submit, self.rename.click):
            trigger(self.rename_conversation, [self.conversation_id, self.title, self.search],
                    [self.conversations], **REFUSABLE_EVENT)
        after_delete = [*self._view, self.conversations, self.deleted_id, self.undo, self.pinned]
        (self.delete.click(self.delete_conversation, [self.conversation_id, self.search], after_delete,
                           **REFUSABLE_EVENT)
         .then(*self._after_answer, **REFUSABLE_EVENT))
        (self.undo.click(self.undo_delete, [self.deleted_id, self.search], after_delete, **REFUSABLE_EVENT)
         .then(*self._after_answer, **REFUSABLE_EVENT))
        self.export_md.click(self.export_markdown, [self.conversation_id], [self.export_file], **REFUSABLE_EVENT)
        self.export_json.click(self.export_json_file, [self.conversation_id], [self.export_file], **REFUSABLE_EVENT)

    def _wire_chat(self) -> None:
        """Validate and show the question at once, answer in the queue, then tidy up."""
        generating = {"concurrency_limit": self.concurrency_limit, "concurrency_id": "generate",
                      "show_progress": "minimal", "api_visibility": "private"}
        answer_out = [self.chatbot, self.conversation_id, self.title, self.context, self.message]
        busy_out = [self.send, self.stop]
        settings = [self.system, *self._params]
        finish = (self.finish, [self.conversation_id, self.search],
                  [*busy_out, self.conversations, self.rename, self.delete, self.export_md, self.export_json])
        pickers = [self.model, self.device]  # this tab's model
        for trigger in (self.message.submit, self.send.click):
            accepted = trigger(self.accept, [self.message, self.chatbot, self.stop_signal, *self._params, *pickers],
                               [self.message, self.chatbot, self.pending, *busy_out], **REFUSABLE_EVENT)
            # A model that had to start loading shows it in the status line at once (the timer follows it).
            accepted.then(self.poll_status, pickers, [self.status, self.status_timer], **UNQUEUED_EVENT)
            (accepted
             .success(self.respond, [self.pending, self.conversation_id, self.stop_signal, *settings, self.sources,
                                     *pickers], answer_out, **generating)
             .then(*finish, **UNQUEUED_EVENT)
             .then(*self._after_answer, **REFUSABLE_EVENT))
        (self.chatbot.retry(self.begin, [self.stop_signal, *pickers], busy_out, **REFUSABLE_EVENT)
         .success(self.retry, [self.conversation_id, self.stop_signal, *settings, *pickers], answer_out,
                  **generating)
         .then(*finish, **UNQUEUED_EVENT)
         .then(*self._after_answer, **REFUSABLE_EVENT))
        (self.chatbot.edit(self.begin_edit, [self.chatbot, self.stop_signal, *pickers],
                           [self.chatbot, self.pending, *busy_out], **REFUSABLE_EVENT)
         .success(self.edit, [self.pending, self.conversation_id, self.stop_signal, *settings, *pickers], answer_out,
                  **generating)
         .then(*finish, **UNQUEUED_EVENT)
         .then(*self._after_answer, **REFUSABLE_EVENT))
        # Stop sets the session's signal: the decoder ends at its next token and the partial answer is saved.
        self.stop.click(self.stop_generation, [self.stop_signal], None, **UNQUEUED_EVENT)
        self.chatbot.like(self.rate, [self.conversation_id], None, **REFUSABLE_EVENT)

    def _wire_answer_tools(self) -> None:
        """Templates, and the tools for the answer clicked in the chat."""
        self.template.input(self.choose_template, [self.template],
                            [self.template_about, self.template_variables, self.use_template, *self.template_fields],
                            **REFUSABLE_EVENT)
        self.use_template.click(self.apply_template, [self.template, self.template_variables, *self.template_fields],
                                [self.message, self.system, *self._params[:-1]], **REFUSABLE_EVENT)
        self.chatbot.select(self.select_answer, [self.conversation_id],
                            [self.selected, self.selected_line, self.note_text, self.note_title, self.rating_comment,
                             self.tools, self.rerun_verdict, self.rerun_text, self.save_note, self.save_comment,
                             self.rerun], **UNQUEUED_EVENT)
        self.save_note.click(self.save_answer_note, [self.selected, self.note_text, self.note_title, self.note_tags],
                             [self.note_title, self.note_tags], **REFUSABLE_EVENT)
        self.save_comment.click(self.save_rating_comment, [self.selected, self.rating_comment], None, **REFUSABLE_EVENT)
        self.rerun.click(self.rerun_answer, [self.selected], [self.rerun_verdict, self.rerun_text],
                         concurrency_limit=self.concurrency_limit, concurrency_id="generate", show_progress="minimal",
                         api_visibility="private")

    def _wire_notes(self) -> None:
        editor = [self.note_id, self.note_edit_title, self.note_edit_tags, self.note_edit_body, self.note_meta]
        controls = [self.note_editor, self.note_save, self.note_open, self.note_pin, self.note_unpin,
                    self.note_delete]
        listed = [self.notes_list, self.notes_empty, self.export_notes]
        self.notes_tab.select(self.show_notes, [self.notes_search, self.note_id, self.conversation_id],
                              [*listed, self.note_meta, *controls], **REFUSABLE_EVENT)
        self.notes_search.change(self.list_notes, [self.notes_search, self.note_id], listed, **REFUSABLE_EVENT)
        self.notes_list.input(self.open_note, [self.notes_list, self.conversation_id], [*editor, *controls],
                              **REFUSABLE_EVENT)
        self.note_new.click(self.new_note, [self.conversation_id], [*editor, self.notes_list, *controls],
                            **UNQUEUED_EVENT)
        self.note_save.click(self.save_edited_note, [self.note_id, self.note_edit_title, self.note_edit_tags,
                                                     self.note_edit_body, self.notes_search, self.conversation_id],
                             [self.note_id, self.note_edit_title, *listed, self.note_meta, *controls],
                             **REFUSABLE_EVENT)
        self.note_delete.click(self.delete_note, [self.note_id, self.notes_search, self.conversation_id],
                               [*listed, *editor, *controls], **REFUSABLE_EVENT)
        self.export_notes.click(self.export_all_notes, None, [self.notes_file], **REFUSABLE_EVENT)
        (self.note_open.click(self.open_note_source, [self.note_id, self.search],
                              [*self._view, self.export_file, self.pinned, self.conversations, self.tabs],
                              **REFUSABLE_EVENT)
         .then(*self._after_answer, **REFUSABLE_EVENT)
         .then(*self._conversation_model, **REFUSABLE_EVENT))
        self.note_pin.click(self.pin_note, [self.note_id, self.conversation_id],
                            [self.pinned, self.note_meta, *controls], **REFUSABLE_EVENT)
        self.note_unpin.click(self.unpin_note, [self.note_id, self.conversation_id],
                              [self.pinned, self.note_meta, *controls], **UNQUEUED_EVENT)


    @property
    def _conversation_model(self) -> tuple:
        """After a conversation opens: the model it was answered by in this tab's pickers, with its status."""
        return (self.conversation_model, [self.conversation_id],
                [self.model, self.device, self.status, self.status_timer])

    @property
    def _after_answer(self) -> tuple:
        """After a conversation opens or an answer ends: its scope in the picker, its last sources in the viewer."""
        return (self.conversation_sources, [self.conversation_id],
                [self.sources, *self._source_outputs, self.evidence, self.evidence_view])

    @property
    def _source_outputs(self) -> list[gr.components.Component]:
        """The outputs of library._source_list: the answer, its sources and the cleared viewer."""
        return [self.source_message, self.source_list, self.source_line, self.source_page, self.source_image,
                self.save_source, self.source_viewer]

    def _wire_library(self) -> None:
        """The Library tab: add files with a progress bar and Cancel, the table, Delete with Undo, search."""
        table = [self.documents, self.documents_empty, self.document_ids]
        collections = [self.collection, self.sources]
        job = [self.job_id, self.job_progress, self.cancel_job_button, self.job_timer]
        for trigger in (self.library_tab.select, self.demo.load):
            trigger(self.show_library, [self.job_id], [*table, *collections, *job], **REFUSABLE_EVENT)
        self.upload.change(self.files_chosen, [self.upload], [self.add], **UNQUEUED_EVENT)
        self.add.click(self.add_files, [self.upload, self.collection],
                       [self.upload, self.add, self.add_outcome, *job, *table, *collections], **REFUSABLE_EVENT)
        self.job_timer.tick(self.poll_job, [self.job_id], [*job, *table, *collections], **REFUSABLE_EVENT)
        self.cancel_job_button.click(self.cancel_job, [self.job_id], [*job, *table], **REFUSABLE_EVENT)
        selection = [self.document_id, self.document_line, self.delete_document_button]
        self.documents.select(self.select_document, [self.document_ids], selection, **UNQUEUED_EVENT)
        after_delete = [*table, *selection, self.deleted_document, self.undo_document]
        self.delete_document_button.click(self.delete_document, [self.document_id], after_delete, **REFUSABLE_EVENT)
        self.undo_document.click(self.undo_delete_document, [self.deleted_document], after_delete,
                                 **REFUSABLE_EVENT)
        self.library_search.submit(self.search_library, [self.library_search], [self.library_results],
                                   **REFUSABLE_EVENT)

    @property
    def _data_tables(self) -> list[gr.components.Component]:
        """The outputs of data._tables: the list, its empty state, its ids, the Ask scope, the collection box."""
        return [self.data_tables, self.data_empty, self.data_table_ids, self.data_scope, self.data_collection]

    @property
    def _data_card(self) -> list[gr.components.Component]:
        """The outputs of data._card: the open table, its card, Remove, the analysis form, the SQL, past answers."""
        return [self.data_table, self.data_card, self.data_profile, self.data_remove, self.data_kind,
                *self._data_fields, self.data_analyze, self.data_sql, self.data_past]

    @property
    def _data_fields(self) -> list[gr.components.Component]:
        return [self.data_by, self.data_measure, self.data_x, self.data_y, self.data_groups]

    @property
    def _data_answer(self) -> list[gr.components.Component]:
        """The outputs of data._answer: the answer on show, in its box."""
        return [self.data_answer, self.data_answer_box, self.data_answer_empty, self.data_answer_line, self.data_sql,
                self.data_narrative, self.data_chart, self.data_result, self.data_statistics, self.data_csv,
                self.data_record, self.data_past]

    def _wire_data(self) -> None:
        """The Data area: add a table with a bar, the list, the card with Remove and Undo, analyses, Ask, SQL."""
        for trigger in (self.data_tab.select, self.library_tab.select, self.demo.load):
            trigger(self.show_data, [self.data_table, self.data_scope], [*self._data_tables, *self._data_card],
                    **REFUSABLE_EVENT)
        self.data_upload.change(self.data_file_chosen, [self.data_upload],
                                [self.data_name, self.data_sheet, self.data_add, self.data_outcome], **REFUSABLE_EVENT)
        self.data_sheet.input(self.sheet_chosen, [self.data_sheet], [self.data_add], **UNQUEUED_EVENT)
        self.data_add.click(self.add_table, [self.data_upload, self.data_name, self.data_collection, self.data_sheet,
                                             self.data_skip],
                            [self.data_progress, self.data_outcome, self.data_add, *self._data_tables,
                             *self._data_card, self.data_upload], **REFUSABLE_EVENT)
        self.data_tables.select(self.select_table, [self.data_table_ids], [*self._data_card, self.data_scope],
                                **REFUSABLE_EVENT)
        removal = [*self._data_tables, *self._data_card, self.data_removed, self.data_undo]
        self.data_remove.click(self.remove_table, [self.data_table, self.data_scope], removal, **REFUSABLE_EVENT)
        self.data_undo.click(self.undo_remove_table, [self.data_removed, self.data_scope], removal,
                             **REFUSABLE_EVENT)
        form = [self.data_table, self.data_kind, *self._data_fields]
        for choice in (self.data_kind, *self._data_fields):
            choice.input(self.analysis_form, form, [*self._data_fields, self.data_analyze], **REFUSABLE_EVENT)
        self.data_analyze.click(self.run_analysis, form, self._data_answer, **REFUSABLE_EVENT)
        for change in (self.data_question.change, self.data_scope.change):
            change(self.question_typed, [self.data_question, self.data_scope], [self.data_ask], **UNQUEUED_EVENT)
        for trigger in (self.data_question.submit, self.data_ask.click):
            trigger(self.ask_data, [self.data_question, self.data_scope, self.model, self.device],
                    [self.data_ask_status, *self._data_answer], concurrency_limit=self.concurrency_limit,
                    concurrency_id="generate", show_progress="minimal", api_visibility="private")
        self.data_sql.change(self.sql_typed, [self.data_sql], [self.data_run], **UNQUEUED_EVENT)
        self.data_run.click(self.run_sql, [self.data_sql, self.data_table], self._data_answer, **REFUSABLE_EVENT)
        self.data_past.input(self.open_answer, [self.data_past], self._data_answer, **REFUSABLE_EVENT)

    def _wire_sources(self) -> None:
        """The Chat tab's Sources picker, the source viewer and Evidence."""
        self.sources.input(self.choose_sources, [self.sources, self.conversation_id], [self.evidence],
                           **REFUSABLE_EVENT)
        self.chatbot.select(self.select_answer_sources, [self.conversation_id], self._source_outputs,
                            **REFUSABLE_EVENT)
        self.source_list.input(self.show_source, [self.source_message, self.source_list],
                               [self.source_line, self.source_page, self.source_image, self.save_source],
                               **REFUSABLE_EVENT)
        self.save_source.click(self.save_source_note, [self.source_message, self.source_list], None,
                               **REFUSABLE_EVENT)
        self.evidence.click(self.show_evidence, [self.message, self.sources], [self.evidence_view],
                            **REFUSABLE_EVENT)

    def _setup_evaluate(self) -> None:
        """The Evaluate tab: test sets, runs with a progress bar, Cancel and Resume, and the results."""
        sets = [self.eval_sets, self.eval_set_line, self.eval_set_empty, self.eval_preview, self.eval_remove,
                self.eval_scorers, self.eval_judge]
        run = [self.eval_progress, self.eval_cancel, self.eval_resume, self.eval_timer, self.eval_runs]
        results = [self.eval_results_empty, self.eval_results, self.eval_chart, self.eval_mcnemar, self.eval_tags,
                   self.eval_scorer, self.eval_rescore, self.eval_items_line, self.eval_items, self.eval_csv,
                   self.eval_md]
        view = [self.eval_runs, self.eval_scorer, self.eval_only_differ]
        self.evaluate_tab.select(self.show_evaluate, [self.eval_sets, *view], [*sets, self.eval_models, *run, *results],
                                 **REFUSABLE_EVENT)
        self.eval_upload.upload(self.upload_test_set, [self.eval_upload],
                                [self.eval_upload, self.eval_set_message, *sets], **REFUSABLE_EVENT)
        self.eval_example.click(self.add_example_set, None, [self.eval_set_message, *sets], **REFUSABLE_EVENT)
        self.eval_sets.input(self.choose_test_set, [self.eval_sets], [self.eval_set_message, *sets],
                             **REFUSABLE_EVENT)
        removal = [self.eval_set_message, *sets, self.eval_removed, self.eval_undo]
        self.eval_remove.click(self.remove_test_set, [self.eval_sets], removal, **REFUSABLE_EVENT)
        self.eval_undo.click(self.undo_remove_test_set, [self.eval_removed], removal, **REFUSABLE_EVENT)
        self.eval_scorers.change(self.scorers_chosen, [self.eval_scorers], [self.eval_judge], **UNQUEUED_EVENT)
        for choice in (self.eval_sets, self.eval_models, self.eval_scorers):
            choice.change(self.run_ready, [self.eval_sets, self.eval_models, self.eval_scorers], [self.eval_start],
                          **UNQUEUED_EVENT)
        self.eval_start.click(self.start_run, [self.eval_sets, self.eval_models, self.eval_scorers, self.eval_judge,
                                               self.eval_sources], [*run, *results], **REFUSABLE_EVENT)
        self.evaluate_tab.select(self.eval_source_choices, None, [self.eval_sources], **UNQUEUED_EVENT)
        self.eval_timer.tick(self.poll_run, view, [*run, *results], **REFUSABLE_EVENT)
        self.eval_cancel.click(self.cancel_run, [self.eval_runs], run, **REFUSABLE_EVENT)
        self.eval_resume.click(self.resume_run, [self.eval_runs], [*run, *results], **REFUSABLE_EVENT)
        self.eval_runs.input(self.open_run, view, [*run, *results], **REFUSABLE_EVENT)
        for change in (self.eval_scorer.input, self.eval_only_differ.input):
            change(self.show_results, view, results, **REFUSABLE_EVENT)
        self.eval_rescore.click(self.rescore_run, [self.eval_runs, self.eval_rescore_with, self.eval_judge,
                                                   self.eval_only_differ], results, **REFUSABLE_EVENT)

    def _setup_arena(self) -> None:
        """The arena: the switch, a battle streamed in the generating queue, the votes, the leaderboard."""
        board = [self.arena_board_line, self.arena_board_table, self.arena_board_chart, self.arena_download]
        (self.arena_on.input(self.toggle_arena, [self.arena_on], [self.arena_area, self.chat_area, self.arena_models],
                             **REFUSABLE_EVENT)
         .then(self.show_leaderboard, None, board, **REFUSABLE_EVENT))
        battle = [self.arena_battle, self.arena_prompt, self.arena_a, self.arena_b, self.arena_name_a,
                  self.arena_name_b, *self.arena_votes, self.arena_status]
        busy = [self.arena_send_button, self.arena_stop_button]
        for trigger in (self.arena_message.submit, self.arena_send_button.click):
            (trigger(self.arena_accept, [self.arena_message, self.arena_models, self.arena_stop_signal],
                     [*battle, self.arena_message, *busy], **REFUSABLE_EVENT)
             .success(self.arena_answer, [self.arena_battle, self.arena_stop_signal, *self._params], battle,
                      concurrency_limit=self.concurrency_limit, concurrency_id="generate", show_progress="minimal",
                      api_visibility="private")
             .then(self.arena_done, None, busy, **UNQUEUED_EVENT))
        self.arena_stop_button.click(self.stop_arena, [self.arena_stop_signal], None, **UNQUEUED_EVENT)
        for button, vote in zip(self.arena_votes, (self.vote_a, self.vote_b, self.vote_tie, self.vote_both_bad)):
            (button.click(vote, [self.arena_battle], [self.arena_name_a, self.arena_name_b, *self.arena_votes,
                                                      self.arena_status], **REFUSABLE_EVENT)
             .success(self.show_leaderboard, None, board, **REFUSABLE_EVENT))
        self.arena_board.expand(self.show_leaderboard, None, board, **REFUSABLE_EVENT)


def build_app(workspace: Workspace, *, concurrency_limit: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The page over ``workspace``; serve it with ``chatcore.web.server.launch``."""
    return ChatApp(workspace, concurrency_limit=concurrency_limit).demo

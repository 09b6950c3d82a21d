"""The Library tab's Data area: add tables with a progress bar, list them, open one's profile card, remove it
(with Undo), run a model-free analysis, ask a question, type or edit SQL, and see every answer the same way.

A mixin of :class:`chatcore.web.app.ChatApp`. Every handler passes the page's owner to ``workspace.data``, which
checks ownership itself: another account's table (by id or name) or answer answers exactly like a missing one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from chatcore.web.datacharts import chart_html
from chatcore.web.dataviews import (
    TABLE_HEADERS,
    answer_label,
    answer_line,
    display_rows,
    narrative_html,
    profile_html,
    record_html,
    statistics_html,
    table_row,
)
from chatcore.web.handling import EXPECTED_ERRORS, enabled, event_index, owner, user_errors
from chatcore.web.views import plain, progress_html
from chatcore.web.workspace import Workspace
from storage.data import name_from_filename

NO_TABLES = ("**No tables yet — add a CSV, TSV, Excel or Parquet file.** Each becomes a table you can profile, "
             "analyse, query in SQL and ask questions of.")
NO_ANSWER = ("No answer yet: run an analysis, ask a question, or edit the SQL above and press **Run**. Every answer "
             "shows its query, its table, a chart and its record.")
NO_PAST = "No answers for this table yet."
DATA_FILE_TYPES = [".csv", ".tsv", ".tab", ".xlsx", ".parquet", ".pq"]
# The analyses the profile card offers, and the columns each one asks for (DataService.analyze's parameters).
ANALYSES = [("Group-by summary", "groupby"), ("Correlation matrix", "correlation"),
            ("Two-group comparison", "compare"), ("Linear regression", "regression")]
ANALYSIS_FIELDS = {"groupby": ("by", "measure"), "correlation": (), "compare": ("by", "measure", "groups"),
                   "regression": ("x", "y")}
FIELD_NAMES = ("by", "measure", "x", "y", "groups")
TABLE_OUTPUTS, CARD_OUTPUTS, ANSWER_OUTPUTS = 5, 13, 12  # how many values _tables, _card and _answer return
FIELD_WORDS = {"by": "the column to group by", "measure": "the measure", "x": "the predictor (x)",
               "y": "the outcome (y)", "groups": "two groups to compare"}


def _first_sql(name: str) -> str:
    """What the SQL box starts with for a table: its first rows, to edit."""
    return f"SELECT *\nFROM {name}\nLIMIT 100"


class DataHandlers:
    """The Data area of the Library tab."""

    workspace: Workspace
    export_dir: Path
    owner = staticmethod(owner)

    # -- the tables list ---------------------------------------------------------------------------

    def _tables(self, owner: str, chosen: list[str] | None = None) -> tuple:
        """The tables list (hidden when empty), its empty state, the ids in row order, the Ask scope's choices and
        the collection box's."""
        tables = self.workspace.data.tables(owner)
        rows = [table_row(t) for t in tables]
        names = [t["name"] for t in tables]
        kept = {"value": [n for n in chosen if n in names]} if chosen is not None else {}
        scope = gr.Dropdown(choices=names, multiselect=True, **kept)
        collections = sorted({"default", *self.workspace.collection_names(owner), *(t["collection"] for t in tables)})
        return (gr.Dataframe(value=rows, headers=TABLE_HEADERS, visible=bool(rows)),
                gr.Markdown(NO_TABLES, visible=not rows), [t["id"] for t in tables], scope,
                gr.Dropdown(choices=collections))

    def _card(self, owner: str, table_id: int | None) -> tuple:
        """The chosen table's profile card and everything that acts on it; all put away when none is chosen."""
        hidden = gr.Dropdown(visible=False, value=None)
        if table_id is None:
            return (None, gr.Column(visible=False), "", enabled(False), gr.Dropdown(value=None),
                    *(hidden for _ in FIELD_NAMES), enabled(False), gr.skip(), gr.Dropdown(choices=[], value=None))
        table = self.workspace.data.table(owner, table_id)
        profile = self.workspace.data.profile(owner, table_id)
        columns = profile["columns"]
        every = [c["name"] for c in columns]
        numeric = [c["name"] for c in columns if c["kind"] == "numeric"]
        categorical = [c["name"] for c in columns if c["kind"] in ("text", "boolean")] or every
        fields = (gr.Dropdown(choices=categorical, value=None, visible=False),  # by
                  gr.Dropdown(choices=numeric, value=None, visible=False),  # measure
                  gr.Dropdown(choices=numeric, value=None, visible=False),  # x
                  gr.Dropdown(choices=numeric, value=None, visible=False),  # y
                  gr.Dropdown(choices=[], value=[], multiselect=True, visible=False))  # groups
        return (table["id"], gr.Column(visible=True), profile_html(table, profile), enabled(True),
                gr.Dropdown(value=None), *fields, enabled(False), _first_sql(table["name"]),
                self._past(owner, table["name"]))

    def _past(self, owner: str, table: str | None, chosen: int | None = None) -> gr.Dropdown:
        """The past answers over a table, newest first, reopenable."""
        answers = self.workspace.data.answers(owner, table=table) if table else []
        return gr.Dropdown(choices=[(answer_label(a), a.id) for a in answers], value=chosen,
                           info=None if answers else NO_PAST)

    @user_errors
    def show_data(self, table_id: int | None, scope: list[str] | None, request: gr.Request = None) -> tuple:
        """The tab comes into view: the tables (a removed or foreign chosen table is put away)."""
        owner = self.owner(request)
        try:
            card = self._card(owner, table_id)
        except EXPECTED_ERRORS:
            card = self._card(owner, None)
        return (*self._tables(owner, scope or []), *card)

    def select_table(self, ids: list[int], event: gr.SelectData, request: gr.Request = None) -> tuple:
        """Clicking a row opens its table's profile card, and puts the table in the Ask scope."""
        owner = self.owner(request)
        try:
            table_id = ids[event_index(event)]
            card = self._card(owner, table_id)
            name = self.workspace.data.table(owner, table_id)["name"]
        except (IndexError, TypeError, *EXPECTED_ERRORS):  # a stale list: nothing to open
            return (*self._card(owner, None), gr.skip())
        names = [t["name"] for t in self.workspace.data.tables(owner)]
        return (*card, gr.Dropdown(choices=names, value=[name], multiselect=True))

    # -- adding a table ----------------------------------------------------------------------------

    def data_file_chosen(self, path: str | None) -> tuple:
        """A file chosen: its table name as a hint, a sheet picker for a workbook of several sheets, and Add enabled
        once there is nothing left to choose."""
        no_sheet = gr.Dropdown(choices=[], value=None, visible=False)
        if not path:
            return gr.Textbox(placeholder="from the file name"), no_sheet, enabled(False), ""
        hint = gr.Textbox(placeholder=name_from_filename(Path(path).name))
        if Path(path).suffix.lower() != ".xlsx":
            return hint, no_sheet, enabled(True), ""
        try:
            sheets = self.workspace.data.sheets(path)
        except EXPECTED_ERRORS as exc:
            return hint, no_sheet, enabled(False), f"**Not added:** {plain(str(exc))}"
        if len(sheets) < 2:
            return hint, no_sheet, enabled(True), ""
        return (hint, gr.Dropdown(choices=sheets, value=None, visible=True,
                                  info=f"This workbook has {len(sheets)} sheets: choose the one to add"),
                enabled(False), "")

    @staticmethod
    def sheet_chosen(sheet: str | None) -> gr.Button:
        return enabled(bool(sheet))

    def _loading(self, work: Callable[[Callable[[float, str], None]], Any]) -> Iterator[tuple[float, str] | Any]:
        """Run ``work(progress)`` on a thread of its own, yielding each ``(fraction, what)`` it reports, then its
        result (or raising its error)."""
        updates: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = work(lambda fraction, what: updates.put((fraction, what)))
            except BaseException as exc:  # noqa: BLE001 - raised again on the page's thread below
                outcome["error"] = exc
            finally:
                updates.put(None)

        threading.Thread(target=run, name="data-add", daemon=True).start()
        while (update := updates.get()) is not None:
            yield update
        if "error" in outcome:
            raise outcome["error"]
        yield outcome["value"]

    @user_errors
    def add_table(self, path: str | None, name: str | None, collection: str | None, sheet: str | None,
                  skip: bool, request: gr.Request = None) -> Iterator[tuple]:
        """Load the chosen file as a table, the bar following the load; then list it and open its card.

        A refused file (empty, malformed rows, a name taken...) is said in words under the form, and nothing is
        kept of it."""
        if not path:
            raise gr.Error("Choose a CSV, TSV, Excel or Parquet file first.")
        owner = self.owner(request)
        filename = Path(path).name
        unchanged = tuple(gr.skip() for _ in range(TABLE_OUTPUTS + CARD_OUTPUTS + 1))  # the list, card and upload

        def bar(fraction: float, what: str, status: str = "running") -> gr.HTML:
            return gr.HTML(progress_html(fraction, f"{filename}: {what}", status), visible=True)

        yield (bar(0.0, "reading"), "", enabled(False), *unchanged)
        work = lambda progress: self.workspace.data.add(  # noqa: E731 - one call, run on the loading thread
            owner, path, filename=filename, name=(name or "").strip() or None,
            collection=(collection or "").strip() or "default", sheet=sheet or None,
            bad_rows="skip" if skip else "refuse", progress=progress)
        try:
            for update in self._loading(work):
                if isinstance(update, tuple):
                    yield (bar(*update), gr.skip(), gr.skip(), *unchanged)
                else:
                    table = update
        except EXPECTED_ERRORS as exc:
            gr.Warning(f"{filename} was not added: {exc}")
            yield (gr.HTML("", visible=False), f"**Not added:** {plain(str(exc))}", enabled(True), *unchanged)
            return
        skipped = (table.get("report") or {}).get("skipped_rows") or 0
        line = (f"Added **{plain(table['name'])}**: {table['rows']:,} rows × {len(table['columns'])} columns"
                + (f", {skipped:,} malformed row{'s' * (skipped != 1)} skipped" if skipped else "") + ".")
        gr.Info(f"Added the table {table['name']}.")
        yield (bar(1.0, f"ready: {table['rows']:,} rows", "done"), line, enabled(False),
               *self._tables(owner, [table["name"]]), *self._card(owner, table["id"]), gr.File(value=None))

    # -- removing a table ------------------------------------------------------------------------------

    @user_errors
    def remove_table(self, table_id: int | None, scope: list[str] | None, request: gr.Request = None) -> tuple:
        if table_id is None:
            raise gr.Error("Click a table in the list first.")
        owner = self.owner(request)
        removed = self.workspace.data.remove(owner, table_id)
        gr.Info(f"Removed the table {removed['name']}. Undo brings it back.")
        return (*self._tables(owner, [n for n in scope or [] if n != removed["name"]]), *self._card(owner, None),
                removed["id"], gr.Button(visible=True))

    @user_errors
    def undo_remove_table(self, removed_id: int | None, scope: list[str] | None, request: gr.Request = None) -> tuple:
        if removed_id is None:
            raise gr.Error("Nothing to undo.")
        owner = self.owner(request)
        table = self.workspace.data.restore(owner, removed_id)
        gr.Info(f"Restored the table {table['name']}.")
        return (*self._tables(owner, [*(scope or []), table["name"]]), *self._card(owner, table["id"]), None,
                gr.Button(visible=False))

    # -- analyses --------------------------------------------------------------------------------------

    @user_errors
    def analysis_form(self, table_id: int | None, kind: str | None, by: str | None, measure: str | None,
                      x: str | None, y: str | None, groups: list[str] | None, request: gr.Request = None) -> tuple:
        """The columns the chosen analysis asks for, shown; the groups from the chosen column's values; Run analysis
        enabled once every one is chosen."""
        needed = ANALYSIS_FIELDS.get(kind or "", ())
        updates = [gr.Dropdown(visible=name in needed) for name in FIELD_NAMES[:4]]
        values = {"by": by, "measure": measure, "x": x, "y": y, "groups": groups}
        group_box = gr.Dropdown(visible="groups" in needed)
        if "groups" in needed and table_id is not None and by:
            profile = self.workspace.data.profile(self.owner(request), table_id)
            column = next((c for c in profile["columns"] if c["name"] == by), {})
            choices = [str(v) for v, _ in column.get("top") or []]
            if not groups or not set(groups) <= set(choices):  # a new column: its first two values to start
                values["groups"] = choices[:2]
                group_box = gr.Dropdown(visible=True, choices=choices, value=choices[:2], multiselect=True)
            else:
                group_box = gr.Dropdown(visible=True, choices=choices, multiselect=True)
        ready = table_id is not None and kind in ANALYSIS_FIELDS and all(
            (len(values[f] or []) == 2) if f == "groups" else bool(values[f]) for f in needed)
        return (*updates, group_box, enabled(ready))

    @user_errors
    def run_analysis(self, table_id: int | None, kind: str | None, by: str | None, measure: str | None,
                     x: str | None, y: str | None, groups: list[str] | None, request: gr.Request = None) -> tuple:
        """Run the chosen model-free analysis on the table; its answer shows like any other."""
        if table_id is None:
            raise gr.Error("Click a table in the list first.")
        if kind not in ANALYSIS_FIELDS:
            raise gr.Error("Choose an analysis.")
        values = {"by": by, "measure": measure, "x": x, "y": y, "groups": groups}
        params = {}
        for name in ANALYSIS_FIELDS[kind]:
            value = values[name]
            if not value or (name == "groups" and len(value) != 2):
                raise gr.Error(f"Choose {FIELD_WORDS[name]}.")
            params[name] = list(value) if name == "groups" else value
        owner = self.owner(request)
        return self._answer(owner, self.workspace.data.analyze(owner, table_id, kind, **params))

    # -- asking, and typed SQL ---------------------------------------------------------------------------

    @user_errors
    def ask_data(self, question: str, scope: list[str] | None, model: str | None = None, device: str | None = None,
                 request: gr.Request = None) -> Iterator[tuple]:
        """The tab's model writes SQL for the question over the tables in scope; each step shows as it happens."""
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question about your tables first.")
        if not scope:
            raise gr.Error("Choose the tables to ask about.")
        owner = self.owner(request)
        names = [self.workspace.data.table(owner, name)["name"] for name in scope]  # another's: as if missing
        spec = self.workspace.model_spec(model, device) if (model or device) else None
        keep = tuple(gr.skip() for _ in range(ANSWER_OUTPUTS))
        yield ("Asking: the model sees the tables' schemas and profiles, never their rows…", *keep)

        def work(progress: Callable[[float, str], None]) -> Any:
            return self.workspace.data.ask(owner, question, tables=names, model=spec,
                                           on_step=lambda step: progress(0.0, step))

        for update in self._loading(work):
            if isinstance(update, tuple):
                yield (plain(update[1]), *keep)
            else:
                answer = update
        yield (f"Answered from {', '.join(plain(n) for n in names)}.", *self._answer(owner, answer))

    @user_errors
    def run_sql(self, sql: str | None, table_id: int | None, request: gr.Request = None) -> tuple:
        """Run the typed or edited SQL in the sandbox; a refused or failed query says why and changes nothing."""
        if not (sql or "").strip():
            raise gr.Error("Type a SQL query first.")
        owner = self.owner(request)
        return self._answer(owner, self.workspace.data.query(owner, sql))

    @user_errors
    def open_answer(self, answer_id: int | None, request: gr.Request = None) -> tuple:
        """Reopen a past answer as it was saved (its rows are kept with it: nothing runs again)."""
        if answer_id is None:
            return tuple(gr.skip() for _ in range(ANSWER_OUTPUTS))
        owner = self.owner(request)
        return self._answer(owner, self.workspace.data.answer(owner, int(answer_id)))

    @staticmethod
    def sql_typed(sql: str | None) -> gr.Button:
        """Run: enabled while there is SQL to run."""
        return enabled(bool((sql or "").strip()))

    @staticmethod
    def question_typed(question: str | None, scope: list[str] | None) -> gr.Button:
        """Ask: enabled once there is a question and a table to ask it of."""
        return enabled(bool((question or "").strip()) and bool(scope))

    def _answer(self, owner: str, answer: Any) -> tuple:
        """An answer as the Data area shows it: id, its box, the empty state put away, its heading, SQL, narrative,
        chart, table, statistics, CSV, record, and the past answers of its table."""
        table = answer.tables[0]["name"] if answer.tables else None
        csv_path = self.export_dir / f"{table or 'result'}-answer-{answer.id}.csv"
        csv_path.write_text(answer.to_csv(), encoding="utf-8")
        narrative = narrative_html(answer.narrative, answer.unverified)
        statistics = statistics_html(answer.statistics)
        chart = chart_html(answer.chart, answer.columns, answer.rows)
        names = answer.names
        return (answer.id, gr.Column(visible=True), gr.Markdown(visible=False), answer_line(answer), answer.sql,
                gr.HTML(narrative, visible=bool(narrative)), gr.HTML(chart, visible=bool(chart)),
                gr.Dataframe(value=display_rows(answer.rows), headers=names, visible=bool(names)),
                gr.HTML(statistics, visible=bool(statistics)), gr.DownloadButton(value=str(csv_path), interactive=True),
                record_html(answer), self._past(owner, table, answer.id))

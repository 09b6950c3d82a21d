"""The Evaluate tab's handlers: test sets (upload, the example set, a preview, remove with Undo), runs on
several models in the background (progress, Cancel, Resume, any past run), and the results (a table and a
chart with 95% intervals, per tag, McNemar, the items per model with "only where the models disagree",
another scorer, Rescore, CSV and Markdown downloads).

A mixin of :class:`chatcore.web.app.ChatApp`. Every handler passes the page's owner to the workspace's
``Evaluations``, which checks ownership itself: another account's test set or run answers exactly like a
missing one.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Sequence

import gradio as gr

from chatcore.services.evaluation.scorers import SCORERS, default_scorers
from chatcore.services.evaluation.testsets import TestItem
from chatcore.web.handling import EXPECTED_ERRORS, enabled, owner, user_errors
from chatcore.web.views import (
    RESULT_HEADERS,
    RUN_BAR,
    TEST_SET_HEADERS,
    accuracy_chart,
    item_table,
    mcnemar_markdown,
    plain,
    progress_html,
    result_rows,
    run_label,
    source_choices,
    tag_table,
    test_set_line,
    test_set_rows,
)
from chatcore.web.workspace import Workspace

NO_TEST_SET = ("**No test set yet.** Upload one (JSON Lines, JSON, CSV or TSV: a question, its accepted "
               "answers, optional choices and tags) or press **Add the example set**.")
NO_RUN = "**No run yet.** Choose a test set, models and scorers above, then press **Run**."
RUNNING = "The results appear here when the run ends."
RUN_POLL_S = 1.0
# The scorers a page run can use; recall@5 and citations need the run to answer from documents.
PAGE_SCORERS = [*SCORERS, "recall@5", "judge"]
DEFAULT_SPEC = "default"


def model_spec_choices(workspace: Workspace, owner: str) -> list[tuple[str, str]]:
    """Model specs to pick from (the Evaluate tab and the arena): the server's default, the cached models, then
    the specs of the owner's earlier runs and battles, so a configuration typed once is offered again."""
    choices = [(f"{DEFAULT_SPEC} (the server's model)", DEFAULT_SPEC)]
    current = workspace.manager.settings.model
    choices += [(label, value) for label, value in workspace.model_choices() if value != current]
    known = {value for _, value in choices}
    used = [spec for run in workspace.evaluations.runs(owner) for spec in run["models"]]
    used += [spec for battle in workspace.arena.export(owner) for spec in (battle["model_a"], battle["model_b"])]
    for spec in dict.fromkeys(used):
        if spec not in known:
            choices.append((spec, spec))
    return choices


class EvaluateHandlers:
    """The Evaluate tab."""

    workspace: Workspace
    export_dir: Path
    owner = staticmethod(owner)

    # -- pieces of the tab ------------------------------------------------------------------------

    def _test_set(self, owner: str, set_id: int | None) -> tuple:
        """The chosen set: the picker, its summary, the empty state, the preview, Remove, the scorers (the set's
        defaults ticked) and the judge field."""
        sets = self.workspace.evaluations.test_sets(owner)
        set_id = set_id if set_id in {s["id"] for s in sets} else None
        picker = gr.Dropdown(choices=[(f"{s['name']} ({s['items']} items)", s["id"]) for s in sets], value=set_id)
        if set_id is None:
            return (picker, "", gr.Markdown(NO_TEST_SET, visible=not sets),
                    gr.Dataframe(value=[], headers=TEST_SET_HEADERS, visible=False), enabled(False),
                    gr.CheckboxGroup(value=[]), gr.Textbox(visible=False))
        found = self.workspace.evaluations.test_set(owner, set_id)
        items = [item.to_dict() for item in self.workspace.evaluations.items(owner, set_id)]
        defaults = default_scorers([TestItem.from_dict(item) for item in items])
        return (picker, test_set_line(found, items), gr.Markdown(NO_TEST_SET, visible=False),
                gr.Dataframe(value=test_set_rows(items), headers=TEST_SET_HEADERS, visible=True), enabled(True),
                gr.CheckboxGroup(value=defaults), gr.Textbox(visible="judge" in defaults))

    def _run(self, owner: str, run_id: int | None) -> tuple:
        """A run's progress bar, Cancel (while it runs), Resume (when it stopped short), the timer that polls it
        (while it runs), and the runs picker."""
        progress = None if run_id is None else self.workspace.evaluations.progress(owner, run_id)
        runs = self.workspace.evaluations.runs(owner)
        picker = gr.Dropdown(choices=[(run_label(r), r["id"]) for r in runs], value=run_id)
        if progress is None:
            return (gr.HTML("", visible=False), gr.Button(visible=False), gr.Button(visible=False),
                    gr.Timer(active=False), picker)
        running = not progress.finished
        resumable = progress.status in ("cancelled", "interrupted", "failed")
        bar = progress_html(progress.fraction, progress.describe(), RUN_BAR.get(progress.status, "running"))
        return (gr.HTML(bar, visible=True), gr.Button(visible=running, interactive=running),
                gr.Button(visible=resumable, interactive=resumable), gr.Timer(active=running), picker)

    def _results(self, owner: str, run_id: int | None, scorer: str | None = None,
                 only_disagreements: bool = False) -> tuple:
        """The results of a run under ``scorer`` (the run's first by default): the empty state, the table, the
        chart, McNemar, the per-tag table, the scorer picker, Rescore, the per-item line and table, and the
        CSV and Markdown downloads."""
        hidden = (gr.Dataframe(value=[], visible=False), gr.HTML("", visible=False), gr.Markdown("", visible=False),
                  gr.Dataframe(value=[], visible=False))
        no_files = (gr.DownloadButton(value=None, interactive=False), gr.DownloadButton(value=None, interactive=False))
        if run_id is None:
            return (gr.Markdown(NO_RUN, visible=True), *hidden, gr.Dropdown(choices=[], value=None),
                    enabled(False), "", gr.Dataframe(value=[], visible=False), *no_files)
        evaluations = self.workspace.evaluations
        run = evaluations.get_run(owner, run_id)
        progress = evaluations.progress(owner, run_id)
        scorer = scorer if scorer in run["scorers"] else run["scorers"][0]
        picker = gr.Dropdown(choices=run["scorers"], value=scorer)
        rescore = enabled(progress.finished)
        if not progress.finished:
            return (gr.Markdown(RUNNING, visible=True), *hidden, picker, rescore, "",
                    gr.Dataframe(value=[], visible=False), *no_files)
        try:
            report = evaluations.report(owner, [run_id], scorer)
        except EXPECTED_ERRORS as exc:  # nothing scored yet (a run cancelled at once): say so, not a toast
            return (gr.Markdown(f"No results: {plain(str(exc))}", visible=True), *hidden, picker, rescore, "",
                    gr.Dataframe(value=[], visible=False), *no_files)
        tag_headers, tag_rows = tag_table(report.results)
        headers, rows, differ = item_table(evaluations.outputs(owner, run_id), run["models"], scorer,
                                           only_disagreements)
        line = (f"{differ} item{'s' if differ != 1 else ''} where the models disagree under `{scorer}`"
                if len(run["models"]) > 1 else f"{len(rows)} items")
        if only_disagreements and not rows:
            line += ": nothing to show with the filter on"
        folder = Path(tempfile.mkdtemp(dir=self.export_dir))
        csv_path = folder / f"run-{run_id}-{scorer}-items.csv"
        with csv_path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(headers)
            writer.writerows(rows)
        md_path = folder / f"run-{run_id}-{scorer}-report.md"
        md_path.write_text(report.to_markdown(), encoding="utf-8")
        return (gr.Markdown("", visible=False),
                gr.Dataframe(value=result_rows(report.results), headers=RESULT_HEADERS, visible=True),
                gr.HTML(accuracy_chart(report.results, scorer), visible=True),
                gr.Markdown(mcnemar_markdown(report.comparisons), visible=bool(report.comparisons)),
                gr.Dataframe(value=tag_rows, headers=tag_headers, visible=bool(tag_rows)),
                picker, rescore, line, gr.Dataframe(value=rows, headers=headers, visible=True),
                gr.DownloadButton(value=str(csv_path), interactive=True),
                gr.DownloadButton(value=str(md_path), interactive=True))

    # -- test sets --------------------------------------------------------------------------------

    @user_errors
    def show_evaluate(self, set_id: int | None, run_id: int | None, scorer: str | None, only_disagreements: bool,
                      request: gr.Request = None) -> tuple:
        """The tab comes into view: test sets, models, and the open run (else a running or the latest one)."""
        owner = self.owner(request)
        sets = self.workspace.evaluations.test_sets(owner)
        if set_id is None and sets:
            set_id = sets[0]["id"]
        if run_id is None:
            runs = self.workspace.evaluations.runs(owner)
            running = [r for r in runs if r["status"] == "running"]
            run_id = (running or runs or [{"id": None}])[0]["id"]
        try:
            run = self._run(owner, run_id)
            results = self._results(owner, run_id, scorer, only_disagreements)
        except EXPECTED_ERRORS:  # a run this page no longer knows
            run, results = self._run(owner, None), self._results(owner, None)
        models = gr.Dropdown(choices=model_spec_choices(self.workspace, owner))
        return (*self._test_set(owner, set_id), models, *run, *results)

    def upload_test_set(self, path: str | None, request: gr.Request = None) -> tuple:
        """Validate and store the uploaded file; a refused one is shown with its reason (line and field)."""
        owner = self.owner(request)
        if not path:
            raise gr.Error("Choose a test set file first.")
        name = Path(path).name
        try:
            found = self.workspace.evaluations.add_path(owner, Path(path))
        except EXPECTED_ERRORS as exc:
            return (gr.File(value=None), f"**Refused:** {plain(name)}: {plain(str(exc))}",
                    *(gr.skip() for _ in range(7)))
        return (gr.File(value=None), f"Added {plain(found['name'])}: {found['items']} items.", *self._test_set(owner, found["id"]))

    @user_errors
    def add_example_set(self, request: gr.Request = None) -> tuple:
        owner = self.owner(request)
        found = self.workspace.evaluations.add_example(owner)
        return (f"The example set {plain(found['name'])} is ready: {found['items']} science questions.",
                *self._test_set(owner, found["id"]))

    @user_errors
    def choose_test_set(self, set_id: int | None, request: gr.Request = None) -> tuple:
        return ("", *self._test_set(self.owner(request), set_id))

    @user_errors
    def remove_test_set(self, set_id: int | None, request: gr.Request = None) -> tuple:
        """Remove the chosen set (its runs keep their items); Undo brings it back."""
        if set_id is None:
            raise gr.Error("Choose a test set first.")
        owner = self.owner(request)
        found = self.workspace.evaluations.remove_test_set(owner, set_id)
        return (f"Removed {plain(found['name'])}. Undo brings it back.", *self._test_set(owner, None),
                found["id"], gr.Button(visible=True))

    @user_errors
    def undo_remove_test_set(self, removed_id: int | None, request: gr.Request = None) -> tuple:
        if removed_id is None:
            raise gr.Error("Nothing to undo.")
        owner = self.owner(request)
        self.workspace.evaluations.restore_test_set(owner, removed_id)
        return ("Restored.", *self._test_set(owner, removed_id), None, gr.Button(visible=False))

    @staticmethod
    def scorers_chosen(scorers: list[str] | None) -> gr.Textbox:
        """The judge model field shows when the judge scorer is ticked."""
        return gr.Textbox(visible="judge" in (scorers or []))

    def eval_source_choices(self, request: gr.Request = None) -> gr.Dropdown:
        """The documents a run may answer from: Off, the whole library, each of the user's collections."""
        return gr.Dropdown(choices=source_choices(self.workspace.collection_names(self.owner(request))))

    @staticmethod
    def run_ready(set_id: int | None, models: list[str] | None, scorers: list[str] | None) -> gr.Button:
        """Run: enabled once a test set, a model and a scorer are chosen."""
        return enabled(set_id is not None and bool(models) and bool(scorers))

    # -- runs -------------------------------------------------------------------------------------

    @user_errors
    def start_run(self, set_id: int | None, models: Sequence[str] | None, scorers: Sequence[str] | None,
                  judge: str | None, request: gr.Request = None, sources: str | None = None) -> tuple:
        """Validate and start a run in the background; the timer follows its progress. ``sources`` (Off, the
        whole library or a collection) makes each item answer from the documents, as a grounded chat does."""
        if set_id is None:
            raise gr.Error("Choose a test set first.")
        owner = self.owner(request)
        evaluations = self.workspace.evaluations
        run_id = evaluations.create_run(owner, set_id, list(models or []), list(scorers or []) or None,
                                        judge=(judge or "").strip() or None,
                                        scope=self.workspace.scope_of(sources))
        evaluations.start(owner, run_id)
        gr.Info(f"Run {run_id} started: {len(models or [])} model(s) on the test set, in the background.")
        return (*self._run(owner, run_id), *self._results(owner, run_id))

    @user_errors
    def poll_run(self, run_id: int | None, scorer: str | None, only_disagreements: bool,
                 request: gr.Request = None) -> tuple:
        """The timer's tick: the bar; when the run ends, its results."""
        owner = self.owner(request)
        run = self._run(owner, run_id)
        if run_id is not None and not self.workspace.evaluations.progress(owner, run_id).finished:
            return (*run, *(gr.skip() for _ in range(11)))
        return (*run, *self._results(owner, run_id, scorer, only_disagreements))

    @user_errors
    def cancel_run(self, run_id: int | None, request: gr.Request = None) -> tuple:
        if run_id is None:
            raise gr.Error("No run is open.")
        owner = self.owner(request)
        self.workspace.evaluations.cancel(owner, run_id)
        gr.Info("Cancelling after the items in flight; finished items are kept and Resume goes on.")
        return self._run(owner, run_id)

    @user_errors
    def resume_run(self, run_id: int | None, request: gr.Request = None) -> tuple:
        """Go on with a cancelled or interrupted run: only its missing items are computed."""
        if run_id is None:
            raise gr.Error("No run is open.")
        owner = self.owner(request)
        self.workspace.evaluations.resume(owner, run_id, background=True)
        return (*self._run(owner, run_id), *self._results(owner, run_id))

    @user_errors
    def open_run(self, run_id: int | None, scorer: str | None, only_disagreements: bool,
                 request: gr.Request = None) -> tuple:
        owner = self.owner(request)
        return (*self._run(owner, run_id), *self._results(owner, run_id, scorer, only_disagreements))

    # -- results ----------------------------------------------------------------------------------

    @user_errors
    def show_results(self, run_id: int | None, scorer: str | None, only_disagreements: bool,
                     request: gr.Request = None) -> tuple:
        """Another scorer, or the disagreement filter: the results again."""
        return self._results(self.owner(request), run_id, scorer, only_disagreements)

    @user_errors
    def rescore_run(self, run_id: int | None, scorer: str | None, judge: str | None, only_disagreements: bool,
                    request: gr.Request = None) -> tuple:
        """Score the run's stored outputs with ``scorer`` (nothing is generated again) and show them under it."""
        if run_id is None:
            raise gr.Error("Open a run first.")
        if not scorer:
            raise gr.Error("Choose the scorer to rescore with.")
        owner = self.owner(request)
        written = self.workspace.evaluations.rescore(owner, run_id, [scorer], judge=(judge or "").strip() or None)
        gr.Info(f"Rescored with {scorer}: {written} scores written.")
        return self._results(owner, run_id, scorer, only_disagreements)

"""``chatcore eval``: perplexity, test sets, evaluation runs (run, resume, rescore), reports and listings.

Glue only, as ``chatcore docs``: open the store, call :class:`chatcore.services.evaluation.service.Evaluations`
as the ``local`` user, print for a person or, with ``--json``, for a program. A run computes in the
foreground with a progress bar on stderr; Ctrl-C cancels it cleanly (finished outputs stay, and
``chatcore eval resume N`` computes the rest).
"""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import click
from tqdm import tqdm

from chatcore.cli.common import echo_json, json_option, local_time, open_store, storage_errors
from chatcore.cli.docs import ctrl_c_sets
from chatcore.cli.group import main
from chatcore.cli.options import model_options, settings_from
from chatcore.core.errors import ChatCoreError, ParameterError
from chatcore.core.settings import Settings, model_settings
from storage import LOCAL_OWNER
from storage import evaluation as store_evaluation
from storage.errors import StorageError

# How often the foreground loop redraws the bar and lets Ctrl-C in (seconds).
_POLL_S = 0.1
PREVIEW_ITEMS = 5  # items `eval sets show` prints unless --limit says otherwise
EXAMPLE = "example"  # the TESTSET (and `sets` argument) meaning the shipped science set


@main.group("eval")
def eval_group() -> None:
    """Measure models: test sets, runs on one or more models, reports with intervals, perplexity."""


# -- perplexity ---------------------------------------------------------------------------------------------


@eval_group.command("perplexity")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--window", default=1024, show_default=True, help="Tokens per window.")
@click.option("--stride", type=int, help="Tokens between window starts (default: half a window).")
@model_options
@click.pass_context
def perplexity_command(ctx: click.Context, file: Path, window: int, stride: int | None, **options: Any) -> None:
    """Print the model's perplexity on FILE (UTF-8 text), e.g. `perplexity: 23.41`."""
    from chatcore.engine.loader import load_engine
    from chatcore.engine.perplexity import perplexity

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    settings = settings_from(ctx, options).with_overrides(compile="0")  # scoring never runs the decode step
    engine = load_engine(settings, progress=lambda m: click.echo(m, err=True))
    bar = tqdm(total=None, unit="window", desc="scoring", file=sys.stderr)

    def advance(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = perplexity(engine.model, engine.tokenizer, text, window=window, stride=stride, progress=advance)
    bar.close()
    click.echo(f"perplexity: {result.perplexity:.2f}")
    click.echo(f"[{result.tokens} tokens scored, mean NLL {result.mean_nll:.4f}]", err=True)


# -- the service and its models -----------------------------------------------------------------------------


class ModelLoader:
    """The command's models, loaded on first use: the evaluated ones one at a time (loading the next drops
    the previous, since a one-shot process needs no pool), a pinned one (the judge) beside them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.with_overrides(compile="0")  # compiling costs a minute per start
        self._spec: str | None = None
        self._backend: Any = None
        self._pinned: dict[str, Any] = {}

    def __call__(self, spec: str) -> Any:
        """The backend for ``spec``, dropping the previous evaluated model first."""
        if spec in self._pinned:
            return self._pinned[spec]
        if spec != self._spec:
            self._spec, self._backend = None, None
            gc.collect()  # the previous model's memory is free before the next one loads
            self._backend = self._load(spec)
            self._spec = spec
        return self._backend

    def pinned(self, spec: str) -> Any:
        """The backend for ``spec``, kept loaded for the whole command (the judge's ``judge_for``)."""
        if spec not in self._pinned:
            self._pinned[spec] = self._backend if spec == self._spec else self._load(spec)
        return self._pinned[spec]

    def _load(self, spec: str) -> Any:
        from chatcore.engine.loader import load_backend

        tqdm.write(f"Loading {spec}…", file=sys.stderr)
        return load_backend(model_settings(self.settings, spec), progress=lambda m: tqdm.write(m, file=sys.stderr))


def open_evaluations(settings: Settings) -> Any:
    """The evaluations over the command's store and library, loading models as :class:`ModelLoader` does."""
    from chatcore.cli.docs import library_for
    from chatcore.services.evaluation.service import Evaluations

    store = open_store()
    loader = ModelLoader(settings)
    return Evaluations(store, loader, library=library_for(settings, store), judge_for=loader.pinned)


def _settings() -> Settings:
    return click.get_current_context().find_object(Settings) or Settings()


def _ref(value: str) -> int | str:
    """A test set named by id or by name; ``example`` is the shipped set's name unless a set is named so."""
    return int(value) if value.isdigit() else value


def find_set(evaluations: Any, value: str) -> dict[str, Any]:
    """A stored test set by id or name (``example`` standing for the shipped set's name)."""
    from chatcore.services.evaluation.testsets import EXAMPLE_NAME
    from storage.errors import NotFound

    try:
        return evaluations.test_set(LOCAL_OWNER, _ref(value))
    except NotFound:
        if value != EXAMPLE:
            raise
        return evaluations.test_set(LOCAL_OWNER, EXAMPLE_NAME)


# -- test sets ----------------------------------------------------------------------------------------------


def set_json(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k != "owner"}


def echo_set_line(found: dict[str, Any], verb: str) -> None:
    click.echo(f"{verb} test set {found['id']} {found['name']!r}: {found['items']} item"
               f"{'s' if found['items'] != 1 else ''}" + (f" (from {found['filename']})" if found["filename"] else ""))


@eval_group.group("sets")
def sets_group() -> None:
    """Test sets: labeled questions (JSON Lines, JSON, CSV or TSV) to evaluate models on."""


@sets_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="The set's name (default: the file's name without its extension).")
@json_option
@storage_errors
def sets_add(file: Path, name: str | None, as_json: bool) -> None:
    """Validate FILE row by row and store it as a test set (a bad row is named by line and field)."""
    found = open_evaluations(_settings()).add_path(LOCAL_OWNER, file, name)
    if as_json:
        echo_json(set_json(found))
    else:
        echo_set_line(found, "Added")


@sets_group.command("example")
@json_option
@storage_errors
def sets_example(as_json: bool) -> None:
    """Add the science questions shipped with ChatCore (once; later calls show the stored set)."""
    found = open_evaluations(_settings()).add_example(LOCAL_OWNER)
    if as_json:
        echo_json(set_json(found))
    else:
        echo_set_line(found, "Example")


@sets_group.command("list")
@json_option
@storage_errors
def sets_list(as_json: bool) -> None:
    """Test sets, newest first."""
    rows = open_evaluations(_settings()).test_sets(LOCAL_OWNER)
    if as_json:
        echo_json([set_json(row) for row in rows])
        return
    if not rows:
        click.echo("No test sets. Add one with: chatcore eval sets add FILE (or: chatcore eval sets example)")
        return
    click.echo(f"{'ID':>5}  {'ITEMS':>6}  {'ADDED':16}  NAME")
    for row in rows:
        click.echo(f"{row['id']:>5}  {row['items']:>6}  {local_time(row['created']):16}  {row['name']}"
                   + (f"  ({row['filename']})" if row["filename"] else ""))


def item_line(item: Any) -> str:
    """One test item on one line: its id, question, choices and accepted answers."""
    question = " ".join(item.question.split())
    text = f"{item.id}: {question[:120]}{'…' if len(question) > 120 else ''}"
    if item.choices:
        text += "  [" + " | ".join(f"{chr(65 + i)}{'*' if i == item.gold else ''} {c}"
                                   for i, c in enumerate(item.choices)) + "]"
    elif item.answers:
        text += f"  → {' | '.join(item.answers)}"
    return text + (f"  #{' #'.join(item.tags)}" if item.tags else "")


@sets_group.command("show")
@click.argument("test_set")
@click.option("--limit", default=PREVIEW_ITEMS, show_default=True, type=click.IntRange(0),
              help="Items to print (0: all).")
@json_option
@storage_errors
def sets_show(test_set: str, limit: int, as_json: bool) -> None:
    """One test set (by NAME or ID) and a preview of its items (* marks the right choice)."""
    evaluations = open_evaluations(_settings())
    found = find_set(evaluations, test_set)
    items = evaluations.items(LOCAL_OWNER, found["id"])
    shown = items if limit == 0 else items[:limit]
    if as_json:
        echo_json({**set_json(found), "items": [item.to_dict() for item in shown]})
        return
    echo_set_line(found, "")
    choice = sum(item.multiple_choice for item in items)
    click.echo(f"  {choice} multiple choice, {len(items) - choice} short answer; sha256 {found['sha256'][:12]}")
    for item in shown:
        click.echo("  " + item_line(item))
    if len(shown) < len(items):
        click.echo(f"  ({len(shown)} of {len(items)}; all: --limit 0)")


@sets_group.command("remove")
@click.argument("test_set")
@json_option
@storage_errors
def sets_remove(test_set: str, as_json: bool) -> None:
    """Remove a test set (by NAME or ID) from lists; its runs keep their items (undo with ``sets restore``)."""
    evaluations = open_evaluations(_settings())
    found = evaluations.remove_test_set(LOCAL_OWNER, find_set(evaluations, test_set)["id"])
    if as_json:
        echo_json({"id": found["id"], "name": found["name"], "deleted": True})
    else:
        click.echo(f"Removed test set {found['id']} {found['name']!r}. Undo with: chatcore eval sets restore "
                   f"{found['id']}")


@sets_group.command("restore")
@click.argument("test_set_id", type=int)
@storage_errors
def sets_restore(test_set_id: int) -> None:
    """Bring back a removed test set."""
    evaluations = open_evaluations(_settings())
    evaluations.restore_test_set(LOCAL_OWNER, test_set_id)
    echo_set_line(evaluations.test_set(LOCAL_OWNER, test_set_id), "Restored")


def resolve_test_set(evaluations: Any, value: str) -> dict[str, Any]:
    """TESTSET as ``eval run`` takes it: ``example``, a file (stored under its stem, or the identical stored
    set reused), or a stored set's name or id."""
    from chatcore.services.evaluation.testsets import load_test_set

    path = Path(value)
    if path.is_file():
        parsed = load_test_set(path)
        digest = store_evaluation.items_sha256([item.to_dict() for item in parsed.items])
        for row in evaluations.test_sets(LOCAL_OWNER):
            if row["sha256"] == digest:
                return row
        return evaluations.add_path(LOCAL_OWNER, path)
    if value == EXAMPLE:
        return evaluations.add_example(LOCAL_OWNER)
    return evaluations.test_set(LOCAL_OWNER, _ref(value))


# -- runs ---------------------------------------------------------------------------------------------------


def run_in_foreground(evaluations: Any, run_id: int, work: Callable[..., Any], cancel: threading.Event) -> Any:
    """``work(cancel=, on_progress=)`` (a run or a resume) on a worker thread with a progress bar over the
    run's outputs on stderr, until it ends or ``cancel`` (Ctrl-C) is set; returns the final progress."""
    latest = [evaluations.progress(LOCAL_OWNER, run_id)]
    failure: list[BaseException] = []

    def target() -> None:
        try:
            latest.append(work(cancel=cancel, on_progress=latest.append))
        except BaseException as exc:  # stored as the run's error by the worker; raised below
            failure.append(exc)

    worker = threading.Thread(target=target, name=f"eval-run-{run_id}", daemon=True)
    with tqdm(total=latest[-1].total, initial=latest[-1].done, unit="output", file=sys.stderr,
              dynamic_ncols=True, mininterval=0.5) as bar:
        worker.start()
        while worker.is_alive():
            worker.join(_POLL_S)
            progress = latest[-1]
            if progress.model and progress.model != bar.desc:
                bar.set_description(progress.model)  # the model at work
            if progress.done > bar.n:
                bar.update(progress.done - bar.n)
    if failure:
        if isinstance(failure[0], (ChatCoreError, StorageError)):
            raise failure[0]
        raise click.ClickException(f"run {run_id} stopped: {type(failure[0]).__name__}: {failure[0]}; resume with: "
                                   f"chatcore eval resume {run_id}")
    return evaluations.progress(LOCAL_OWNER, run_id)


def follow(evaluations: Any, run_id: int, work: Callable[..., Any]) -> Any:
    """Run ``work`` in the foreground; Ctrl-C leaves the run cancelled, says how to resume, and exits 130."""
    cancel = threading.Event()
    with ctrl_c_sets(cancel):
        progress = run_in_foreground(evaluations, run_id, work, cancel)
    if cancel.is_set() and progress.status != "finished":
        click.echo(f"Cancelled run {run_id} after {progress.done} of {progress.total} outputs; "
                   f"resume with: chatcore eval resume {run_id}", err=True)
        sys.exit(130)
    if progress.status == "failed":
        raise click.ClickException(f"run {run_id} failed: {progress.error}; after fixing the cause, resume with: "
                                   f"chatcore eval resume {run_id}")
    return progress


def summary_lines(evaluations: Any, run_ids: list[int], scorers: list[str]) -> list[str]:
    """Accuracy with its 95% interval per scorer and model, then McNemar between each pair of models."""
    lines, tests = [], []
    width = max([len(s) for s in scorers] + [6])
    for scorer in scorers:
        try:
            report = evaluations.report(LOCAL_OWNER, run_ids, scorer)
        except ParameterError:
            continue  # the scorer applies to no item of the set (a choice scorer on short answers)
        for r in report.results:
            a = r.accuracy
            errors = f", {r.errors} failed" if r.errors else ""
            lines.append(f"  {scorer:{width}}  {r.model}: {a.mean:.1%} (95% CI {_pct(a.low)}–{_pct(a.high)}, "
                         f"n={a.n}{errors})")
        for c in report.comparisons:
            t = c.test
            tests.append(f"  {scorer:{width}}  {c.model_a} vs {c.model_b}: {t.b10} vs {t.b01} items only one got "
                         f"right, p = {t.p_value:.3g} ({'exact' if t.exact else 'chi-square'})")
    if not lines:
        return ["  no scores yet"]
    return ["Accuracy:", *lines, *(["McNemar (paired):", *tests] if tests else [])]


def _pct(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.1%}"


def echo_summary(evaluations: Any, run_id: int, as_json: bool) -> None:
    """The end of ``run``/``resume``: the run's report summary and id (or the reports as JSON)."""
    run = evaluations.get_run(LOCAL_OWNER, run_id)
    if as_json:
        reports = {}
        for scorer in run["scorers"]:
            try:
                reports[scorer] = evaluations.report(LOCAL_OWNER, [run_id], scorer).to_dict()
            except ParameterError:
                continue
        echo_json({"run": run_json(run), "reports": reports})
        return
    click.echo(f"Run {run_id}: {run['test_set']} on {', '.join(run['models'])}: {run['status']}, "
               f"{run['done']} of {run['total']} outputs.")
    for line in summary_lines(evaluations, [run_id], run["scorers"]):
        click.echo(line)
    click.echo(f"Report: chatcore eval report {run_id} [--md]; per item: chatcore eval show {run_id}")


def run_json(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "owner"}


def scope_of(library: Any, names: tuple[str, ...]) -> Any:
    """The scope ``--docs`` names, checked before any model loads (an unknown or empty collection is refused)."""
    from chatcore.services.library import ALL, Scope
    from chatcore.services.library.scopes import EmptyScope, check_scope

    scope = ALL if "all" in names else Scope(collections=tuple(dict.fromkeys(names)))
    try:
        check_scope(library, LOCAL_OWNER, scope)
    except EmptyScope as exc:
        raise click.ClickException(f"{exc}; add some with: chatcore docs add PATH...") from exc
    return scope


@eval_group.command("run")
@click.argument("test_set", metavar="TESTSET")
@click.option("--model", "-m", "models", multiple=True, required=True, metavar="SPEC",
              help="A model to evaluate (repeatable): default, a name or directory, and a configuration after "
                   "'@', e.g. default@quant=none.")
@click.option("--scorer", "scorers", multiple=True, metavar="NAME",
              help="A scorer (repeatable): exact, contains, regex, f1, choice, loglik, loglik_norm, recall@k, "
                   "citations, judge (default: the set's kinds of items decide).")
@click.option("--judge", metavar="SPEC", help="The model the judge scorer asks (a spec, like --model).")
@click.option("--max-new-tokens", type=int, help="Most tokens each generated answer may have (default 64).")
@click.option("--docs", "collections", multiple=True, metavar="NAME|all",
              help="Answer from this library collection (repeatable; 'all': the whole library).")
@json_option
@storage_errors
def run_command(test_set: str, models: tuple[str, ...], scorers: tuple[str, ...], judge: str | None,
                max_new_tokens: int | None, collections: tuple[str, ...], as_json: bool) -> None:
    """Evaluate models on TESTSET: a stored set's name or id, a file, or 'example' (the shipped science set).

    Each model loads in turn; every output is saved with its reproducibility record as it is made.
    Ctrl-C cancels cleanly: `chatcore eval resume N` computes only what is missing.
    """
    evaluations = open_evaluations(_settings())
    scope = scope_of(evaluations.library, collections) if collections else None
    found = resolve_test_set(evaluations, test_set)
    generation = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else None
    run_id = evaluations.create_run(LOCAL_OWNER, found["id"], models, scorers or None, generation=generation,
                                    scope=scope, judge=judge)
    run = evaluations.get_run(LOCAL_OWNER, run_id)
    click.echo(f"Run {run_id}: {found['name']} ({found['items']} items) on {len(run['models'])} model"
               f"{'s' if len(run['models']) != 1 else ''}, scored by {', '.join(run['scorers'])} (Ctrl-C cancels)…",
               err=True)
    follow(evaluations, run_id, lambda **kw: evaluations.run(LOCAL_OWNER, run_id, **kw))
    echo_summary(evaluations, run_id, as_json)


@eval_group.command("resume")
@click.argument("run_id", type=int, metavar="RUN")
@json_option
@storage_errors
def resume_command(run_id: int, as_json: bool) -> None:
    """Go on with a cancelled, interrupted or failed run: only the missing outputs are computed."""
    evaluations = open_evaluations(_settings())
    run = evaluations.get_run(LOCAL_OWNER, run_id)
    click.echo(f"Resuming run {run_id}: {run['done']} of {run['total']} outputs done (Ctrl-C cancels)…", err=True)
    follow(evaluations, run_id, lambda **kw: evaluations.resume(LOCAL_OWNER, run_id, **kw))
    echo_summary(evaluations, run_id, as_json)


@eval_group.command("rescore")
@click.argument("run_id", type=int, metavar="RUN")
@click.option("--scorer", "scorers", multiple=True, required=True, metavar="NAME",
              help="A scorer to score the stored outputs with (repeatable).")
@click.option("--judge", metavar="SPEC", help="The model the judge scorer asks.")
@json_option
@storage_errors
def rescore_command(run_id: int, scorers: tuple[str, ...], judge: str | None, as_json: bool) -> None:
    """Score a run's stored outputs again with other scorers, generating nothing."""
    evaluations = open_evaluations(_settings())
    evaluations.get_run(LOCAL_OWNER, run_id)  # a wrong id fails before any judge loads
    with tqdm(total=None, unit="output", desc="rescoring", file=sys.stderr, dynamic_ncols=True) as bar:
        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        written = evaluations.rescore(LOCAL_OWNER, run_id, scorers, judge=judge, progress=advance)
    if as_json:
        reports = {}
        for scorer in dict.fromkeys(s.strip().lower() for s in scorers):
            try:
                reports[scorer] = evaluations.report(LOCAL_OWNER, [run_id], scorer).to_dict()
            except ParameterError:
                continue
        echo_json({"run": run_id, "scores_written": written, "reports": reports})
        return
    click.echo(f"Rescored run {run_id} with {', '.join(scorers)}: {written} score{'s' if written != 1 else ''} "
               "written, nothing generated.")
    for line in summary_lines(evaluations, [run_id], list(dict.fromkeys(s.strip().lower() for s in scorers))):
        click.echo(line)


# -- reports and listings -----------------------------------------------------------------------------------


def report_text(report: Any) -> str:
    """A report for the terminal: accuracy per model, per tag, the paired tests, how many items disagree."""
    lines = [f"Report: {report.test_set} (run{'s' if len(report.runs) > 1 else ''} "
             f"{', '.join(map(str, report.runs))}), scorer {report.scorer}", ""]
    width = max(len(r.model) for r in report.results)
    lines.append(f"  {'MODEL':{width}}  {'ACCURACY':>8}  {'95% INTERVAL':15}  {'N':>5}  {'MEAN':>6}  ERRORS")
    for r in report.results:
        a = r.accuracy
        lines.append(f"  {r.model:{width}}  {_pct(a.mean):>8}  {_pct(a.low) + '–' + _pct(a.high):15}  {a.n:>5}  "
                     f"{r.mean_value:>6.3f}  {r.errors}")
    tags = sorted({tag for r in report.results for tag in r.by_tag})
    if tags:
        lines += ["", "By tag:"]
        for tag in tags:
            cells = [f"{r.model} {_pct(r.by_tag[tag].mean)} (n={r.by_tag[tag].n})"
                     for r in report.results if tag in r.by_tag]
            lines.append(f"  {tag}: " + "; ".join(cells))
    if report.comparisons:
        lines += ["", "McNemar (paired):"]
        for c in report.comparisons:
            t = c.test
            lines.append(f"  {c.model_a} vs {c.model_b}: {t.b10} right only for {c.model_a}, {t.b01} only for "
                         f"{c.model_b}, p = {t.p_value:.3g} ({'exact binomial' if t.exact else 'chi-square'}, "
                         f"{c.items} items)")
    if report.comparisons:
        lines += ["", f"{len(report.disagreements)} item{'s' if len(report.disagreements) != 1 else ''} where the "
                      "models disagree (listed by --md; --csv FILE writes them)."]
    return "\n".join(lines)


@eval_group.command("report")
@click.argument("run_ids", type=int, nargs=-1, required=True, metavar="RUN [RUN2 ...]")
@click.option("--scorer", help="The scorer to report (default: the first run's first scorer).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
@click.option("--md", "as_md", is_flag=True, help="Print Markdown tables for a lab notebook.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the items where the models disagree as CSV, one row per item and model.")
@storage_errors
def report_command(run_ids: tuple[int, ...], scorer: str | None, as_json: bool, as_md: bool,
                   csv_path: Path | None) -> None:
    """Accuracy with bootstrap 95% intervals per model and tag, McNemar between models, the disagreements.

    Several runs of the same test set are compared as one.
    """
    from chatcore.services.evaluation.report import disagreements_csv
    from chatcore.services.notes import atomic_file

    if as_json and as_md:
        raise click.UsageError("choose one of --json and --md")
    report = open_evaluations(_settings()).report(LOCAL_OWNER, list(dict.fromkeys(run_ids)), scorer)
    if csv_path is not None:
        with atomic_file(csv_path) as f:
            f.write(disagreements_csv(report))
        click.echo(f"Wrote {len(report.disagreements)} disagreeing item{'s' if len(report.disagreements) != 1 else ''}"
                   f" to {csv_path}.", err=True)
    if as_json:
        echo_json(report.to_dict())
    elif as_md:
        click.echo(report.to_markdown(), nl=False)
    else:
        click.echo(report_text(report))


@eval_group.command("list")
@json_option
@storage_errors
def list_command(as_json: bool) -> None:
    """Runs, newest first, with their status and progress."""
    runs = open_evaluations(_settings()).runs(LOCAL_OWNER)
    if as_json:
        echo_json([run_json(run) for run in runs])
        return
    if not runs:
        click.echo("No runs. Start one with: chatcore eval run example --model default")
        return
    click.echo(f"{'ID':>5}  {'STATUS':11}  {'DONE':>11}  {'STARTED':16}  TEST SET: MODELS")
    for run in runs:
        done = f"{run['done']}/{run['total']}"
        click.echo(f"{run['id']:>5}  {run['status']:11}  {done:>11}  {local_time(run['created']):16}  "
                   f"{run['test_set']}: {', '.join(run['models'])}")


def output_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "item": row["key"], "model": row["model"], "text": row["text"],
            "choices": row["choices"], "sources": row["sources"], "error": row["error"], "scores": row["scores"],
            "record": row["record"], "created": row["created"]}


def score_marks(scores: dict[str, dict[str, Any]]) -> str:
    """``choice ✓  f1 0.40 ✗``: each scorer's verdict, with its value when it is not 0 or 1."""
    marks = []
    for name, s in scores.items():
        value = "" if s["value"] in (0.0, 1.0) else f" {s['value']:.2f}"
        marks.append(f"{name}{value} {'✓' if s['correct'] else '✗'}")
    return "  ".join(marks)


@eval_group.command("show")
@click.argument("run_id", type=int, metavar="RUN")
@json_option
@storage_errors
def show_command(run_id: int, as_json: bool) -> None:
    """One run: its settings, then each item's outputs per model with their scores."""
    evaluations = open_evaluations(_settings())
    run = evaluations.get_run(LOCAL_OWNER, run_id)
    rows = evaluations.outputs(LOCAL_OWNER, run_id)
    if as_json:
        echo_json({**run_json(run), "outputs": [output_json(row) for row in rows]})
        return
    click.echo(click.style(f"Run {run_id}: {run['test_set']}", bold=True) + f"  {run['status']}, "
               f"{run['done']}/{run['total']} outputs" + (f" ({run['error']})" if run["error"] else ""))
    click.echo(f"  models: {', '.join(run['models'])}; scorers: {', '.join(run['scorers'])}; started "
               f"{local_time(run['created'])}")
    if not rows:
        click.echo("  No outputs yet" + ("" if run["status"] == "finished" else
                                          f"; resume with: chatcore eval resume {run_id}"))
    last = None
    for row in rows:
        if row["key"] != last:
            last = row["key"]
            question = " ".join(_question(row["item"]).split())
            click.echo(f"{row['key']}: {question[:160]}")
        if row["error"]:
            text = f"failed: {row['error']}"
        elif row["text"] is None:
            text = "(nothing generated: scored by likelihood)"
        else:
            text = " ".join(row["text"].split())[:160] or "(an empty answer)"
        click.echo(f"  {row['model']}: {text}")
        if row["scores"]:
            click.echo(f"    {score_marks(row['scores'])}")


def _question(item: dict[str, Any]) -> str:
    return next((m["content"] for m in reversed(item.get("messages") or []) if m.get("role") == "user"), "")

"""``Evaluations``: test sets, runs (foreground or background, cancel, resume), rescoring and reports, for
every front end. Another owner's test set or run answers exactly like a missing one (``storage`` raises
``NotFound``)."""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from chatcore.core.errors import ParameterError
from chatcore.core.params import GenerationParams
from chatcore.core.settings import split_model_spec
from chatcore.services.evaluation.report import Report, build_report
from chatcore.services.evaluation.runner import BackendFor, Hold, RunProgress, RunWorker, needs_of, output_of
from chatcore.services.evaluation.scorers import Scorer, default_scorers, make_scorer
from chatcore.services.evaluation.testsets import EXAMPLE_NAME, TestItem, TestSet, example_test_set, parse_test_set
from chatcore.services.library.retrieval import Scope
from storage import evaluation as db
from storage.errors import NotFound

# Evaluation decodes greedily with no repetition penalty, as lm-evaluation-harness does: the same model
# gives the same answers, run after run. Short answers need few tokens.
EVAL_GENERATION = {"temperature": 0.0, "repetition_penalty": 1.0, "max_new_tokens": 64, "seed": 0}
MAX_MODELS = 8
# A running run whose heartbeat is older than this has lost its worker (a crash, a kill -9, a restart).
STALE_AFTER = timedelta(seconds=30)


class Evaluations:
    """Test sets, runs and reports over one store; ``backend_for(spec)`` hands over a loaded model."""

    def __init__(self, store: Any, backend_for: BackendFor, *, library: Any = None,
                 judge_for: BackendFor | None = None, hold: Hold | None = None,
                 known: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.known = known  # which specs a server may load (the pool's ``known``); None: any (the CLI)
        self.hold = hold
        self.backend_for = backend_for
        self.library = library
        self.judge_for = judge_for or backend_for  # the judge may be another (remote) model
        self._workers: dict[int, tuple[threading.Thread, threading.Event, RunWorker]] = {}
        self._lock = threading.Lock()

    # -- test sets ------------------------------------------------------------------------------------------

    def add_test_set(self, owner: str, content: bytes | str, filename: str, name: str | None = None) -> dict[str, Any]:
        """Validate and store a test set (a bad row is refused by line and field; nothing is half-stored)."""
        parsed = parse_test_set(content, filename, name=name)
        return self._store_set(owner, parsed)

    def add_path(self, owner: str, path: Path, name: str | None = None) -> dict[str, Any]:
        """A test set from a file on disk."""
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise ParameterError("file", f"cannot read {path}: {exc.strerror or exc}") from None
        return self.add_test_set(owner, content, Path(path).name, name)

    def add_example(self, owner: str) -> dict[str, Any]:
        """The shipped example set, under its own name (stored once; the existing one is returned after)."""
        try:
            return db.get_test_set(self.store, owner, EXAMPLE_NAME)
        except NotFound:
            return self._store_set(owner, example_test_set())

    def _store_set(self, owner: str, parsed: TestSet) -> dict[str, Any]:
        return db.add_test_set(self.store, owner, parsed.name, [item.to_dict() for item in parsed.items],
                               filename=parsed.filename)

    def test_sets(self, owner: str) -> list[dict[str, Any]]:
        return db.list_test_sets(self.store, owner)

    def test_set(self, owner: str, ref: int | str) -> dict[str, Any]:
        return db.get_test_set(self.store, owner, ref)

    def items(self, owner: str, ref: int | str) -> list[TestItem]:
        return [TestItem.from_dict(row) for row in db.test_items(self.store, owner, self.test_set(owner, ref)["id"])]

    def remove_test_set(self, owner: str, ref: int | str) -> dict[str, Any]:
        """Soft-delete (undo with ``restore_test_set``); runs keep their items."""
        found = self.test_set(owner, ref)
        db.delete_test_set(self.store, owner, found["id"])
        return found

    def restore_test_set(self, owner: str, test_set_id: int) -> None:
        db.restore_test_set(self.store, owner, test_set_id)

    # -- runs -----------------------------------------------------------------------------------------------

    def create_run(self, owner: str, test_set: int | str, models: Sequence[str], scorers: Sequence[str] | None = None,
                   *, generation: dict[str, Any] | None = None, scope: Scope | None = None,
                   judge: str | None = None) -> int:
        """Validate everything, then store a run that has generated nothing yet; returns its id."""
        found = self.test_set(owner, test_set)
        models = [m.strip() for m in models if m and m.strip()]
        if not models:
            raise ParameterError("model", "name at least one model to evaluate")
        if len(models) > MAX_MODELS:
            raise ParameterError("model", f"at most {MAX_MODELS} models in one run")
        if len(set(models)) != len(models):
            raise ParameterError("model", "the same model is named twice; configurations differ after '@' "
                                          "(for example default@quant=none)")
        for model in models:
            split_model_spec(model)
            if self.known is not None and not self.known(model):
                raise ParameterError("model", f"this server has no model {model!r}: name the default, a loaded "
                                              "model or one in its model cache (chatcore models)")
        items = self.items(owner, found["id"])
        names = list(scorers) if scorers else default_scorers(items)
        built = self._scorers(names, judge)
        if "sources" in needs_of(built) and scope is None:
            raise ParameterError("scorer", "retrieval scorers need documents: give the run a library scope")
        values = {**EVAL_GENERATION, **(generation or {})}
        params = GenerationParams.create(**values)  # refuses bad settings before anything is stored
        stored = {"generation": {**asdict(params), "stop": list(params.stop)},
                  "scope": None if scope is None else scope.to_dict(), "judge": judge}
        return db.create_run(self.store, owner, found["id"], models, names, stored)

    def run(self, owner: str, run_id: int, *, cancel: threading.Event | None = None,
            on_progress: Callable[[RunProgress], None] | None = None) -> RunProgress:
        """Compute the run's missing outputs in this thread (a finished run is left as it is)."""
        run = db.get_run(self.store, owner, run_id)
        worker = RunWorker(self.store, owner, run_id, self._scorers(run["scorers"], run["params"].get("judge")),
                           self.backend_for, library=self.library, cancel=cancel, on_progress=on_progress,
                           hold=self.hold)
        return worker.run()

    def start(self, owner: str, run_id: int) -> RunProgress:
        """Run in a background thread (the page's and the API's way); ``progress`` follows it."""
        run = db.get_run(self.store, owner, run_id)
        with self._lock:
            if run_id in self._workers and self._workers[run_id][0].is_alive():
                return self.progress(owner, run_id)
            cancel = threading.Event()
            worker = RunWorker(self.store, owner, run_id, self._scorers(run["scorers"], run["params"].get("judge")),
                               self.backend_for, library=self.library, cancel=cancel, hold=self.hold)
            thread = threading.Thread(target=self._background, args=(worker,), name=f"eval-run-{run_id}", daemon=True)
            self._workers[run_id] = (thread, cancel, worker)
        thread.start()
        return self.progress(owner, run_id)

    def _background(self, worker: RunWorker) -> None:
        try:
            worker.run()
        except Exception:  # stored as the run's error by the worker; a thread has no caller to raise to
            pass

    def resume(self, owner: str, run_id: int, *, background: bool = False,
               on_progress: Callable[[RunProgress], None] | None = None,
               cancel: threading.Event | None = None) -> RunProgress:
        """Go on with an interrupted, cancelled or failed run: only the missing outputs are computed."""
        run = db.get_run(self.store, owner, run_id)
        if run["status"] == "finished":
            raise ParameterError("run", f"run {run_id} is finished; nothing to resume")
        if run_id in self._workers and self._workers[run_id][0].is_alive():
            raise ParameterError("run", f"run {run_id} is running")
        stale = (datetime.now(timezone.utc) - (STALE_AFTER if run["status"] == "running" else timedelta(0)))
        if not db.claim_run(self.store, run_id, stale.isoformat(timespec="microseconds")):
            raise ParameterError("run", f"run {run_id} is running in another process")
        if background:
            return self.start(owner, run_id)
        return self.run(owner, run_id, cancel=cancel, on_progress=on_progress)

    def cancel(self, owner: str, run_id: int) -> RunProgress:
        """Stop a background run after its items in flight; finished items stay."""
        db.get_run(self.store, owner, run_id)
        entry = self._workers.get(run_id)
        if entry is not None:
            entry[1].set()
        return self.progress(owner, run_id)

    def wait(self, run_id: int, timeout: float | None = None) -> None:
        """Block until a background run ends (tests, the CLI)."""
        entry = self._workers.get(run_id)
        if entry is not None:
            entry[0].join(timeout)

    def progress(self, owner: str, run_id: int) -> RunProgress:
        """The run as stored, with the live worker's model and rate when it runs here."""
        entry = self._workers.get(run_id)
        if entry is not None and entry[2].owner == owner:
            return entry[2].progress()
        run = db.get_run(self.store, owner, run_id)
        return RunProgress(run_id, run["status"], run["done"], run["total"], error=run["error"])

    def mark_interrupted(self) -> list[int]:
        """At start-up: runs left ``running`` by a process that is gone are marked interrupted (resumable)."""
        ids = []
        for run in db.running_runs(self.store):
            if run["id"] not in self._workers:
                db.update_run(self.store, run["id"], status="interrupted",
                              error="interrupted (the process stopped); resume it to go on")
                ids.append(run["id"])
        return ids

    def runs(self, owner: str) -> list[dict[str, Any]]:
        return db.list_runs(self.store, owner)

    def get_run(self, owner: str, run_id: int) -> dict[str, Any]:
        return db.get_run(self.store, owner, run_id)

    def outputs(self, owner: str, run_id: int) -> list[dict[str, Any]]:
        return db.outputs(self.store, owner, run_id)

    # -- scoring and reports --------------------------------------------------------------------------------

    def rescore(self, owner: str, run_id: int, scorers: Sequence[str], *, judge: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> int:
        """Score the stored outputs again with ``scorers``, generating nothing; returns the scores written."""
        if not scorers:
            raise ParameterError("scorer", "name at least one scorer")
        run = db.get_run(self.store, owner, run_id)
        built = self._scorers(scorers, judge or run["params"].get("judge"))
        rows = db.outputs(self.store, owner, run_id)
        missing = {s.name: s.needs for s in built if any(_lacks(row, s.needs) for row in rows if not row["error"])}
        if missing:
            name, need = next(iter(missing.items()))
            what = {"text": "generated answers", "choices": "choice log-likelihoods", "sources": "retrieved sources"}
            raise ParameterError("scorer", f"the {name} scorer needs {what[need]}, which run {run_id} did not "
                                           "compute; start a new run with it")
        written = 0
        for n, row in enumerate(rows, 1):
            if row["error"]:
                continue
            item, output = TestItem.from_dict(row["item"]), output_of(row)
            scores = [(row["id"], s.name, r.value, r.correct, r.detail)
                      for s in built if (r := s.score(item, output)) is not None]
            db.save_scores(self.store, scores)
            written += len(scores)
            if progress:
                progress(n, len(rows))
        db.update_run(self.store, run_id, scorers=list(dict.fromkeys([*run["scorers"], *(s.name for s in built)])))
        return written

    def report(self, owner: str, run_ids: Sequence[int], scorer: str | None = None) -> Report:
        """Accuracy with intervals per model and tag, McNemar between models, and the disagreements."""
        runs = [db.get_run(self.store, owner, run_id) for run_id in run_ids]
        return build_report(runs, {run["id"]: db.outputs(self.store, owner, run["id"]) for run in runs}, scorer)

    def _scorers(self, names: Sequence[str], judge: str | None) -> list[Scorer]:
        judge_backend = None
        if any(name == "judge" for name in names):
            if not judge:
                raise ParameterError("judge", "the judge scorer needs a judge model (--judge MODEL)")
            judge_backend = self.judge_for(judge)
        return [make_scorer(name, judge_backend=judge_backend) for name in names]


def _lacks(row: dict[str, Any], need: str) -> bool:
    """Whether a stored output lacks what a scorer needs (choices only matter for multiple-choice items)."""
    if need == "choices" and not row["item"].get("choices"):
        return False
    return row.get(need) is None

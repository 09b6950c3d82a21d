"""One evaluation run: every item on every model, each output saved whole with its record and scored at once.

Generated answers go to the backend from ``DEFAULT_CONCURRENCY`` threads at a time, so the fast engine's
continuous batching decodes them together; multiple-choice likelihoods go through
:func:`chatcore.engine.loglikelihood.loglikelihoods` in batches. An output row is written once per
(item, model), so an interrupted run keeps its finished items and a resumed one computes only the rest.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager, Sequence

from chatcore.core.errors import ChatCoreError
from chatcore.core.events import Finished
from chatcore.core.params import GenerationParams
from chatcore.core.settings import DEFAULT_CONCURRENCY
from chatcore.engine.base import Backend
from chatcore.engine.loglikelihood import choice_loglikelihoods
from chatcore.services.evaluation.scorers import ChoiceLikelihood, Output, Scorer
from chatcore.services.evaluation.testsets import TestItem
from chatcore.services.library.citations import GROUNDED_SYSTEM, grounded_question
from chatcore.services.library.retrieval import Passage, Scope
from storage import evaluation as db

BackendFor = Callable[[str], Backend]  # a model spec -> its loaded backend (blocks while it loads)
Hold = Callable[[Backend], ContextManager[Any]]  # keeps a backend loaded while a block runs (the model pool's)
# Items whose likelihoods are computed (and saved) together: large enough to batch, small enough that a
# cancel or a crash loses little.
LIKELIHOOD_GROUP = 32
PASSAGES = 5  # retrieved for each item of a run scoped to documents


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: outputs done of all, the model at work, and the rate since this worker began."""

    run_id: int
    status: str
    done: int
    total: int
    model: str | None = None
    items_per_minute: float | None = None
    error: str | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def describe(self) -> str:
        """One line for a progress bar or a status line."""
        rate = f" · {self.items_per_minute:.0f} items/min" if self.items_per_minute else ""
        where = f" · {self.model}" if self.model and self.status == "running" else ""
        tail = f" · {self.error}" if self.error else ""
        return f"run {self.run_id}: {self.status} · {self.done}/{self.total}{where}{rate}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


def needs_of(scorers: Sequence[Scorer]) -> set[str]:
    """What the scorers need computed: any of "text", "choices", "sources"."""
    return {scorer.needs for scorer in scorers}


class RunWorker:
    """Computes the missing outputs of one run, in the caller's thread."""

    def __init__(self, store: Any, owner: str, run_id: int, scorers: Sequence[Scorer], backend_for: BackendFor,
                 *, library: Any = None, cancel: threading.Event | None = None,
                 on_progress: Callable[[RunProgress], None] | None = None, hold: Hold | None = None) -> None:
        self.store, self.owner, self.run_id = store, owner, run_id
        self.hold = hold or contextlib.nullcontext
        self.scorers = list(scorers)
        self.backend_for = backend_for
        self.library = library
        self.cancel = cancel or threading.Event()
        self.on_progress = on_progress
        self._lock = threading.Lock()  # outputs are saved from the generating threads
        self._began = time.monotonic()
        self._made = 0
        self._model: str | None = None

    def run(self) -> RunProgress:
        """Compute every missing (item, model) output; the run ends finished, cancelled or failed."""
        run = db.get_run(self.store, self.owner, self.run_id)
        items = db.run_items(self.store, self.owner, self.run_id)
        params = GenerationParams.create(**run["params"].get("generation", {}))
        scope = Scope.from_dict(run["params"].get("scope"))
        needs = needs_of(self.scorers)
        if scope is not None:
            needs.add("sources")
        try:
            for model in run["models"]:
                if self.cancel.is_set():
                    break
                done = db.finished_pairs(self.store, self.run_id)
                todo = [item for item in items if (item["item_id"], model) not in done]
                if not todo:
                    continue
                self._model = model
                self._report()
                backend = self.backend_for(model)
                with self.hold(backend):  # the pool does not unload it mid-run to make room for another
                    self._model_run(backend, model, todo, params, scope, needs)
        except ChatCoreError as exc:
            db.update_run(self.store, self.run_id, status="failed", error=str(exc))
            return self.progress()
        except Exception as exc:  # an unexpected failure ends the run, not the server; finished items stay
            db.update_run(self.store, self.run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        db.update_run(self.store, self.run_id, status="cancelled" if self.cancel.is_set() else "finished")
        return self.progress()

    def progress(self) -> RunProgress:
        """This run's progress as stored, with this worker's rate."""
        run = db.get_run(self.store, self.owner, self.run_id)
        minutes = (time.monotonic() - self._began) / 60
        rate = self._made / minutes if self._made and minutes > 0 else None
        return RunProgress(self.run_id, run["status"], run["done"], run["total"], self._model, rate, run["error"])

    def _report(self) -> None:
        if self.on_progress:
            self.on_progress(self.progress())

    # -- one model ------------------------------------------------------------------------------------------

    def _model_run(self, backend: Backend, model: str, todo: list[dict[str, Any]], params: GenerationParams,
                   scope: Scope | None, needs: set[str]) -> None:
        items = [(row["item_id"], TestItem.from_dict(row)) for row in todo]
        for start in range(0, len(items), LIKELIHOOD_GROUP):
            if self.cancel.is_set():
                return
            group = items[start:start + LIKELIHOOD_GROUP]
            likelihoods = self._likelihoods(backend, [item for _, item in group]) if "choices" in needs else {}
            sources = {item.id: self._sources(item, scope) for _, item in group} if scope is not None else {}
            if "text" in needs:
                with ThreadPoolExecutor(DEFAULT_CONCURRENCY, thread_name_prefix="eval") as pool:
                    for item_id, item in group:
                        pool.submit(self._generate_and_save, backend, model, item_id, item, params,
                                    likelihoods.get(item.id), sources.get(item.id))
            else:
                for item_id, item in group:
                    self._save(model, item_id, item, Output(None, likelihoods.get(item.id), sources.get(item.id)),
                               self._record(backend, None, params), None)

    def _likelihoods(self, backend: Backend, items: list[TestItem]) -> dict[str, tuple[ChoiceLikelihood, ...]]:
        """Each multiple-choice item's per-choice log-likelihoods (lm-eval's context and one-space delimiter)."""
        asked = [item for item in items if item.choices]
        if not asked:
            return {}
        scored = choice_loglikelihoods(backend, [(item.loglikelihood_context(), [" " + c for c in item.choices])
                                                 for item in asked])
        return {item.id: tuple(ChoiceLikelihood(r.logprob, r.greedy, r.tokens, len(choice))
                               for choice, r in zip(item.choices, results))
                for item, results in zip(asked, scored)}

    def _sources(self, item: TestItem, scope: Scope) -> tuple[dict[str, Any], ...]:
        if self.library is None:
            raise ChatCoreError("this run is scoped to documents, but no library is open")
        return tuple(p.to_dict() for p in self.library.search(self.owner, item.question, scope, k=PASSAGES))

    def _generate_and_save(self, backend: Backend, model: str, item_id: int, item: TestItem,
                           params: GenerationParams, choices: tuple[ChoiceLikelihood, ...] | None,
                           sources: tuple[dict[str, Any], ...] | None) -> None:
        if self.cancel.is_set():
            return
        messages, system = item.prompt_messages(), None
        if sources is not None:  # grounded: the passages numbered in the question, as the chat does
            passages = [Passage.from_dict(s) for s in sources]
            messages[-1] = {"role": "user", "content": grounded_question(item.question, passages)}
            system = GROUNDED_SYSTEM
        finished, error = None, None
        try:
            for event in backend.stream(messages, params, system=system, cancel=self.cancel):
                if isinstance(event, Finished):
                    finished = event
        except ChatCoreError as exc:
            error = str(exc)
        if finished is not None and finished.finish_reason == "cancelled":
            return  # not an output: the resumed run generates it again
        if finished is not None and finished.error:
            error = finished.error
        text = finished.text if finished is not None else None
        self._save(model, item_id, item, Output(text, choices, sources), self._record(backend, finished, params), error)

    def _record(self, backend: Backend, finished: Finished | None, params: GenerationParams) -> dict[str, Any]:
        """The answer's reproducibility record: the weights, the settings, the seed, usage and timing."""
        info = getattr(backend, "info", None)
        record: dict[str, Any] = {"model": backend.model_name, "params": {**asdict(params), "stop": list(params.stop)}}
        if info is not None:
            record.update(device=info.device, dtype=info.dtype, weights_sha256=info.weights_sha256)
        if finished is not None:
            record.update(seed=finished.seed, finish_reason=finished.finish_reason,
                          prompt_tokens=finished.prompt_tokens, completion_tokens=finished.completion_tokens,
                          ttft_ms=finished.ttft_ms, total_ms=finished.total_ms, **finished.extra)
        return record

    def _save(self, model: str, item_id: int, item: TestItem, output: Output, record: dict[str, Any],
              error: str | None) -> None:
        scores = [] if error else [(scorer.name, scorer.score(item, output)) for scorer in self.scorers]
        with self._lock:
            db.save_output(
                self.store, self.run_id, item_id, model, text=output.text,
                choices=None if output.choices is None else [c.to_dict() for c in output.choices],
                sources=None if output.sources is None else list(output.sources), record=record, error=error,
                scores=[(name, s.value, s.correct, s.detail) for name, s in scores if s is not None])
            self._made += 1
        self._report()


def output_of(row: dict[str, Any]) -> Output:
    """An ``Output`` from a stored output row: what a rescore scores without generating again."""
    choices = row.get("choices")
    return Output(
        text=row.get("text"),
        choices=None if choices is None else tuple(ChoiceLikelihood(**c) for c in choices),
        sources=None if row.get("sources") is None else tuple(row["sources"]))

"""The blind arena: two models answer the same message side by side, their names hidden until the vote;
votes feed a Bradley-Terry leaderboard with bootstrap intervals (Chatbot Arena's method).

The sides are drawn at random for each battle, so a model is not favoured by always standing on the left.
Both answers stream at once (the fast engine batches them) and are saved as they grow, like chat answers.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

from chatcore.core.errors import ChatCoreError, ParameterError
from chatcore.core.events import Finished, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.engine.base import Backend
from chatcore.services.chat import check_user_text
from chatcore.services.evaluation.stats import Leaderboard, bt_leaderboard
from storage import evaluation as db
from storage.errors import InvalidValue

MIN_VOTES = 10  # below this many votes the leaderboard says "not enough votes yet"
SAVE_INTERVAL_S = 0.5  # as in the chat: a crash loses at most this much of an answer
VOTE_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}


@dataclass(frozen=True)
class ArenaView:
    """A battle as a front end may show it: the models' names only once the vote is cast."""

    battle_id: int
    prompt: str
    answer_a: str
    answer_b: str
    done_a: bool
    done_b: bool
    vote: str | None = None
    model_a: str | None = None  # hidden (None) until the vote
    model_b: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.done_a and self.done_b

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.battle_id, "prompt": self.prompt, "answer_a": self.answer_a, "answer_b": self.answer_b,
                "finished": self.finished, "vote": self.vote, "model_a": self.model_a, "model_b": self.model_b,
                "error": self.error}


def view_of(battle: dict[str, Any]) -> ArenaView:
    """A stored battle, its names shown only if it has a vote."""
    revealed = battle["vote"] is not None
    return ArenaView(battle["id"], battle["prompt"], battle["answer_a"] or "", battle["answer_b"] or "",
                     battle["record_a"] is not None, battle["record_b"] is not None, battle["vote"],
                     battle["model_a"] if revealed else None, battle["model_b"] if revealed else None)


class Arena:
    """Battles, votes and the leaderboard over one store; ``backend_for(spec)`` hands over a loaded model."""

    def __init__(self, store: Any, backend_for: Callable[[str], Backend], *, rng: random.Random | None = None,
                 hold: Callable[[Backend], ContextManager[Any]] | None = None) -> None:
        self.store = store
        self.backend_for = backend_for
        self.hold = hold or contextlib.nullcontext
        self._rng = rng or random.SystemRandom()

    def start(self, owner: str, prompt: str, models: Sequence[str]) -> int:
        """A new battle between two of ``models`` (drawn at random, sides shuffled); returns its id."""
        prompt = check_user_text(prompt)
        candidates = list(dict.fromkeys(m.strip() for m in models if m and m.strip()))
        if len(candidates) < 2:
            raise ParameterError("models", "the arena needs two different models; choose a second one")
        model_a, model_b = self._rng.sample(candidates, 2)
        for model in (model_a, model_b):  # a model that cannot load fails here, before a battle is stored
            self.backend_for(model)
        return db.create_battle(self.store, owner, prompt, model_a, model_b)

    def answer(self, owner: str, battle_id: int, params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[ArenaView]:
        """Stream both answers at once; each view holds both texts so far, the names still hidden."""
        battle = db.get_battle(self.store, owner, battle_id)
        if battle["record_a"] is not None or battle["record_b"] is not None:
            raise ParameterError("battle", f"battle {battle_id} has been answered")
        cancel = cancel or threading.Event()
        updates: "queue.SimpleQueue[tuple[str, str, bool, str | None]]" = queue.SimpleQueue()
        backends = {side: self.backend_for(battle[f"model_{side}"]) for side in ("a", "b")}  # both load first
        for side in ("a", "b"):
            threading.Thread(target=self._side, args=(owner, battle, side, backends[side], params, cancel, updates),
                             name=f"arena-{battle_id}-{side}", daemon=True).start()
        texts, done, errors = {"a": "", "b": ""}, {"a": False, "b": False}, []
        while not (done["a"] and done["b"]):
            side, text, finished, error = updates.get()
            texts[side], done[side] = text, finished
            if error:
                errors.append(f"{side.upper()}: {error}")
            yield ArenaView(battle_id, battle["prompt"], texts["a"], texts["b"], done["a"], done["b"],
                            error="; ".join(errors) or None)

    def _side(self, owner: str, battle: dict[str, Any], side: str, backend: Backend, params: GenerationParams,
              cancel: threading.Event, updates: "queue.SimpleQueue") -> None:
        text, saved_at, record, error = "", 0.0, None, None
        try:
            for event in self._held_stream(backend, battle["prompt"], params, cancel):
                if isinstance(event, TextDelta):
                    text += event.text
                    updates.put((side, text, False, None))
                    if time.monotonic() - saved_at > SAVE_INTERVAL_S:
                        db.save_battle_answer(self.store, owner, battle["id"], side, text, None)
                        saved_at = time.monotonic()
                elif isinstance(event, Finished):
                    text = event.text
                    error = event.error
                    record = {"model": event.model, "seed": event.seed, "finish_reason": event.finish_reason,
                              "prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
                              "ttft_ms": event.ttft_ms, "total_ms": event.total_ms, **event.extra}
        except ChatCoreError as exc:
            error = str(exc)
        except Exception as exc:  # a failed side must still end the battle's stream
            error = f"{type(exc).__name__}: {exc}"
        db.save_battle_answer(self.store, owner, battle["id"], side, text,
                              record or {"error": error or "stopped before the answer ended"})
        updates.put((side, text, True, error))

    def _held_stream(self, backend: Backend, prompt: str, params: GenerationParams,
                     cancel: threading.Event) -> Iterator[Any]:
        with self.hold(backend):  # the pool does not unload a model while it answers
            yield from backend.stream([{"role": "user", "content": prompt}], params, cancel=cancel)

    def vote(self, owner: str, battle_id: int, choice: str) -> ArenaView:
        """Record the vote and reveal both names."""
        if choice not in db.VOTES:
            raise ParameterError("vote", f"a vote is one of {', '.join(db.VOTES)}, not {choice!r}")
        battle = db.get_battle(self.store, owner, battle_id)
        if battle["vote"] is None and (battle["record_a"] is None or battle["record_b"] is None):
            raise ParameterError("vote", "wait until both answers have finished, then vote")
        try:
            return view_of(db.vote(self.store, owner, battle_id, choice))
        except InvalidValue as exc:
            raise ParameterError("vote", str(exc)) from None

    def battle(self, owner: str, battle_id: int) -> ArenaView:
        return view_of(db.get_battle(self.store, owner, battle_id))

    def leaderboard(self, owner: str, *, min_votes: int = MIN_VOTES, seed: int = 0) -> Leaderboard:
        """Bradley-Terry scores with bootstrap 95% intervals over the owner's votes."""
        votes = [(b["model_a"], b["model_b"], b["vote"]) for b in db.battles(self.store, owner, voted=True)]
        return bt_leaderboard(votes, min_votes=min_votes, seed=seed)

    def export(self, owner: str) -> list[dict[str, Any]]:
        """Every voted battle with both names, answers and records (as ``services.notes.feedback_records`` exports them)."""
        return [{"kind": "arena", "id": b["id"], "prompt": b["prompt"], "model_a": b["model_a"],
                 "model_b": b["model_b"], "answer_a": b["answer_a"], "answer_b": b["answer_b"], "vote": b["vote"],
                 "created": b["created"], "voted": b["voted"], "record_a": b["record_a"], "record_b": b["record_b"]}
                for b in db.battles(self.store, owner, voted=True)]

"""Engines shaped for tests: answers that never end early, at a steady pace, or held until the test lets
them go, and a checked answer."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any, Iterator

from chatcore.core.events import Finished, TextDelta

# Six distinct one-message conversations, for batching tests.
QUESTIONS = [[{"role": "user", "content": f"Question number {i}: why is the sky blue?"}] for i in range(6)]


def endless(engine: Any) -> Any:
    """The tiny engine with end-of-text switched off: answers always run to max_new_tokens (or Stop)."""
    clone = copy.copy(engine)
    clone.eos_ids = frozenset()
    return clone


class Wrapped:
    """An engine in front of another: everything but what a subclass overrides goes to the one inside."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    @property
    def context_window(self) -> int:  # a property on the inner engine: __getattr__ alone would not see it
        return self._engine.context_window

    @property
    def model_name(self) -> str:
        return self._engine.model_name


class Paced(Wrapped):
    """An engine at a steady pace (a pause per text delta), so a browser sees streaming and can press Stop
    however fast the decoder is."""

    def __init__(self, engine: Any, delay_s: float) -> None:
        super().__init__(engine)
        self._delay_s = delay_s

    def stream(self, *args, **kwargs):
        for event in self._engine.stream(*args, **kwargs):
            if isinstance(event, TextDelta):
                time.sleep(self._delay_s)
            yield event


class Scripted(Wrapped):
    """An engine that decodes for real but answers a fixed text, and keeps the (system, last message) it got:
    what a test of citations needs, since a random model never writes ``[1]``."""

    def __init__(self, engine: Any, answer: str) -> None:
        super().__init__(engine)
        self.answer = answer
        self.prompts: list[tuple[str | None, str]] = []

    def stream(self, history, params, **kwargs):
        last = history[-1]
        self.prompts.append((kwargs.get("system"), last["content"] if isinstance(last, dict) else last.content))
        for event in self._engine.stream(history, params, **kwargs):
            if isinstance(event, Finished):
                yield TextDelta(self.answer)
                yield dataclasses.replace(event, text=self.answer)
            elif not isinstance(event, TextDelta):
                yield event


class Replies(Wrapped):
    """A scripted engine with a script: each answer is the next text in ``answers`` (the last one repeats),
    and every (system, last message) it was asked is kept. What a test of a retry loop needs."""

    def __init__(self, engine: Any, answers: Sequence[str]) -> None:
        super().__init__(engine)
        self.answers = list(answers)
        self.prompts: list[tuple[str | None, str]] = []

    def stream(self, history, params, **kwargs):
        last = history[-1]
        self.prompts.append((kwargs.get("system"), last["content"] if isinstance(last, dict) else last.content))
        answer = self.answers[min(len(self.prompts), len(self.answers)) - 1]
        for event in self._engine.stream(history, params, **kwargs):
            if isinstance(event, Finished):
                yield TextDelta(answer)
                yield dataclasses.replace(event, text=answer)
            elif not isinstance(event, TextDelta):
                yield event


class Held(Wrapped):
    """An engine whose answers a test can hold after their first text delta.

    Inside ``with engine.holding():`` every answer that shows its first piece waits there until the block
    ends or its Stop (``cancel``) is set. A browser test can then press Stop, or see two answers run at
    once, while the answers are certainly still running, however fast or slow the machine is.
    """

    POLL_S = 0.01  # how often a held answer looks at its Stop

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self._released = threading.Event()
        self._released.set()
        self._changed = threading.Condition()
        self._waiting = 0

    @contextlib.contextmanager
    def holding(self) -> Iterator["Held"]:
        """Hold the answers that start streaming inside the block; let them all go when it ends."""
        self._released.clear()
        try:
            yield self
        finally:
            self._released.set()

    def wait_until_held(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` answers are waiting at their first piece; a ``TimeoutError`` after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._waiting >= count, timeout):
                raise TimeoutError(f"{self._waiting} answer(s) held, not {count}, after {timeout:.0f}s")

    def stream(self, history: Any, params: Any, *, system: str | None = None,
               cancel: threading.Event | None = None) -> Iterator[Any]:
        held = False
        for event in self._engine.stream(history, params, system=system, cancel=cancel):
            yield event
            if not held and isinstance(event, TextDelta):
                held = True
                self._hold(cancel)

    def _hold(self, cancel: threading.Event | None) -> None:
        with self._changed:
            self._waiting += 1
            self._changed.notify_all()
        try:
            while not self._released.wait(self.POLL_S):
                if cancel is not None and cancel.is_set():
                    return
        finally:
            with self._changed:
                self._waiting -= 1
                self._changed.notify_all()


def final_answer(engine: Any, params: Any, history: Any = QUESTIONS[0], **kwargs: Any) -> Finished:
    """Stream one answer, check that its deltas add up to its final text, and return the final event."""
    events = list(engine.stream(history, params, **kwargs))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == events[-1].text
    return events[-1]


class Named(Wrapped):
    """A real engine under another model name and size: several "models" for the pool's tests, one set of
    weights. ``parameters`` and ``dtype`` are what the pool's memory estimate reads."""

    def __init__(self, engine: Any, name: str, parameters: int, dtype: str = "float32") -> None:
        super().__init__(engine)
        self.info = dataclasses.replace(engine.info, name=name, parameters=parameters, dtype=dtype)

    @property
    def model_name(self) -> str:
        return self.info.name

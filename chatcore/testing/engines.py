"""Engines shaped for tests: answers that never end early, answers at a steady pace, and a checked answer."""

from __future__ import annotations

import copy
import time
from typing import Any

from chatcore.core.events import Finished, TextDelta

# Six distinct one-message conversations, for batching tests.
QUESTIONS = [[{"role": "user", "content": f"Question number {i}: why is the sky blue?"}] for i in range(6)]


def endless(engine: Any) -> Any:
    """The tiny engine with end-of-text switched off: answers always run to max_new_tokens (or Stop)."""
    clone = copy.copy(engine)
    clone.eos_ids = frozenset()
    return clone


class Paced:
    """An engine at a steady pace (a pause per text delta), so a browser sees streaming and can press Stop
    however fast the decoder is."""

    def __init__(self, engine, delay_s: float) -> None:
        self._engine = engine
        self._delay_s = delay_s

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    @property
    def context_window(self) -> int:
        return self._engine.context_window

    @property
    def model_name(self) -> str:
        return self._engine.model_name

    def stream(self, *args, **kwargs):
        for event in self._engine.stream(*args, **kwargs):
            if isinstance(event, TextDelta):
                time.sleep(self._delay_s)
            yield event


def final_answer(engine: Any, params: Any, history: Any = QUESTIONS[0], **kwargs: Any) -> Finished:
    """Stream one answer, check that its deltas add up to its final text, and return the final event."""
    events = list(engine.stream(history, params, **kwargs))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == events[-1].text
    return events[-1]

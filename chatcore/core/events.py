"""Typed events streamed by every backend: one ``Started``, text deltas, then one ``Finished``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class Started:
    """The prompt was fitted to the window and decoding begins."""

    prompt_tokens: int
    context_window: int
    dropped_messages: int  # oldest history messages left out to fit the window
    seed: int | None  # the seed actually used (drawn when the caller gave none)


@dataclass(frozen=True)
class TextDelta:
    """New answer text, in order; joining every delta gives the whole answer."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The answer is over: why it ended, its usage and its timing."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None  # request start to first token, prefill included
    decode_tok_s: float | None  # tokens per second after the first one
    total_ms: float
    model: str
    seed: int | None = None
    dropped_messages: int = 0
    error: str | None = None  # set when finish_reason == "error" (remote backends)
    extra: dict[str, Any] = field(default_factory=dict)  # backend facts: device, dtype, weights hash

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as printed by ``chatcore ask --json``."""
        return asdict(self)


Event = Union[Started, TextDelta, Finished]

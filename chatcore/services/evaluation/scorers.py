"""Scorers: how one output of one item is judged. Each gives a value in 0..1 and whether it counts as correct.

A scorer declares what it ``needs`` of an output (generated text, per-choice log-likelihoods, retrieved
sources), so a rescore can tell what it can score without generating again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from chatcore.services.evaluation.testsets import TestItem


@dataclass(frozen=True)
class ChoiceLikelihood:
    """One choice's log-likelihood after the item's context, as lm-evaluation-harness computes it."""

    logprob: float  # sum of the continuation tokens' log-probabilities
    greedy: bool  # every continuation token was the argmax
    tokens: int
    chars: int  # len(choice), acc_norm's normalizer

    def to_dict(self) -> dict[str, Any]:
        return {"logprob": self.logprob, "greedy": self.greedy, "tokens": self.tokens, "chars": self.chars}


@dataclass(frozen=True)
class Output:
    """What a model produced for one item: any of generated text, choice likelihoods and retrieved sources."""

    text: str | None = None
    choices: tuple[ChoiceLikelihood, ...] | None = None
    sources: tuple[dict[str, Any], ...] | None = None  # Passage.to_dict() of each retrieved passage, in rank order


@dataclass(frozen=True)
class Score:
    """A scorer's verdict on one output."""

    value: float  # 0..1
    correct: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    """Judges one output of one item; ``None`` when the item is not one it scores (e.g. a choice scorer on a
    short-answer item)."""

    name: str
    needs: str  # "text", "choices" or "sources"

    def score(self, item: TestItem, output: Output) -> Score | None: ...

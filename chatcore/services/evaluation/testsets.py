"""Test sets: labeled questions (short answers or multiple choice) read from JSONL or CSV and validated row by row."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

LETTERS = string.ascii_uppercase  # choice labels: A, B, C, ...
MAX_CHOICES = 26
# How a multiple-choice item is asked when the model writes its answer, and read from the letter it writes.
CHOICE_INSTRUCTION = "Answer with the letter of the correct choice."


@dataclass(frozen=True)
class TestItem:
    """One labeled question: the prompt as chat messages, accepted answers, and choices with the right one."""

    id: str
    messages: tuple[dict[str, str], ...]  # {"role", "content"}; a plain "question" is one user message
    answers: tuple[str, ...] = ()  # accepted answers (regex patterns for the regex scorer)
    choices: tuple[str, ...] = ()  # multiple choice options, in order (labelled A, B, ...)
    gold: int | None = None  # index into choices of the right one
    tags: tuple[str, ...] = ()
    pages: tuple[dict[str, Any], ...] = field(default=())  # gold pages for retrieval: {"document", "page"}

    @property
    def question(self) -> str:
        """The last user message: what is asked."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    @property
    def multiple_choice(self) -> bool:
        return bool(self.choices)

    def prompt_messages(self) -> list[dict[str, str]]:
        """The messages a generating model gets; multiple choice lists the options as ``A. ...`` lines."""
        if not self.choices:
            return [dict(m) for m in self.messages]
        options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(self.choices))
        *before, last = [dict(m) for m in self.messages]
        last["content"] = f"{last['content']}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
        return [*before, last]

    def loglikelihood_context(self) -> str:
        """The context each choice continues when scored by log-likelihood: lm-evaluation-harness's usual
        ``Question: ...\\nAnswer:`` (each choice follows after one space)."""
        return f"Question: {self.question}\nAnswer:"

    def to_dict(self) -> dict[str, Any]:
        """The item as stored (and as written back to JSONL)."""
        data: dict[str, Any] = {"id": self.id, "messages": [dict(m) for m in self.messages],
                                "answers": list(self.answers)}
        if self.choices:
            data["choices"], data["gold"] = list(self.choices), self.gold
        if self.tags:
            data["tags"] = list(self.tags)
        if self.pages:
            data["pages"] = [dict(p) for p in self.pages]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TestItem":
        """An item from its stored dict (as ``to_dict`` wrote it; extra keys such as ``item_id`` are ignored)."""
        return cls(id=str(data["id"]), messages=tuple(dict(m) for m in data["messages"]),
                   answers=tuple(data.get("answers") or ()), choices=tuple(data.get("choices") or ()),
                   gold=data.get("gold"), tags=tuple(data.get("tags") or ()),
                   pages=tuple(dict(p) for p in data.get("pages") or ()))


@dataclass(frozen=True)
class TestSet:
    """A validated test set: its items in file order, and where they came from."""

    name: str
    items: tuple[TestItem, ...]
    filename: str | None = None

    @property
    def multiple_choice(self) -> int:
        """How many items are multiple choice."""
        return sum(item.multiple_choice for item in self.items)

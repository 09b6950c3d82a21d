"""Splitting a page's text into overlapping passages whose offsets index that page exactly."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# A passage ends after a sentence when it can, else after a word.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+|\n\s*\n")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ChunkSettings:
    """How pages are cut: passages of at most ``chars`` characters, each sharing ``overlap`` with the last.

    Recorded with every document: a document indexed with other settings is indexed again.
    """

    chars: int = 1000
    overlap: int = 200
    version: int = 1  # of this algorithm: bump it when the cutting changes

    def __post_init__(self) -> None:
        if not 100 <= self.chars <= 20_000:
            raise ValueError("chunk size must be between 100 and 20,000 characters")
        if not 0 <= self.overlap < self.chars // 2:
            raise ValueError("chunk overlap must be at least 0 and less than half the chunk size")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chunk_page(text: str, settings: ChunkSettings = ChunkSettings()) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the page's passages; ``text[start:end]`` is each passage, trimmed of space."""
    spans: list[tuple[int, int]] = []
    start, length = _skip_space(text, 0), len(text)
    while start < length:
        end = min(start + settings.chars, length)
        if end < length:
            end = _break_before(text, start, end, settings.chars)
        trimmed_end = end
        while trimmed_end > start and text[trimmed_end - 1].isspace():
            trimmed_end -= 1
        if trimmed_end > start:
            spans.append((start, trimmed_end))
        if end >= length:
            break
        # The next passage starts ``overlap`` back, at a word's start, and always moves forward.
        next_start = max(end - settings.overlap, start + 1)
        while next_start < end and not text[next_start - 1].isspace():
            next_start += 1
        start = _skip_space(text, next_start)
    return spans


def _break_before(text: str, start: int, end: int, chars: int) -> int:
    """The best place to end a passage at or before ``end``: a sentence end in its last half, else a space."""
    window = text[start + chars // 2:end]
    sentence_ends = [m.end() for m in _SENTENCE_END.finditer(window)]
    if sentence_ends:
        return start + chars // 2 + sentence_ends[-1]
    space = text.rfind(" ", start + chars // 2, end)
    newline = text.rfind("\n", start + chars // 2, end)
    cut = max(space, newline)
    return cut + 1 if cut > start else end


def _skip_space(text: str, index: int) -> int:
    match = _SPACE.match(text, index)
    return match.end() if match else index

"""Checking a narrative against its result: every number it quotes must be one the result holds.

A number counts as found when some value in the result (or the row count) equals it, or rounds to it at the
precision it is written with (``4.21`` for ``4.2066``; ``4,201`` for ``4201``; ``42%`` for ``0.42`` too). The
others are returned, to be flagged where the narrative is shown, as unverified citations are in the library.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"(?<![\w.])[-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?|(?<![\w.])[-−]?\d+(?:\.\d+)?%?")


def numbers_in(text: str) -> list[str]:
    """The numbers written in ``text``, as written."""
    return [m.group(0) for m in _NUMBER.finditer(text or "")]


def _value(written: str) -> tuple[float, int, bool]:
    """The number, its decimals, and whether it was a percentage."""
    percent = written.endswith("%")
    core = written.rstrip("%").replace(",", "").replace("−", "-")
    decimals = len(core.split(".", 1)[1]) if "." in core else 0
    return float(core), decimals, percent


def _result_numbers(rows: list[list[Any]]) -> list[float]:
    values: list[float] = [float(len(rows))]
    for row in rows:
        for cell in row:
            if isinstance(cell, bool):
                continue
            if isinstance(cell, (int, float)):
                values.append(float(cell))
            elif isinstance(cell, str):
                values += [_value(n)[0] for n in numbers_in(cell)]
    return values


def _matches(number: float, decimals: int, percent: bool, candidate: float) -> bool:
    for scale in ((1.0, 100.0) if percent else (1.0,)):
        value = candidate * scale
        if round(value, decimals) == number or abs(value - number) < 1e-9:
            return True
        if decimals == 0 and abs(value - number) < 0.5 and abs(number) >= 10:
            return True  # "about 4201" for 4200.6
    return False


def unverified_numbers(narrative: str, rows: list[list[Any]], *, also_in: str = "") -> list[str]:
    """The numbers ``narrative`` quotes that ``rows`` do not hold, nor the text ``also_in`` (say, the question:
    a year it names is no invention)."""
    candidates = _result_numbers(rows) + [_value(n)[0] for n in numbers_in(also_in)]
    missing: list[str] = []
    for written in numbers_in(narrative):
        number, decimals, percent = _value(written)
        if not any(_matches(number, decimals, percent, c) for c in candidates) and written not in missing:
            missing.append(written)
    return missing

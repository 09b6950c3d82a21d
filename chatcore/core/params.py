"""Sampling parameters: one validated object, refused early with a message naming the parameter."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from chatcore.core.errors import ParameterError

# Bounds shown to users; each message names the parameter and its allowed range.
TEMPERATURE_RANGE = (0.0, 2.0)
REPETITION_PENALTY_RANGE = (1.0, 2.0)
SEED_RANGE = (0, 2**63 - 1)
MAX_STOP_STRINGS = 16


def _number(name: str, value: Any, *, integer: bool) -> float | int:
    """Coerce ``value`` to a finite number, refusing bools, strings of junk, NaN and infinity."""
    if isinstance(value, bool) or value is None:
        raise ParameterError(name, f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value) if not integer else int(value, 10)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ParameterError(name, f"{name} must be {kind}, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ParameterError(name, f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(name, f"{name} must be a finite number, got {value}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ParameterError(name, f"{name} must be an integer, got {value}")
        return int(value)
    return float(value)


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise ParameterError(
            name, f"{name} must be in the range {bracket}{low:g}, {high:g}], got {value:g}"
        )


@dataclass(frozen=True)
class GenerationParams:
    """How to sample one answer. Construct through :meth:`create` to validate user input."""

    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 0.95  # nucleus sampling; 1 keeps every token
    top_k: int = 50  # 0 turns top-k filtering off
    max_new_tokens: int = 512
    repetition_penalty: float = 1.1  # 1 means no penalty; SmolLM2 loops without a small one
    seed: int | None = None  # None: a fresh random seed, recorded with the answer
    stop: tuple[str, ...] = field(default_factory=tuple)

    @property
    def greedy(self) -> bool:
        """Whether decoding picks the most likely token every step."""
        return self.temperature == 0.0

    @classmethod
    def create(cls, max_new_tokens_limit: int | None = None, **values: Any) -> "GenerationParams":
        """Validate raw values (from flags, forms or JSON) and build the parameters.

        ``None`` means "use the default". ``max_new_tokens_limit`` is the model's window, when known.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
        given = {k: v for k, v in values.items() if v is not None}
        out: dict[str, Any] = {}
        if "temperature" in given:
            out["temperature"] = _number("temperature", given["temperature"], integer=False)
            _check_range("temperature", out["temperature"], *TEMPERATURE_RANGE)
        if "top_p" in given:
            out["top_p"] = _number("top_p", given["top_p"], integer=False)
            _check_range("top_p", out["top_p"], 0.0, 1.0, low_open=True)
        if "top_k" in given:
            out["top_k"] = _number("top_k", given["top_k"], integer=True)
            if out["top_k"] < 0:
                raise ParameterError("top_k", f"top_k must be 0 (off) or a positive integer, got {out['top_k']}")
        if "max_new_tokens" in given:
            out["max_new_tokens"] = _number("max_new_tokens", given["max_new_tokens"], integer=True)
            high = max_new_tokens_limit or 2**31 - 1
            if not 1 <= out["max_new_tokens"] <= high:
                # Before a model is loaded its window is unknown; the engine checks the upper bound then.
                bound = str(high) if max_new_tokens_limit else "the model's context window"
                raise ParameterError(
                    "max_new_tokens",
                    f"max_new_tokens must be in the range [1, {bound}], got {out['max_new_tokens']}",
                )
        if "repetition_penalty" in given:
            out["repetition_penalty"] = _number("repetition_penalty", given["repetition_penalty"], integer=False)
            _check_range("repetition_penalty", out["repetition_penalty"], *REPETITION_PENALTY_RANGE)
        if "seed" in given:
            out["seed"] = _number("seed", given["seed"], integer=True)
            if not SEED_RANGE[0] <= out["seed"] <= SEED_RANGE[1]:
                raise ParameterError("seed", f"seed must be in the range [0, 2^63-1], got {out['seed']}")
        if "stop" in given:
            out["stop"] = _stop_strings(given["stop"])
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, as stored with each answer."""
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


def _stop_strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise ParameterError("stop", "stop must be a string or a list of strings")
    if len(value) > MAX_STOP_STRINGS:
        raise ParameterError("stop", f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(value)}")
    if any(s == "" for s in value):
        raise ParameterError("stop", "stop strings must not be empty")
    return tuple(value)

"""Every bad generation parameter is refused with a message naming it and its range."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore.core.errors import ParameterError
from chatcore.core.params import GenerationParams

BAD = [
    ("temperature", 5), ("temperature", -0.1), ("temperature", math.nan), ("temperature", math.inf),
    ("temperature", "hot"), ("temperature", True),
    ("top_p", 0), ("top_p", 1.5), ("top_p", math.nan),
    ("top_k", -1), ("top_k", 2.5), ("top_k", "many"),
    ("max_new_tokens", 0), ("max_new_tokens", -3), ("max_new_tokens", 1.5),
    ("repetition_penalty", 0.9), ("repetition_penalty", 2.5), ("repetition_penalty", -math.inf),
    ("seed", -1), ("seed", 2**64), ("seed", "abc"),
    ("stop", 3), ("stop", [""]), ("stop", ["x"] * 17),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_bad_values_are_refused_naming_the_parameter(name, value):
    with pytest.raises(ParameterError) as info:
        GenerationParams.create(**{name: value})
    assert info.value.param == name
    assert name in str(info.value)


def test_ranges_are_stated():
    with pytest.raises(ParameterError, match=r"temperature must be in the range \[0, 2\], got 5"):
        GenerationParams.create(temperature=5)
    with pytest.raises(ParameterError, match=r"max_new_tokens must be in the range \[1, 2048\], got 0"):
        GenerationParams.create(max_new_tokens=0, max_new_tokens_limit=2048)


def test_unknown_parameter_is_refused():
    with pytest.raises(ParameterError, match="unknown parameter 'temprature'"):
        GenerationParams.create(temprature=1)


def test_strings_from_forms_and_flags_are_accepted():
    params = GenerationParams.create(temperature="0", top_p="0.5", top_k="3", max_new_tokens="9", seed="4")
    assert (params.temperature, params.top_p, params.top_k, params.max_new_tokens, params.seed) == (0.0, 0.5, 3, 9, 4)
    assert params.greedy


def test_none_means_default():
    assert GenerationParams.create(temperature=None, seed=None) == GenerationParams()


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_temperature_accepted_exactly_in_range(value):
    try:
        params = GenerationParams.create(temperature=value)
    except ParameterError:
        assert not (0 <= value <= 2)
    else:
        assert 0 <= params.temperature <= 2 and math.isfinite(value)


@given(st.integers())
def test_max_new_tokens_accepted_exactly_in_range(value):
    try:
        GenerationParams.create(max_new_tokens=value, max_new_tokens_limit=4096)
    except ParameterError:
        assert not (1 <= value <= 4096)
    else:
        assert 1 <= value <= 4096

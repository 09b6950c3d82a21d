"""Chat templating and context fitting: the oldest turns go first, never the system prompt or the newest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.core.chat import Message, build_messages, fit_to_window, render_ids
from chatcore.core.errors import ContextOverflowError, ParameterError
from chatcore.testing.tiny import tiny_tokenizer

TOKENIZER = tiny_tokenizer()


def conversation(turns: int, size: int = 40) -> list[Message]:
    messages = []
    for i in range(turns):
        messages.append(Message("user", f"question {i} " + "q" * size))
        messages.append(Message("assistant", f"answer {i} " + "a" * size))
    messages.append(Message("user", "the newest question"))
    return messages


def test_system_prompt_goes_first_through_the_template():
    messages = build_messages([{"role": "user", "content": "hi"}], system="Be brief.")
    text = TOKENIZER.decode(render_ids(TOKENIZER, messages))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_everything_kept_when_it_fits():
    messages = build_messages(conversation(3), system="sys")
    fitted = fit_to_window(TOKENIZER, messages, window=4096, max_new_tokens=100)
    assert fitted.dropped_messages == 0 and fitted.messages == messages


def test_oldest_turns_are_dropped_first():
    messages = build_messages(conversation(6), system="sys")
    full = len(render_ids(TOKENIZER, messages))
    fitted = fit_to_window(TOKENIZER, messages, window=full - 60 + 50, max_new_tokens=50)
    assert fitted.dropped_messages >= 1
    assert fitted.messages[0] == messages[0]  # system prompt kept
    assert fitted.messages[-1] == messages[-1]  # newest message kept
    assert fitted.messages[1].role == "user"
    assert fitted.messages[1:] == messages[1 + fitted.dropped_messages:]  # a suffix of the history
    assert len(fitted.input_ids) <= full - 60


def test_single_message_too_long_is_a_clear_error():
    messages = build_messages([{"role": "user", "content": "x" * 500}], system=None)
    with pytest.raises(ContextOverflowError, match="too long for the model's context window"):
        fit_to_window(TOKENIZER, messages, window=256, max_new_tokens=16)


def test_bad_roles_and_order_are_refused():
    with pytest.raises(ParameterError, match=r"messages\[0\].role"):
        build_messages([{"role": "robot", "content": "hi"}], system=None)
    with pytest.raises(ParameterError, match="last message must be a user message"):
        build_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], system=None)


@settings(max_examples=40, deadline=None)
@given(turns=st.integers(0, 8), window=st.integers(64, 1200), max_new=st.integers(1, 60))
def test_fitting_property(turns, window, max_new):
    messages = build_messages(conversation(turns, size=20), system="sys")
    try:
        fitted = fit_to_window(TOKENIZER, messages, window=window, max_new_tokens=max_new)
    except ContextOverflowError:
        # Only when even system + newest alone does not fit.
        assert len(render_ids(TOKENIZER, [messages[0], messages[-1]])) > window - max_new
        return
    except ParameterError:
        assert max_new >= window
        return
    assert len(fitted.input_ids) + max_new <= window
    assert fitted.messages[0] == messages[0] and fitted.messages[-1] == messages[-1]
    assert fitted.messages[1:] == messages[1 + fitted.dropped_messages:]

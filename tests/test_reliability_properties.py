"""Properties over arbitrary input: parameter parsing, message checks and imports never do anything
but accept a valid value or refuse with a clear error, and a refused import changes nothing.

(Round trips of single conversations: tests/storage/test_storage_transfer.py; parameter ranges:
tests/test_params.py; context fitting: tests/test_chat.py.)
"""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chatcore.api.errors import APIError
from chatcore.api.serving import parse_request
from chatcore.core.errors import ParameterError
from chatcore.core.params import REPETITION_PENALTY_RANGE, SEED_RANGE, TEMPERATURE_RANGE
from chatcore.services.chat import MAX_MESSAGE_CHARS, check_user_text
from storage import ImportValidationError, Store
from storage.transfer import CONVERSATION_FIELDS, MESSAGE_FIELDS, TOP_FIELDS

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
FIELDS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "repetition_penalty", "seed",
          "stop", "n", "logprobs", "frequency_penalty", "presence_penalty", "response_format")


@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6))
@settings(max_examples=600, deadline=None)
def test_any_request_parameters_are_valid_or_refused_by_name(body: dict) -> None:
    try:
        params = parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
                               ).sampling_params(2048)
    except APIError as exc:
        assert exc.status == 400 and exc.param and str(exc)
        return
    except ParameterError as exc:
        assert exc.param and exc.param in str(exc)
        return
    assert TEMPERATURE_RANGE[0] <= params.temperature <= TEMPERATURE_RANGE[1]
    assert 0 < params.top_p <= 1 and params.top_k >= 0
    assert 1 <= params.max_new_tokens <= 2048
    assert REPETITION_PENALTY_RANGE[0] <= params.repetition_penalty <= REPETITION_PENALTY_RANGE[1]
    assert params.seed is None or SEED_RANGE[0] <= params.seed <= SEED_RANGE[1]
    assert all(math.isfinite(v) for v in (params.temperature, params.top_p, params.repetition_penalty))
    assert all(isinstance(s, str) and s for s in params.stop)


MESSAGE_LISTS = st.one_of(JSON_VALUES, st.lists(st.dictionaries(
    st.sampled_from(["role", "content", "name"]),
    st.one_of(st.sampled_from(["system", "developer", "user", "assistant", "tool"]), JSON_VALUES,
              st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": JSON_VALUES}),
                       max_size=2))), max_size=4))


@given(MESSAGE_LISTS)
@settings(max_examples=600, deadline=None)
def test_any_messages_are_a_conversation_or_refused_by_name(messages) -> None:
    try:
        request = parse_request({"model": "m", "messages": messages})
    except APIError as exc:
        assert exc.status == 400 and exc.param == "messages" and str(exc).startswith("messages")
        return
    system, history, prompt = request.conversation()
    assert isinstance(prompt, str) and messages[-1]["role"] == "user"
    assert system is None or isinstance(system, str)
    assert all(m.role in ("user", "assistant") and isinstance(m.content, str) for m in history)


@given(st.one_of(st.text(), st.text(st.characters(max_codepoint=0x7f)), st.binary().map(
    lambda b: b.decode("utf-8", "surrogateescape")), JSON_SCALARS))
@settings(max_examples=600, deadline=None)
def test_a_message_is_accepted_exactly_when_it_is_clean_text(text) -> None:
    clean = (isinstance(text, str) and bool(text.strip()) and len(text) <= MAX_MESSAGE_CHARS
             and not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)
             and not re.search(r"[\ud800-\udfff]", text))
    try:
        assert check_user_text(text) == text
        assert clean
    except ParameterError as exc:
        assert not clean and exc.param == "message" and str(exc)


def _document() -> dict:
    return {"format": "chatcore-export", "version": 1, "conversations": [
        {"id": 1, "title": "kept", "params": {"temperature": 0.5}, "messages": [
            {"id": 10, "role": "user", "content": "hello"},
            {"id": 11, "role": "assistant", "content": "hi", "complete": True, "rating": 1}]},
        {"id": 2, "title": "forked", "parent_conversation_id": 1, "parent_message_id": 10, "messages": [
            {"id": 12, "role": "user", "content": "again"}]},
    ]}


@pytest.fixture(scope="module")
def import_store(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("props") / "db.sqlite")
    store.import_json("local", _document())
    return store


def _snapshot(store: Store) -> tuple:
    conn = store.db.conn
    return (conn.execute("SELECT count(*), coalesce(max(id), 0) FROM conversations").fetchone(),
            conn.execute("SELECT count(*), coalesce(max(id), 0) FROM messages").fetchone())


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_broken_import_is_refused_whole_and_changes_nothing(import_store: Store, data) -> None:
    text = json.dumps(_document())
    kind = data.draw(st.sampled_from(["truncate", "unknown field", "wrong type", "duplicate id", "bad role",
                                      "bad timestamp", "flip byte"]))
    document = _document()
    conversation = data.draw(st.sampled_from(document["conversations"]))
    message = data.draw(st.sampled_from(conversation["messages"]))
    if kind == "truncate":
        cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
        broken: str | dict = text[:cut]
    elif kind == "unknown field":
        target = data.draw(st.sampled_from([document, conversation, message]))
        name = data.draw(st.text(min_size=1, max_size=8))
        known = {id(document): TOP_FIELDS, id(conversation): CONVERSATION_FIELDS, id(message): MESSAGE_FIELDS}
        assume(name not in target and name not in known[id(target)])  # "archived" is a field, not junk
        target[name] = data.draw(JSON_SCALARS)
        broken = document
    elif kind == "wrong type":
        target = data.draw(st.sampled_from([conversation, message]))
        key = data.draw(st.sampled_from(["id", "messages"] if target is conversation else ["id", "role", "content"]))
        target[key] = data.draw(st.one_of(st.booleans(), st.floats(allow_nan=False), st.dictionaries(
            st.text(max_size=2), st.integers(), max_size=1)))
        broken = document
    elif kind == "duplicate id":
        other = data.draw(st.sampled_from([m for c in document["conversations"] for m in c["messages"]
                                           if m is not message]))
        other["id"] = message["id"]
        broken = document
    elif kind == "bad role":
        message["role"] = data.draw(st.text(max_size=8).filter(lambda r: r not in ("system", "user", "assistant")))
        broken = document
    elif kind == "bad timestamp":
        message["created"] = data.draw(st.text(max_size=12).filter(lambda t: not re.match(r"^\s*\d{4}", t)))
        broken = document
    else:
        raw = bytearray(text.encode())
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[at] = data.draw(st.sampled_from([0x00, 0xFF, ord("{"), ord("]"), ord('"'), ord(",")]))
        broken = bytes(raw)
    before = _snapshot(import_store)
    try:
        import_store.import_json("local", broken)
    except ImportValidationError as exc:
        assert str(exc)
        assert _snapshot(import_store) == before
        return
    # A flipped byte may still spell a valid document (inside a string): then it imported whole.
    assert kind == "flip byte"
    after = _snapshot(import_store)
    assert after[0][0] == before[0][0] + 2 and after[1][0] == before[1][0] + 3

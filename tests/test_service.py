"""The service layer over the tiny model and a real SQLite file: saving as it streams, reproducing answers."""

from __future__ import annotations

import threading

import pytest

from chatcore.core.events import Finished, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.services.chat import ChatService, Saved
from storage import Store


@pytest.fixture
def service(tiny_engine, tmp_path):
    return ChatService(lambda: tiny_engine, Store(tmp_path / "chat.db"))


def finished(events) -> Finished:
    return [e for e in events if isinstance(e, Finished)][-1]


def test_exchange_is_saved_with_its_settings_and_stats(service, tiny_engine):
    events = list(service.ask("What is a p-value?", GenerationParams.create(temperature=0.8, max_new_tokens=12)))
    saved = events[0]
    assert isinstance(saved, Saved)
    final = finished(events)
    conversation = service.store.get_conversation("local", saved.conversation_id)
    user, answer = conversation["messages"]
    assert (user["role"], user["content"]) == ("user", "What is a p-value?")
    assert answer["content"] == final.text and answer["complete"]
    assert answer["params"]["seed"] == final.seed
    assert answer["params"]["weights_sha256"] == tiny_engine.info.weights_sha256
    assert answer["params"]["dtype"] == "float32" and answer["params"]["device"] == "cpu"
    assert answer["prompt_tokens"] == final.prompt_tokens and answer["completion_tokens"] == final.completion_tokens


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.2, top_p=0.9)])
def test_reproduce_gives_the_same_answer(service, sampling):
    events = list(service.ask("Design an experiment.", GenerationParams.create(max_new_tokens=20, **sampling)))
    conversation = service.store.get_conversation("local", events[0].conversation_id)
    answer = conversation["messages"][-1]
    again = finished(service.reproduce("local", answer["id"]))
    assert again.text == answer["content"] and again.seed == answer["params"]["seed"]


def test_reproduce_refuses_user_messages_and_other_owners(service):
    events = list(service.ask("Hello", GenerationParams.create(max_new_tokens=4)))
    from chatcore.core.errors import ParameterError
    from storage.errors import NotFound

    with pytest.raises(ParameterError):
        list(service.reproduce("local", events[0].user_message_id))
    answer_id = service.store.get_conversation("local", events[0].conversation_id)["messages"][-1]["id"]
    with pytest.raises(NotFound):
        list(service.reproduce("mallory", answer_id))


def test_stopped_answer_is_kept_and_marked_incomplete(service):
    cancel = threading.Event()
    events = []
    # Greedy: the tiny model then runs to max_new_tokens, so only the cancel can end it early.
    for event in service.ask("Write a long essay.", GenerationParams.create(temperature=0, max_new_tokens=300),
                             cancel=cancel):
        events.append(event)
        if isinstance(event, TextDelta) and len(events) > 5:
            cancel.set()
    final = finished(events)
    assert final.finish_reason == "cancelled"
    answer = service.store.get_conversation("local", events[0].conversation_id)["messages"][-1]
    assert not answer["complete"] and answer["content"] == final.text and answer["finish_reason"] == "cancelled"


def test_abandoned_stream_leaves_the_partial_answer(service):
    stream = service.ask("Another long answer", GenerationParams.create(temperature=0, max_new_tokens=300))
    text = ""
    for event in stream:
        if isinstance(event, TextDelta):
            text += event.text
            if len(text) > 10:
                break
    stream.close()  # the client went away
    saved = service.store.list_conversations("local")[0]
    answer = service.store.get_conversation("local", saved["id"])["messages"][-1]
    assert answer["content"] == text and not answer["complete"]


def test_bad_messages_are_refused_before_any_write(service):
    from chatcore.core.errors import ParameterError

    for bad in ["", "   \n", "a\x00b", "\ud800", "x" * 200_001]:
        with pytest.raises(ParameterError):
            list(service.ask(bad, GenerationParams()))
    assert service.store.count_conversations("local") == 0


def test_prompt_too_long_for_the_window_writes_nothing(service, tiny_engine):
    from chatcore.core.errors import ContextOverflowError

    with pytest.raises(ContextOverflowError):
        list(service.ask("word " * 3000, GenerationParams.create(max_new_tokens=16)))
    assert service.store.count_conversations("local") == 0
    first = list(service.ask("short", GenerationParams.create(max_new_tokens=2)))[0]
    with pytest.raises(ContextOverflowError):
        list(service.ask("word " * 3000, GenerationParams.create(max_new_tokens=16),
                         conversation_id=first.conversation_id))
    assert len(service.store.get_conversation("local", first.conversation_id)["messages"]) == 2

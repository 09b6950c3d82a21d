"""Export and import: a lossless round trip; any bad file leaves the database unchanged."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MAX_IMPORT_BYTES,
    ImportValidationError,
    Store,
)

IDS = ("id", "conversation_id", "parent_conversation_id", "parent_message_id")


def without_ids(conversation: dict) -> dict:
    result = {k: v for k, v in conversation.items() if k not in IDS}
    result["messages"] = [{k: v for k, v in m.items() if k not in IDS} for m in conversation["messages"]]
    return result


@pytest.fixture
def rich(store: Store, chat: int) -> list[int]:
    """Two conversations, one a fork of the other, with ratings, an archive flag and odd text."""
    answer = store.get_conversation("local", chat)["messages"][1]["id"]
    store.rate_message("local", answer, 1, "good")
    fork = store.fork_conversation("local", chat, answer)
    store.add_message(fork, "user", "Émojis 🎉, quotes \" and <html> & a NUL \x00 byte")
    partial = store.begin_assistant_message(fork, model="tiny")
    store.update_message_content(partial, "cut off mid")
    store.set_archived("local", fork, True)
    return [chat, fork]


def test_round_trip_into_a_fresh_database(store: Store, rich: list[int], tmp_path):
    document = store.export_json("local")
    assert (document["format"], document["version"]) == (EXPORT_FORMAT, EXPORT_VERSION)
    text = json.dumps(document)

    with Store(tmp_path / "other.db") as other:
        new_ids = other.import_json("alice", text)
        assert len(new_ids) == 2
        for old, new in zip(rich, new_ids):
            before = store.get_conversation("local", old)
            after = other.get_conversation("alice", new)
            assert after["owner"] == "alice"
            assert without_ids({**after, "owner": "local"}) == without_ids(before) | {
                "deleted_at": None
            }
        # The fork link is rewired to the new ids.
        fork = other.get_conversation("alice", new_ids[1])
        assert fork["parent_conversation_id"] == new_ids[0]
        assert fork["parent_message_id"] == other.get_conversation("alice", new_ids[0])["messages"][1]["id"]
        # Exporting again gives the same document, but for ids and the export time.
        again = other.export_json("alice")
        assert [without_ids(c) for c in again["conversations"]] == [
            without_ids(c) for c in document["conversations"]
        ]


def test_import_into_the_same_database_gets_new_ids(store: Store, rich: list[int]):
    new_ids = store.import_json("local", store.export_json("local"))
    assert set(new_ids).isdisjoint(rich)
    assert store.count_conversations("local", include_archived=True) == 4


def test_import_drops_links_to_parents_outside_the_file(store: Store, rich: list[int]):
    [new] = store.import_json("local", store.export_json("local", [rich[1]]))
    conversation = store.get_conversation("local", new)
    assert (conversation["parent_conversation_id"], conversation["parent_message_id"]) == (None, None)


def test_minimal_hand_written_file(store: Store):
    document = {
        "format": "chatcore-export",
        "version": 1,
        "conversations": [
            {"id": 1, "messages": [{"id": 1, "role": "user", "content": "hi"}],
             "created": "2024-03-01T10:00:00Z"},
        ],
    }
    [cid] = store.import_json("local", document)
    conversation = store.get_conversation("local", cid)
    assert conversation["created"] == "2024-03-01T10:00:00.000000+00:00"
    assert conversation["source"] == "import"
    assert conversation["messages"][0]["created"] == conversation["created"]


def valid() -> dict:
    return {
        "format": "chatcore-export",
        "version": 1,
        "exported_at": "2026-01-01T00:00:00+00:00",
        "conversations": [
            {"id": 10, "title": "first", "messages": [
                {"id": 100, "role": "user", "content": "hello"},
                {"id": 101, "role": "assistant", "content": "hi", "complete": True},
            ]},
            {"id": 11, "title": "second", "messages": [
                {"id": 102, "role": "user", "content": "a"},
                {"id": 103, "role": "assistant", "content": "b"},
                {"id": 104, "role": "user", "content": "c"},
            ]},
        ],
    }


def edited(change) -> dict:
    document = copy.deepcopy(valid())
    change(document)
    return document


def _set(path: list, value):
    def change(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


BAD_DOCUMENTS = {
    "wrong format": (_set(["format"], "llm-export"), "format: must be 'chatcore-export'"),
    "wrong version": (_set(["version"], 2), "version: unsupported version 2"),
    "version as bool": (_set(["version"], True), "version: unsupported version True"),
    "unknown top field": (_set(["notes"], []), "notes: unknown field"),
    "unknown conversation field": (_set(["conversations", 1, "colour"], "red"),
                                   "conversations[1].colour: unknown field"),
    "unknown message field": (_set(["conversations", 1, "messages", 2, "tool"], 1),
                              "conversations[1].messages[2].tool: unknown field"),
    "bad role": (_set(["conversations", 1, "messages", 2, "role"], "tool"),
                 "conversations[1].messages[2].role: must be one of system, user, assistant"),
    "missing content": (lambda d: d["conversations"][0]["messages"][1].pop("content"),
                        "conversations[0].messages[1].content: required field is missing"),
    "content not a string": (_set(["conversations", 0, "messages", 0, "content"], 5),
                             "conversations[0].messages[0].content: must be a string, found an integer"),
    "bool as integer": (_set(["conversations", 0, "messages", 0, "prompt_tokens"], True),
                        "conversations[0].messages[0].prompt_tokens: must be an integer or null, found true"),
    "number as string": (_set(["conversations", 0, "messages", 0, "ttft_ms"], "fast"),
                         "ttft_ms: must be a number or null, found a string"),
    "bad rating": (_set(["conversations", 0, "messages", 1, "rating"], 5),
                   "conversations[0].messages[1].rating: must be -1, 0, 1 or null"),
    "bad timestamp": (_set(["conversations", 0, "created"], "yesterday"),
                      "conversations[0].created: not an ISO-8601 timestamp"),
    "duplicate conversation id": (_set(["conversations", 1, "id"], 10),
                                  "conversations[1].id: duplicate conversation id 10"),
    "duplicate message id": (_set(["conversations", 1, "messages", 0, "id"], 100),
                             "conversations[1].messages[0].id: duplicate message id 100"),
    "positions out of order": (
        lambda d: [m.update(position=p) for m, p in zip(d["conversations"][1]["messages"], (0, 2, 1))],
        "conversations[1].messages[2].position: messages must be in increasing position order"),
    "messages not a list": (_set(["conversations", 0, "messages"], {}), "conversations[0].messages: must be an array"),
    "conversation not an object": (_set(["conversations", 0], "x"), "conversations[0]: must be an object"),
    "no conversations": (lambda d: d.pop("conversations"), "conversations: must be an array"),
    "too deep": (_set(["conversations", 0, "params"], json.loads('{"a":' * 40 + "1" + "}" * 40)),
                 "nesting too deep"),
}


@pytest.mark.parametrize("name", BAD_DOCUMENTS)
def test_bad_documents_are_refused_and_change_nothing(store: Store, chat: int, name: str, dump):
    change, message = BAD_DOCUMENTS[name]
    document = edited(change)
    before = dump(store)
    for data in (document, json.dumps(document), json.dumps(document).encode()):
        with pytest.raises(ImportValidationError) as info:
            store.import_json("local", data)
        assert message in str(info.value)
    assert dump(store) == before


BAD_TEXTS = {
    "truncated": (json.dumps(valid())[:-40], "the file ends too early (truncated?)"),
    "empty": ("", "the file ends too early"),
    "malformed": ('{"format": "chatcore-export", "version": 1,, }', "malformed JSON at line 1 column 44"),
    "not an object": ("[1, 2]", "the file must hold a JSON object"),
    "NaN": (json.dumps(valid()).replace('"hello"', "NaN"), "NaN is not valid JSON"),
    "duplicate key": ('{"format": "chatcore-export", "format": "chatcore-export"}', "appears twice"),
    "deeply nested brackets": ("[" * 100_000 + "]" * 100_000, "nesting too deep"),
    "not utf-8": (b'{"format": "\xff"}', "not UTF-8"),
    "too large": (b" " * (MAX_IMPORT_BYTES + 1), "limit is 52,428,800 bytes"),
}


@pytest.mark.parametrize("name", BAD_TEXTS)
def test_bad_files_are_refused_and_change_nothing(store: Store, chat: int, name: str, dump):
    data, message = BAD_TEXTS[name]
    before = dump(store)
    with pytest.raises(ImportValidationError) as info:
        store.import_json("local", data)
    assert message in str(info.value)
    assert dump(store) == before


def test_failure_while_writing_rolls_back_everything(store: Store, chat: int, dump):
    # A real SQLite error on the last message of the second conversation.
    store.db.execute(
        "CREATE TEMP TRIGGER explode BEFORE INSERT ON messages WHEN new.content = 'c'"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    before = dump(store)
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        store.import_json("local", valid())
    assert dump(store) == before
    assert store.count_conversations("local") == 1


def test_markdown_export(store: Store, rich: list[int]):
    text = store.export_markdown("local")
    assert text.startswith("# What is a transformer in machine learning?\n")
    assert "## System prompt\n\nBe brief." in text
    assert "## Assistant · tiny · 9 tokens · 40.0 tokens/s · rated +1\n\nA transformer is a neural" in text
    assert f"forked from conversation {rich[0]}" in text
    assert "## Assistant · tiny · incomplete\n\ncut off mid" in text
    assert text.count("\n---\n") == 1
    assert store.export_markdown("local", [rich[0]]).count("# ") >= 1


message_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    title=st.one_of(st.none(), message_text),
    contents=st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), message_text), max_size=6),
    params=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)),
)
def test_any_conversation_round_trips(store: Store, title, contents, params):
    cid = store.create_conversation(title=title, params=params)
    for role, content in contents:
        store.add_message(cid, role, content)
    original = store.get_conversation("local", cid)
    [new] = store.import_json("local", json.dumps(store.export_json("local", [cid])))
    assert without_ids(store.get_conversation("local", new)) == without_ids(original)

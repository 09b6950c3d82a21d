"""Conversations and messages: writing as it happens, listing, ownership, delete and fork."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import InvalidValue, NotFound, Store

REPO = Path(__file__).resolve().parents[2]


def test_streaming_answer_lifecycle(store: Store, chat: int):
    conversation = store.get_conversation("local", chat)
    assert conversation["title"] == "What is a transformer in machine learning?"
    assert conversation["params"] == {"temperature": 0.7}
    assert conversation["system_prompt"] == "Be brief."
    user, answer = conversation["messages"]
    assert (user["position"], user["role"], user["complete"]) == (0, "user", True)
    assert answer["position"] == 1
    assert answer["content"] == "A transformer is a neural network built on attention."
    assert answer["complete"] is True
    assert answer["finish_reason"] == "stop"
    assert answer["params"] == {"seed": 7}
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (12, 9)
    assert (answer["ttft_ms"], answer["tokens_per_s"]) == (35.5, 40.0)
    assert conversation["updated"] >= answer["created"]


def test_assistant_message_is_incomplete_until_finished(store: Store):
    cid = store.create_conversation()
    mid = store.begin_assistant_message(cid, model="tiny", params={"seed": 1})
    assert store.get_message("local", mid)["complete"] is False
    store.update_message_content(mid, "partial")
    assert store.get_message("local", mid)["content"] == "partial"
    store.finish_message(mid, "partial answer", finish_reason="length", params={"top_k": 5})
    message = store.get_message("local", mid)
    assert message["complete"] is True
    assert message["params"] == {"seed": 1, "top_k": 5}


def test_crash_mid_answer_keeps_partial_answer_marked_incomplete(db_path: Path):
    # A real process dies without closing anything after a few streamed updates.
    script = f"""
import os
from storage import Store
store = Store({str(db_path)!r})
cid = store.create_conversation(title="crash")
store.add_message(cid, "user", "tell me a story")
mid = store.begin_assistant_message(cid, model="tiny")
store.update_message_content(mid, "Once upon")
store.update_message_content(mid, "Once upon a time")
os._exit(9)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO)
    assert result.returncode == 9
    with Store(db_path) as store:
        [conversation] = store.list_conversations("local")
        messages = store.get_conversation("local", conversation["id"])["messages"]
        assert [(m["role"], m["content"], m["complete"]) for m in messages] == [
            ("user", "tell me a story", True),
            ("assistant", "Once upon a time", False),
        ]


def test_list_is_newest_first_and_paginated(store: Store):
    ids = [store.create_conversation(title=f"c{i}") for i in range(5)]
    store.add_message(ids[1], "user", "bump")  # most recently updated now
    listed = [c["id"] for c in store.list_conversations("local")]
    assert listed == [ids[1], ids[4], ids[3], ids[2], ids[0]]
    assert [c["id"] for c in store.list_conversations("local", limit=2, offset=2)] == [ids[3], ids[2]]
    assert store.list_conversations("local")[0]["message_count"] == 1
    assert store.count_conversations("local") == 5


def test_archive_hides_from_list_but_not_from_get(store: Store):
    a = store.create_conversation(title="a")
    b = store.create_conversation(title="b")
    store.set_archived("local", a, True)
    assert [c["id"] for c in store.list_conversations("local")] == [b]
    assert store.count_conversations("local") == 1
    assert {c["id"] for c in store.list_conversations("local", include_archived=True)} == {a, b}
    assert store.get_conversation("local", a)["archived"] is True
    store.set_archived("local", a, False)
    assert store.count_conversations("local") == 2


def test_delete_restore_and_purge(store: Store, chat: int):
    store.delete_conversation("local", chat)
    assert store.list_conversations("local") == []
    assert store.search("local", "transformer") == []
    with pytest.raises(NotFound):
        store.get_conversation("local", chat)
    with pytest.raises(NotFound):
        store.delete_conversation("local", chat)
    assert store.purge_deleted("local") == 0  # deleted just now, kept 30 days
    store.restore_conversation("local", chat)
    assert len(store.get_conversation("local", chat)["messages"]) == 2
    with pytest.raises(NotFound):
        store.restore_conversation("local", chat)  # not deleted

    store.delete_conversation("local", chat)
    assert store.purge_deleted("local", older_than_days=0) == 1
    with pytest.raises(NotFound):
        store.restore_conversation("local", chat)
    assert store.db.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def test_another_owners_conversation_looks_missing(store: Store, chat: int):
    missing = 9999
    for conversation_id in (chat, missing):
        calls = [
            lambda: store.get_conversation("mallory", conversation_id),
            lambda: store.rename_conversation("mallory", conversation_id, "mine"),
            lambda: store.set_archived("mallory", conversation_id, True),
            lambda: store.delete_conversation("mallory", conversation_id),
            lambda: store.fork_conversation("mallory", conversation_id, 1),
            lambda: store.export_json("mallory", [conversation_id]),
        ]
        for call in calls:
            with pytest.raises(NotFound) as info:
                call()
            assert str(info.value) == f"No conversation {conversation_id}."
    with pytest.raises(NotFound, match="No message 1"):
        store.rate_message("mallory", 1, 1)
    assert store.list_conversations("mallory") == []
    assert store.search("mallory", "transformer") == []
    assert store.export_json("mallory")["conversations"] == []
    assert store.get_conversation("local", chat)["title"].startswith("What is")


def test_rename_and_auto_title(store: Store):
    cid = store.create_conversation()
    assert store.get_conversation("local", cid)["title"] is None
    store.add_message(cid, "system", "You are helpful.")
    store.add_message(cid, "user", "## Explain   the KV cache\nin detail please")
    store.add_message(cid, "user", "second question does not retitle")
    assert store.get_conversation("local", cid)["title"] == "Explain the KV cache"
    store.rename_conversation("local", cid, "  KV   cache ")
    assert store.get_conversation("local", cid)["title"] == "KV cache"
    with pytest.raises(InvalidValue):
        store.rename_conversation("local", cid, "   ")


@pytest.mark.parametrize(
    "text, title",
    [
        ("hello", "hello"),
        ("", "Untitled"),
        ("\n\n  > quoted line\nmore", "quoted line"),
        ("word " * 40, ("word " * 11).strip() + "…"),
        ("x" * 100, "x" * 59 + "…"),
    ],
)
def test_auto_title(text: str, title: str):
    assert Store.auto_title(text) == title
    assert len(Store.auto_title(text)) <= 60


def test_fork_copies_messages_up_to_the_fork_point(store: Store, chat: int):
    store.add_message(chat, "user", "And an RNN?")
    messages = store.get_conversation("local", chat)["messages"]
    fork = store.fork_conversation("local", chat, messages[1]["id"])
    forked = store.get_conversation("local", fork)
    assert forked["parent_conversation_id"] == chat
    assert forked["parent_message_id"] == messages[1]["id"]
    assert [m["content"] for m in forked["messages"]] == [m["content"] for m in messages[:2]]
    assert [m["position"] for m in forked["messages"]] == [0, 1]
    assert forked["messages"][1]["params"] == {"seed": 7}
    assert {m["id"] for m in forked["messages"]}.isdisjoint(m["id"] for m in messages)
    # The fork continues on its own; the original is untouched.
    store.add_message(fork, "user", "And a CNN?")
    assert len(store.get_conversation("local", chat)["messages"]) == 3
    assert store.list_conversations("local")[0]["id"] == fork
    with pytest.raises(NotFound, match="No message 999 in conversation"):
        store.fork_conversation("local", chat, 999)
    # Purging the parent keeps the fork, without its link.
    store.delete_conversation("local", chat)
    store.purge_deleted("local", older_than_days=0)
    forked = store.get_conversation("local", fork)
    assert (forked["parent_conversation_id"], forked["parent_message_id"]) == (None, None)


def test_rating(store: Store, chat: int):
    answer = store.get_conversation("local", chat)["messages"][1]["id"]
    store.rate_message("local", answer, -1, "too vague")
    message = store.get_message("local", answer)
    assert (message["rating"], message["rating_comment"]) == (-1, "too vague")
    for bad in (2, -2, True, 0.5):
        with pytest.raises(InvalidValue):
            store.rate_message("local", answer, bad)


def test_invalid_writes_are_refused(store: Store, chat: int):
    with pytest.raises(InvalidValue, match="one of system, user, assistant"):
        store.add_message(chat, "tool", "x")
    with pytest.raises(NotFound):
        store.add_message(9999, "user", "x")
    with pytest.raises(NotFound):
        store.update_message_content(9999, "x")
    with pytest.raises(NotFound):
        store.finish_message(9999, "x", finish_reason="stop")


def test_store_works_from_other_threads_and_after_close(store: Store, chat: int):
    import threading

    seen = []
    thread = threading.Thread(target=lambda: seen.append(store.get_conversation("local", chat)["id"]))
    thread.start()
    thread.join()
    assert seen == [chat]
    store.close()
    assert store.get_conversation("local", chat)["id"] == chat

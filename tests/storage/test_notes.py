"""Notes, pins, rated exchanges and stats on a real SQLite file."""

from __future__ import annotations

import pytest
from sqlite_utils import Database

from storage import (
    HIGHLIGHT_END,
    HIGHLIGHT_START,
    InvalidValue,
    NotFound,
    Store,
    notes,
    open_database,
)
from storage.feedback import rated_exchanges
from storage.stats import messages_per_day, ratings_per_day, speed_by_model


def answer_of(store: Store, cid: int) -> dict:
    return store.get_conversation("local", cid)["messages"][-1]


def test_migration_creates_notes_tables(db_path):
    db = open_database(db_path)
    assert db["notes"].columns_dict == {
        "id": int,
        "owner": str,
        "title": str,
        "body": str,
        "tags": str,
        "created": str,
        "updated": str,
        "source_conversation_id": int,
        "source_message_id": int,
        "model": str,
        "params": str,
        "source_document": str,  # m005: a note from a cited passage keeps its file and page
        "source_page": int,
    }
    assert db["note_pins"].columns_dict == {"conversation_id": int, "note_id": int, "created": str}
    assert "notes_fts" in db.table_names()
    # No foreign key from a note to its source: the note outlives it.
    assert {fk.other_table for fk in Database(db.conn)["notes"].foreign_keys} == {"users"}


def test_add_get_list_and_tags(store: Store):
    first = notes.add_note(store, "local", title="  Attention \n scaling ", body="Quadratic in length.",
                           tags=["ml", " ml ", "", "long  context"])
    second = notes.add_note(store, "local", title="Kumquats", body="Small citrus.", tags=["fruit"])
    note = notes.get_note(store, "local", first)
    assert note["title"] == "Attention scaling"
    assert note["tags"] == ["ml", "long context"]
    assert note["source_message_id"] is None and note["source_available"] is False
    assert note["pinned_to"] == [] and note["params"] is None
    assert [n["id"] for n in notes.list_notes(store, "local")] == [second, first]
    assert [n["id"] for n in notes.list_notes(store, "local", tag="ml")] == [first]
    assert notes.count_notes(store, "local") == 2 and notes.count_notes(store, "local", tag="fruit") == 1
    assert [n["id"] for n in notes.list_notes(store, "local", limit=1, offset=1)] == [first]


@pytest.mark.parametrize(
    "fields",
    [
        dict(title=" ", body="b"),
        dict(title="t", body="  \n"),
        dict(title="t" * 201, body="b"),
        dict(title="t", body="b", tags="ml"),
        dict(title="t", body="b", tags=["x" * 51]),
        dict(title="t", body="b", tags=[str(i) for i in range(33)]),
    ],
)
def test_invalid_values_are_refused(store: Store, fields):
    with pytest.raises(InvalidValue):
        notes.add_note(store, "local", **fields)
    assert notes.count_notes(store, "local") == 0


def test_note_from_an_answer_keeps_a_snapshot_and_survives_its_source(store: Store, chat: int):
    answer = answer_of(store, chat)
    note_id = notes.add_note(store, "local", title="Transformers", body="built on attention",
                             source_message_id=answer["id"])
    note = notes.get_note(store, "local", note_id)
    assert (note["source_conversation_id"], note["source_message_id"]) == (chat, answer["id"])
    assert note["model"] == "tiny" and note["params"] == {"seed": 7}
    assert note["source_available"] is True

    # Later changes to the answer do not reach the note's snapshot.
    store.finish_message(answer["id"], "rewritten", finish_reason="stop", params={"seed": 99})
    assert notes.get_note(store, "local", note_id)["params"] == {"seed": 7}

    notes.pin_note(store, "local", note_id, chat)
    store.delete_conversation("local", chat)
    note = notes.get_note(store, "local", note_id)
    assert note["source_available"] is False and note["pinned_to"] == []
    store.restore_conversation("local", chat)
    assert notes.get_note(store, "local", note_id)["source_available"] is True

    store.delete_conversation("local", chat)
    store.purge_deleted("local", older_than_days=0)
    note = notes.get_note(store, "local", note_id)
    assert note["source_available"] is False
    assert (note["source_conversation_id"], note["source_message_id"]) == (chat, answer["id"])
    assert store.db.conn.execute("SELECT count(*) FROM note_pins").fetchone()[0] == 0


def test_search_with_snippets_stays_in_sync(store: Store):
    note_id = notes.add_note(store, "local", title="Running notes", body="The ptarmigan is a bird.",
                             tags=["zoology"])
    notes.add_note(store, "local", title="Other", body="Nothing to see.")
    (hit,) = notes.search_notes(store, "local", "ptarmigan")
    assert hit["id"] == note_id and hit["tags"] == ["zoology"]
    assert f"{HIGHLIGHT_START}ptarmigan{HIGHLIGHT_END}" in hit["snippet"]
    assert [h["id"] for h in notes.search_notes(store, "local", "run")] == [note_id]  # stemmed title
    assert [h["id"] for h in notes.search_notes(store, "local", "zoolog*")] == [note_id]  # tags, prefix
    assert notes.search_notes(store, "local", 'ptarmigan" OR "') == []  # never FTS syntax
    assert notes.search_notes(store, "local", "  ") == []

    notes.update_note(store, "local", note_id, body="The kumquat is a fruit.", tags=[])
    assert notes.search_notes(store, "local", "ptarmigan") == []
    assert notes.search_notes(store, "local", "zoology") == []
    assert [h["id"] for h in notes.search_notes(store, "local", "kumquat")] == [note_id]
    assert notes.get_note(store, "local", note_id)["title"] == "Running notes"  # None keeps a field

    notes.delete_note(store, "local", note_id)
    assert notes.search_notes(store, "local", "kumquat") == []
    store.db.execute("INSERT INTO notes_fts (notes_fts) VALUES ('integrity-check')")


def test_pins_in_order(store: Store, chat: int):
    a = notes.add_note(store, "local", title="A", body="first")
    b = notes.add_note(store, "local", title="B", body="second")
    notes.pin_note(store, "local", b, chat)
    notes.pin_note(store, "local", a, chat)
    notes.pin_note(store, "local", b, chat)  # again: no change
    assert [n["id"] for n in notes.pinned_notes(store, "local", chat)] == [b, a]
    assert notes.get_note(store, "local", a)["pinned_to"] == [chat]
    notes.unpin_note(store, "local", b, chat)
    with pytest.raises(NotFound, match="not pinned"):
        notes.unpin_note(store, "local", b, chat)
    notes.delete_note(store, "local", a)
    assert notes.pinned_notes(store, "local", chat) == []


def test_another_owner_sees_nothing(store: Store, chat: int):
    note_id = notes.add_note(store, "local", title="Mine", body="secret kumquat")
    answer = answer_of(store, chat)
    theirs = store.create_conversation("mallory")
    calls = [
        lambda: notes.get_note(store, "mallory", note_id),
        lambda: notes.update_note(store, "mallory", note_id, title="x"),
        lambda: notes.delete_note(store, "mallory", note_id),
        lambda: notes.pin_note(store, "mallory", note_id, theirs),
        lambda: notes.unpin_note(store, "mallory", note_id, theirs),
    ]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            call()
        assert str(caught.value) == f"No note {note_id}."
    missing = note_id + 100
    with pytest.raises(NotFound) as caught:
        notes.get_note(store, "local", missing)
    assert str(caught.value) == f"No note {missing}."

    with pytest.raises(NotFound):  # someone else's answer
        notes.add_note(store, "mallory", title="t", body="b", source_message_id=answer["id"])
    with pytest.raises(NotFound):  # someone else's conversation
        notes.pin_note(store, "local", note_id, theirs)
    with pytest.raises(NotFound):
        notes.pinned_notes(store, "mallory", chat)
    assert notes.list_notes(store, "mallory") == [] and notes.count_notes(store, "mallory") == 0
    assert notes.search_notes(store, "mallory", "kumquat") == []
    assert notes.get_note(store, "local", note_id)["title"] == "Mine"


def test_rated_exchanges(store: Store, chat: int):
    answer = answer_of(store, chat)
    assert list(rated_exchanges(store, "local")) == []
    store.rate_message("local", answer["id"], 0)  # a cleared thumb is not feedback
    assert list(rated_exchanges(store, "local")) == []
    store.rate_message("local", answer["id"], -1, "too vague")
    (row,) = rated_exchanges(store, "local")
    assert row == {
        "prompt": "What is a transformer in machine learning?",
        "answer": "A transformer is a neural network built on attention.",
        "rating": -1,
        "comment": "too vague",
        "settings": {"model": "tiny", "params": {"seed": 7}},
        "conversation_id": chat,
        "message_id": answer["id"],
        "created": answer["created"],
    }
    assert list(rated_exchanges(store, "mallory")) == []
    store.delete_conversation("local", chat)
    assert list(rated_exchanges(store, "local")) == []


def test_stats(store: Store, chat: int):
    day = answer_of(store, chat)["created"][:10]
    other = store.create_conversation("local", model="big")
    store.add_message(other, "user", "hi")
    for speed in (10.0, 20.0, 60.0):
        mid = store.add_message(other, "assistant", "hello", model="big", tokens_per_s=speed)
    store.rate_message("local", mid, 1)
    store.rate_message("local", answer_of(store, chat)["id"], -1)
    assert messages_per_day(store, "local") == [
        {"day": day, "role": "assistant", "messages": 4},
        {"day": day, "role": "user", "messages": 2},
    ]
    assert ratings_per_day(store, "local") == [{"day": day, "up": 1, "down": 1}]
    assert speed_by_model(store, "local") == [
        {"model": "big", "answers": 3, "mean_tokens_per_s": 30.0, "median_tokens_per_s": 20.0},
        {"model": "tiny", "answers": 1, "mean_tokens_per_s": 40.0, "median_tokens_per_s": 40.0},
    ]
    assert messages_per_day(store, "mallory") == [] and speed_by_model(store, "mallory") == []
    shifted = messages_per_day(store, "local", utc_offset_minutes=-(24 * 60 - 1))
    assert sum(row["messages"] for row in shifted) == 6
    with pytest.raises(InvalidValue):
        messages_per_day(store, "local", utc_offset_minutes=24 * 60)
    store.delete_conversation("local", other)
    assert [r["model"] for r in speed_by_model(store, "local")] == ["tiny"]

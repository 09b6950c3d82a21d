"""Full-text search: snippets, highlighting, safety of any user text, triggers keeping FTS in sync."""

from __future__ import annotations

import html

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import HIGHLIGHT_END, HIGHLIGHT_START, Store, fts_query, render_snippet


def fts_consistent(store: Store) -> None:
    """FTS5's own check that each index matches its content table exactly."""
    for table in ("messages_fts", "conversations_fts"):
        store.db.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)")


def ids(hits: list[dict]) -> list[tuple[int, int | None]]:
    return sorted(((h["conversation_id"], h["message_id"]) for h in hits), key=lambda t: (t[0], t[1] or 0))


def test_message_and_title_hits_with_highlighted_snippets(store: Store, chat: int):
    hits = store.search("local", "transformer")
    messages = store.get_conversation("local", chat)["messages"]
    assert ids(hits) == [(chat, None), (chat, messages[0]["id"]), (chat, messages[1]["id"])]
    answer_hit = next(h for h in hits if h["message_id"] == messages[1]["id"])
    assert answer_hit["role"] == "assistant"
    assert answer_hit["conversation_title"] == "What is a transformer in machine learning?"
    assert f"{HIGHLIGHT_START}transformer{HIGHLIGHT_END}" in answer_hit["snippet"]
    assert all(isinstance(h["rank"], float) for h in hits)
    assert [h["rank"] for h in hits] == sorted(h["rank"] for h in hits)


def test_every_word_must_match_and_words_are_stemmed(store: Store, chat: int):
    assert store.search("local", "neural attention") != []
    assert store.search("local", "neural zebra") == []
    assert store.search("local", "networks") != []  # stemmed: network
    assert store.search("local", "transf*") != []
    assert store.search("local", "   ") == []


def test_limit(store: Store):
    cid = store.create_conversation(title="t")
    for i in range(30):
        store.add_message(cid, "user", f"kumquat number {i}")
    assert len(store.search("local", "kumquat", limit=7)) == 7


def test_fts_stays_in_sync_after_edits_renames_and_deletes(store: Store, chat: int):
    mid = store.begin_assistant_message(chat)
    store.update_message_content(mid, "a quasar is")
    assert ids(store.search("local", "quasar")) == [(chat, mid)]
    store.finish_message(mid, "a pulsar, actually", finish_reason="stop")
    assert store.search("local", "quasar") == []
    assert ids(store.search("local", "pulsar")) == [(chat, mid)]

    store.rename_conversation("local", chat, "Gazebo designs")
    assert ids(store.search("local", "gazebo")) == [(chat, None)]
    assert ids(store.search("local", "machine")) == [(chat, store.get_conversation("local", chat)["messages"][0]["id"])]

    store.rate_message("local", mid, 1)  # not a content change: FTS untouched, still consistent
    fts_consistent(store)

    store.delete_conversation("local", chat)
    assert store.search("local", "pulsar") == []
    store.restore_conversation("local", chat)
    assert store.search("local", "pulsar") != []
    store.delete_conversation("local", chat)
    store.purge_deleted("local", older_than_days=0)
    fts_consistent(store)
    assert store.db.conn.execute(
        "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'pulsar'"
    ).fetchone()[0] == 0


def test_fork_and_import_are_indexed(store: Store, chat: int):
    first = store.get_conversation("local", chat)["messages"][0]["id"]
    fork = store.fork_conversation("local", chat, first)
    imported = store.import_json("local", store.export_json("local", [chat]))
    conversations = {h["conversation_id"] for h in store.search("local", "machine learning")}
    assert conversations == {chat, fork, *imported}
    fts_consistent(store)


def test_fts_syntax_in_user_text_is_just_text(store: Store):
    cid = store.create_conversation(title="syntax")
    store.add_message(cid, "user", 'what does AND( mean, or NEAR "quotes" - col:umn ^x?')
    for query in ['"', 'AND(', 'NEAR(a b)', 'col:umn', '^x', '-', '*', '"quotes"', "a OR", "NOT"]:
        store.search("local", query)  # never an FTS5 syntax error
    assert store.search("local", '"quotes"') != []
    assert store.search("local", "AND(") != []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=40))
def test_any_text_is_a_valid_query(store: Store, query: str):
    store.search("local", query)


def test_fts_query_quotes_every_word():
    assert fts_query('say "hi" AND( x*') == '"say" """hi""" "AND(" "x"*'
    assert fts_query(" \n ") is None
    assert fts_query("*") == '"*"'


def test_render_snippet_escapes_text_but_not_markers():
    snippet = f"a <b> {HIGHLIGHT_START}cat{HIGHLIGHT_END} & dog"
    assert render_snippet(snippet, "<mark>", "</mark>", html.escape) == (
        "a &lt;b&gt; <mark>cat</mark> &amp; dog"
    )
    assert render_snippet(snippet, "[", "]") == "a <b> [cat] & dog"


def test_best_hits_of_others_and_deleted_ones_do_not_hide_mine(store: Store):
    # Other owners' and deleted conversations hold the best-ranked matches by far.
    for owner in ("mallory", "local"):
        noise = store.create_conversation(owner, title="noise")
        for _ in range(30):
            store.add_message(noise, "user", "kumquat " * 5)
        if owner == "local":
            store.delete_conversation("local", noise)
    mine = store.create_conversation(title="mine")
    expected = [store.add_message(mine, "user", f"one kumquat among many other words {i}") for i in range(3)]
    hits = store.search("local", "kumquat", limit=5)
    assert sorted(h["message_id"] for h in hits) == expected
    assert len(store.search("mallory", "kumquat", limit=5)) == 5

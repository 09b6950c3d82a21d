"""The schema: a fresh database and every earlier version migrate to the same latest schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from storage import Store, migrations, open_database
from storage.db import connect

NAMES = [m.name for m in migrations.pending(Database(memory=True))]  # all of them, in order, on an empty file


def schema(path: Path) -> dict[str, str]:
    """name -> normalized CREATE statement of every table, index and trigger but the migrations log."""
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE '_sqlite_migrations%'"
    ).fetchall()
    conn.close()
    return {name: " ".join(sql.split()) for name, sql in rows}


def test_names_are_ordered_and_prefixed():
    assert NAMES == ["m001_initial", "m002_search", "m003_api_keys", "m004_notes", "m005_library", "m006_evaluation",
                     "m007_user_model", "m008_data"]


def test_fresh_database_has_latest_schema(db_path: Path):
    db = open_database(db_path)
    assert [m.name for m in migrations.applied(db)] == NAMES
    assert migrations.pending(db) == []
    assert {"users", "conversations", "messages", "messages_fts", "conversations_fts"} <= set(
        db.table_names()
    )
    assert db["messages"].columns_dict == {
        "id": int,
        "conversation_id": int,
        "position": int,
        "role": str,
        "content": str,
        "created": str,
        "updated": str,
        "model": str,
        "params": str,
        "prompt_tokens": int,
        "completion_tokens": int,
        "ttft_ms": float,
        "tokens_per_s": float,
        "finish_reason": str,
        "complete": int,
        "rating": int,
        "rating_comment": str,
    }
    assert db["conversations"].columns_dict == {
        "id": int,
        "owner": str,
        "title": str,
        "created": str,
        "updated": str,
        "model": str,
        "system_prompt": str,
        "params": str,
        "source": str,
        "parent_conversation_id": int,
        "parent_message_id": int,
        "archived": int,
        "deleted_at": str,
        "library_scope": str,
    }
    assert db["users"].columns_dict == {"id": int, "name": str, "password_hash": str, "created": str,
                                        "default_model": str}


def test_connection_pragmas(store: Store):
    conn = store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


@pytest.mark.parametrize("stop_before", NAMES)
def test_every_earlier_version_migrates_to_latest(tmp_path: Path, stop_before: str):
    latest = tmp_path / "latest.db"
    open_database(latest).close()

    old = tmp_path / "old.db"
    db = connect(old)
    migrations.apply(db, stop_before=stop_before)
    assert migrations.pending(db)[0].name == stop_before
    has_tables = "conversations" in db.table_names()
    if has_tables:
        # Data written by the older version must survive and become searchable.
        db.execute("INSERT INTO users (name, created) VALUES ('local', '2025-01-01T00:00:00+00:00')")
        db.execute(
            "INSERT INTO conversations (id, owner, title, created, updated)"
            " VALUES (1, 'local', 'Old kumquat notes', '2025-01-01T00:00:00+00:00',"
            " '2025-01-01T00:00:00+00:00')"
        )
        db.execute(
            "INSERT INTO messages (conversation_id, position, role, content, created, updated)"
            " VALUES (1, 0, 'user', 'an ancient ptarmigan question',"
            " '2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00')"
        )
    db.close()

    with Store(old) as store:
        assert migrations.pending(store.db) == []
        if has_tables:
            assert store.get_conversation("local", 1)["messages"][0]["content"] == (
                "an ancient ptarmigan question"
            )
            assert [h["message_id"] for h in store.search("local", "ptarmigan")] == [1]
            assert [h["message_id"] for h in store.search("local", "kumquat")] == [None]
    assert schema(old) == schema(latest)


def test_reopening_applies_nothing_twice(db_path: Path):
    Store(db_path).close()
    with Store(db_path) as store:
        rows = Database(store.db.conn)["_sqlite_migrations"].rows
        assert [r["name"] for r in rows] == NAMES

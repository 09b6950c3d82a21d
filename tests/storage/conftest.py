"""Fixtures for the storage tests: real SQLite files in a temporary directory, never mocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "chatcore.db"


@pytest.fixture
def store(db_path: Path):
    with Store(db_path) as store:
        yield store


@pytest.fixture
def chat(store: Store) -> int:
    """A conversation with a system prompt, a question and a finished answer."""
    cid = store.create_conversation(
        "local", model="tiny", system_prompt="Be brief.", params={"temperature": 0.7}
    )
    store.add_message(cid, "user", "What is a transformer in machine learning?")
    answer = store.begin_assistant_message(cid, model="tiny", params={"seed": 7})
    store.update_message_content(answer, "A transformer is")
    store.finish_message(
        answer,
        "A transformer is a neural network built on attention.",
        finish_reason="stop",
        prompt_tokens=12,
        completion_tokens=9,
        ttft_ms=35.5,
        tokens_per_s=40.0,
    )
    return cid


@pytest.fixture
def dump():
    """``dump(store)``: every row of the database as SQL text; equal dumps mean nothing changed."""
    return lambda store: "\n".join(store.db.conn.iterdump())

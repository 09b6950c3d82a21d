"""Research notes: saved answers (or parts of them) with tags, full-text search and pins.

Plain functions over a :class:`~storage.store.Store`, like ``storage.users``, so every call uses
the calling thread's connection.

A note saved from an answer copies the answer's model and settings (the seed and system prompt
included), so they survive later edits of the conversation. Its source ids are kept as they
were; when the source conversation is deleted or purged the note stays, and ``get_note``
reports ``source_available`` false.

Ownership: another owner's note id raises the same ``NotFound`` as a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from storage.db import immediate
from storage.errors import InvalidValue, NotFound
from storage.store import (
    HIGHLIGHT_END,
    HIGHLIGHT_START,
    SNIPPET_ELLIPSIS,
    SNIPPET_TOKENS,
    Store,
    dump_json,
    fts_query,
    inserted_id,
    load_json,
)
from storage.transfer import utc_now

TITLE_MAX_CHARS = 200
# A note is a page or a long answer; a whole answer is at most the service's 200,000 characters.
BODY_MAX_CHARS = 200_000
TAG_MAX_CHARS = 50
MAX_TAGS = 32

_COLUMNS = (
    "id, owner, title, body, tags, created, updated, source_conversation_id, source_message_id,"
    " model, params, source_document, source_page"
)
# The notes ``list_notes`` pages through and ``count_notes`` counts; parameters: owner, tag, tag.
_LISTED = "owner = ? AND (? IS NULL OR EXISTS (SELECT 1 FROM json_each(notes.tags) WHERE value = ?))"


def add_note(
    store: Store,
    owner: str,
    *,
    title: str,
    body: str,
    tags: Iterable[str] = (),
    source_message_id: int | None = None,
    source_document: str | None = None,
    source_page: int | None = None,
) -> int:
    """A new note; returns its id.

    ``source_document`` and ``source_page`` name the file and page of a cited passage the note quotes.

    With ``source_message_id`` (a message in one of the owner's live conversations) the note
    links back to it and copies its model and settings.
    """
    title, body, tag_list = clean_title(title), _clean_body(body), clean_tags(tags)
    now = utc_now()
    with immediate(store.db) as db:
        source: tuple[Any, ...] = (None, None, None, None)
        if source_message_id is not None:
            message = store.get_message(owner, source_message_id)
            conversation = store.conversation_row(owner, message["conversation_id"])
            params = message["params"] if message["params"] is not None else conversation["params"]
            source = (
                message["conversation_id"],
                message["id"],
                message["model"] or conversation["model"],
                dump_json(params),
            )
        store.ensure_user(owner, now)
        cursor = db.execute(
            "INSERT INTO notes (owner, title, body, tags, created, updated, source_conversation_id,"
            " source_message_id, model, params, source_document, source_page)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (owner, title, body, json.dumps(tag_list, ensure_ascii=False), now, now, *source, source_document,
             source_page),
        )
    return inserted_id(cursor)


def get_note(store: Store, owner: str, note_id: int) -> dict[str, Any]:
    """The note's fields, ``tags`` as a list, ``params`` as a dict, plus:

    ``source_available`` (its source message still exists in a live conversation of the owner)
    and ``pinned_to`` (ids of the live conversations it is pinned to).
    """
    with store.snapshot():
        rows = store.rows(
            f"SELECT {_COLUMNS}, EXISTS (SELECT 1 FROM messages m JOIN conversations c"
            " ON c.id = m.conversation_id WHERE m.id = n.source_message_id"
            " AND c.id = n.source_conversation_id AND c.owner = n.owner AND c.deleted_at IS NULL)"
            " AS source_available FROM notes n WHERE id = ? AND owner = ?",
            (note_id, owner),
        )
        if not rows:
            raise NotFound(f"No note {note_id}.")
        note = _note(rows[0])
        note["source_available"] = bool(note["source_available"])
        note["pinned_to"] = [
            row[0]
            for row in store.db.conn.execute(
                "SELECT p.conversation_id FROM note_pins p JOIN conversations c"
                " ON c.id = p.conversation_id WHERE p.note_id = ? AND c.deleted_at IS NULL"
                " ORDER BY p.created, p.conversation_id",
                (note_id,),
            )
        ]
    return note


def list_notes(
    store: Store, owner: str, *, tag: str | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """A page of the owner's notes, most recently updated first; only those tagged ``tag`` if given."""
    rows = store.rows(
        f"SELECT {_COLUMNS} FROM notes WHERE {_LISTED} ORDER BY updated DESC, id DESC LIMIT ? OFFSET ?",
        (owner, tag, tag, limit, offset),
    )
    return [_note(row) for row in rows]


def count_notes(store: Store, owner: str, *, tag: str | None = None) -> int:
    """How many notes ``list_notes`` pages through."""
    return store.db.conn.execute(
        f"SELECT count(*) FROM notes WHERE {_LISTED}",
        (owner, tag, tag),
    ).fetchone()[0]


def search_notes(store: Store, owner: str, query: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """Full-text search over the owner's notes (title, body and tags), best first.

    The query works as ``Store.search``'s: every word must match, ``word*`` is a prefix, nothing
    is FTS syntax. Hits: ``id``, ``title``, ``tags``, ``updated``, ``snippet`` (matches between
    ``HIGHLIGHT_START`` and ``HIGHLIGHT_END``, from the best matching column) and ``rank``
    (lower is better).
    """
    match = fts_query(query)
    if match is None or limit <= 0:
        return []
    rows = store.rows(
        "SELECT n.id, n.title, n.tags, n.updated,"
        " snippet(notes_fts, -1, ?, ?, ?, ?) AS snippet, bm25(notes_fts) AS rank"
        " FROM notes_fts JOIN notes n ON n.id = notes_fts.rowid"
        " WHERE notes_fts MATCH ? AND n.owner = ? ORDER BY rank LIMIT ?",
        (HIGHLIGHT_START, HIGHLIGHT_END, SNIPPET_ELLIPSIS, SNIPPET_TOKENS, match, owner, limit),
    )
    for row in rows:
        row["tags"] = json.loads(row["tags"])
    return rows


def update_note(
    store: Store,
    owner: str,
    note_id: int,
    *,
    title: str | None = None,
    body: str | None = None,
    tags: Iterable[str] | None = None,
) -> None:
    """Change the given fields (``None`` keeps one); the source and its snapshot never change."""
    assignments, params = ["updated = ?"], [utc_now()]
    if title is not None:
        assignments.append("title = ?")
        params.append(clean_title(title))
    if body is not None:
        assignments.append("body = ?")
        params.append(_clean_body(body))
    if tags is not None:
        assignments.append("tags = ?")
        params.append(json.dumps(clean_tags(tags), ensure_ascii=False))
    cursor = store.db.execute(
        f"UPDATE notes SET {', '.join(assignments)} WHERE id = ? AND owner = ?",
        (*params, note_id, owner),
    )
    if cursor.rowcount == 0:
        raise NotFound(f"No note {note_id}.")


def delete_note(store: Store, owner: str, note_id: int) -> None:
    """Delete a note for good, with its pins."""
    cursor = store.db.execute("DELETE FROM notes WHERE id = ? AND owner = ?", (note_id, owner))
    if cursor.rowcount == 0:
        raise NotFound(f"No note {note_id}.")


# -- pins ----------------------------------------------------------------------------------------


def pin_note(store: Store, owner: str, note_id: int, conversation_id: int) -> None:
    """Pin a note to one of the owner's conversations; pinning it again changes nothing."""
    with immediate(store.db) as db:
        _check_note(store, owner, note_id)
        store.conversation_row(owner, conversation_id)
        db.execute(
            "INSERT INTO note_pins (conversation_id, note_id, created) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (conversation_id, note_id, utc_now()),
        )


def unpin_note(store: Store, owner: str, note_id: int, conversation_id: int) -> None:
    """Undo ``pin_note``; a note that is not pinned there raises ``NotFound``."""
    with immediate(store.db) as db:
        _check_note(store, owner, note_id)
        store.conversation_row(owner, conversation_id)
        cursor = db.execute(
            "DELETE FROM note_pins WHERE conversation_id = ? AND note_id = ?",
            (conversation_id, note_id),
        )
        if cursor.rowcount == 0:
            raise NotFound(f"Note {note_id} is not pinned to conversation {conversation_id}.")


def pinned_notes(store: Store, owner: str, conversation_id: int) -> list[dict[str, Any]]:
    """The notes pinned to one of the owner's live conversations, in the order they were pinned."""
    with store.snapshot():
        store.conversation_row(owner, conversation_id)
        rows = store.rows(
            f"SELECT {', '.join('n.' + c.strip() for c in _COLUMNS.split(','))}"
            " FROM note_pins p JOIN notes n ON n.id = p.note_id"
            " WHERE p.conversation_id = ? AND n.owner = ? ORDER BY p.created, n.id",
            (conversation_id, owner),
        )
    return [_note(row) for row in rows]


# -- values --------------------------------------------------------------------------------------


def clean_title(title: str) -> str:
    """A title on one line, whitespace collapsed; refused when empty or too long."""
    if not isinstance(title, str):
        raise InvalidValue("A note title must be text.")
    title = " ".join(title.split())
    if not title:
        raise InvalidValue("A note title cannot be empty.")
    if len(title) > TITLE_MAX_CHARS:
        raise InvalidValue(f"A note title is at most {TITLE_MAX_CHARS} characters, not {len(title)}.")
    if "\x00" in title:
        raise InvalidValue("A note title cannot contain a NUL character.")
    return title


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags with whitespace collapsed, blanks and repeats dropped, in the order given."""
    if isinstance(tags, str):
        raise InvalidValue("Tags must be a list of strings, not one string.")
    cleaned: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidValue(f"A tag must be text, not {tag!r}.")
        tag = " ".join(tag.split())
        if not tag or tag in cleaned:
            continue
        if len(tag) > TAG_MAX_CHARS or "\x00" in tag:
            raise InvalidValue(f"A tag is at most {TAG_MAX_CHARS} characters of text: {tag[:60]!r}.")
        cleaned.append(tag)
    if len(cleaned) > MAX_TAGS:
        raise InvalidValue(f"A note has at most {MAX_TAGS} tags, not {len(cleaned)}.")
    return cleaned


def _clean_body(body: str) -> str:
    if not isinstance(body, str):
        raise InvalidValue("A note body must be text.")
    if not body.strip():
        raise InvalidValue("A note body cannot be empty.")
    if len(body) > BODY_MAX_CHARS:
        raise InvalidValue(f"A note body is at most {BODY_MAX_CHARS:,} characters, not {len(body):,}.")
    return body


def _check_note(store: Store, owner: str, note_id: int) -> None:
    row = store.db.conn.execute(
        "SELECT 1 FROM notes WHERE id = ? AND owner = ?", (note_id, owner)
    ).fetchone()
    if row is None:
        raise NotFound(f"No note {note_id}.")


def _note(row: dict[str, Any]) -> dict[str, Any]:
    row["tags"] = json.loads(row["tags"])
    row["params"] = load_json(row["params"])
    return row

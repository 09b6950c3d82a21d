"""``Store``: every conversation and message, one row each, over a sqlite-utils ``Database``.

Thread-safe: each thread gets its own connection (WAL, foreign keys, busy timeout). Every write
that reads first runs in a ``BEGIN IMMEDIATE`` transaction, so concurrent writers queue on the
busy timeout instead of failing with "database is locked".

Ownership: every method taking ``owner`` treats another owner's conversation exactly like a
missing or deleted one and raises ``NotFound`` with the same message.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from storage import transfer
from storage.db import connect, immediate, migrate
from storage.errors import InvalidValue, NotFound
from storage.transfer import ROLES, utc_now

LOCAL_OWNER = "local"

# Snippets mark each matched term with these two private-use characters. They never occur in
# ordinary text and are not HTML, so a renderer escapes the snippet first and then swaps the
# markers for its own (see ``render_snippet``).
HIGHLIGHT_START = "\ue000"
HIGHLIGHT_END = "\ue001"
SNIPPET_ELLIPSIS = "…"
SNIPPET_TOKENS = 16

TITLE_MAX_CHARS = 60

_CONVERSATION_COLUMNS = (
    "id, owner, title, created, updated, model, system_prompt, params, source, "
    "parent_conversation_id, parent_message_id, archived, deleted_at"
)
_MESSAGE_COLUMNS = (
    "id, conversation_id, position, role, content, created, updated, model, params, "
    "prompt_tokens, completion_tokens, ttft_ms, tokens_per_s, finish_reason, complete, "
    "rating, rating_comment"
)
# The conversations ``list_conversations`` pages through and ``count_conversations`` counts;
# parameters: owner, include_archived.
_LISTED = "owner = ? AND deleted_at IS NULL AND (? OR archived = 0)"


class Store:
    """Conversations and messages in the SQLite file at ``path`` (created and migrated on open)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, Database]] = []
        migrate(self.db)

    # -- connections ---------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        """This thread's connection, opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path)
            self._local.db = db
            with self._lock:
                # Close the connections of threads that have ended (a web server's pool turns
                # over), so they do not pile up.
                alive = []
                for thread, other in self._connections:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                alive.append((threading.current_thread(), db))
                self._connections = alive
        return db

    def close(self) -> None:
        """Close every connection this store opened; using it again reopens them."""
        with self._lock:
            for _, db in self._connections:
                db.close()
            self._connections = []
            self._local = threading.local()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        """The rows a query returns on this thread's connection, each a dict by column name.

        For this package's modules (``storage.notes``, ``storage.stats``, ``storage.users``); callers
        outside ``storage`` use the named methods instead of writing SQL.
        """
        cursor = self.db.conn.execute(sql, params)
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row)) for row in cursor.fetchall()]

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Several reads that see one consistent state of the database (joins a transaction already open)."""
        conn = self.db.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.execute("COMMIT")

    # -- conversations -------------------------------------------------------------------------

    def create_conversation(
        self,
        owner: str = LOCAL_OWNER,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        params: dict | None = None,
        source: str = "cli",
    ) -> int:
        """A new, empty conversation; returns its id."""
        now = utc_now()
        with immediate(self.db) as db:
            self.ensure_user(owner, now)
            cursor = db.execute(
                "INSERT INTO conversations (owner, title, created, updated, model, system_prompt,"
                " params, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (owner, title, now, now, model, system_prompt, dump_json(params), source),
            )
        return inserted_id(cursor)

    def get_conversation(self, owner: str, conversation_id: int) -> dict[str, Any]:
        """The conversation's fields plus ``messages``, a list ordered by position."""
        with self.snapshot():
            conversation = self.conversation_row(owner, conversation_id)
            conversation["messages"] = [
                _message(row)
                for row in self.rows(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?"
                    " ORDER BY position",
                    (conversation_id,),
                )
            ]
        return conversation

    def list_conversations(
        self, owner: str, *, limit: int = 50, offset: int = 0, include_archived: bool = False
    ) -> list[dict[str, Any]]:
        """A page of the owner's conversations, most recently updated first, with ``message_count``."""
        rows = self.rows(
            f"SELECT {_CONVERSATION_COLUMNS},"
            " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count"
            f" FROM conversations c WHERE {_LISTED} ORDER BY updated DESC, id DESC LIMIT ? OFFSET ?",
            (owner, include_archived, limit, offset),
        )
        return [_conversation(row) for row in rows]

    def count_conversations(self, owner: str, *, include_archived: bool = False) -> int:
        """How many conversations ``list_conversations`` pages through."""
        return self.db.conn.execute(
            f"SELECT count(*) FROM conversations WHERE {_LISTED}",
            (owner, include_archived),
        ).fetchone()[0]

    def rename_conversation(self, owner: str, conversation_id: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            raise InvalidValue("A title cannot be empty.")
        self._update_live(owner, conversation_id, "title = ?", (title,))

    def set_archived(self, owner: str, conversation_id: int, archived: bool) -> None:
        self._update_live(owner, conversation_id, "archived = ?", (bool(archived),))

    def delete_conversation(self, owner: str, conversation_id: int) -> None:
        """Soft delete: hidden from list, search and get until restored or purged."""
        self._update_live(owner, conversation_id, "deleted_at = ?", (utc_now(),))

    def restore_conversation(self, owner: str, conversation_id: int) -> None:
        """Undo ``delete_conversation``."""
        cursor = self.db.execute(
            "UPDATE conversations SET deleted_at = NULL"
            " WHERE id = ? AND owner = ? AND deleted_at IS NOT NULL",
            (conversation_id, owner),
        )
        if cursor.rowcount == 0:
            raise NotFound(f"No deleted conversation {conversation_id} to restore.")

    def purge_deleted(self, owner: str, older_than_days: float = 30) -> int:
        """Erase for good the conversations deleted more than ``older_than_days`` ago; returns how many."""
        cutoff = (datetime.now(timezone.utc) - timedelta(days=older_than_days)).isoformat(
            timespec="microseconds"
        )
        cursor = self.db.execute(
            "DELETE FROM conversations WHERE owner = ? AND deleted_at IS NOT NULL"
            " AND deleted_at <= ?",
            (owner, cutoff),
        )
        return cursor.rowcount

    def fork_conversation(self, owner: str, conversation_id: int, at_message_id: int) -> int:
        """A new conversation holding copies of the messages up to and including ``at_message_id``."""
        now = utc_now()
        with immediate(self.db) as db:
            parent = self.conversation_row(owner, conversation_id)
            position = self._position_in(conversation_id, at_message_id)
            cursor = db.execute(
                "INSERT INTO conversations (owner, title, created, updated, model, system_prompt,"
                " params, source, parent_conversation_id, parent_message_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner,
                    parent["title"],
                    now,
                    now,
                    parent["model"],
                    parent["system_prompt"],
                    dump_json(parent["params"]),
                    parent["source"],
                    conversation_id,
                    at_message_id,
                ),
            )
            fork_id = inserted_id(cursor)
            columns = _MESSAGE_COLUMNS.replace("id, conversation_id, ", "")
            db.execute(
                f"INSERT INTO messages (conversation_id, {columns})"
                f" SELECT ?, {columns} FROM messages"
                " WHERE conversation_id = ? AND position <= ? ORDER BY position",
                (fork_id, conversation_id, position),
            )
            # A branch keeps what it was answered from: the library scope, and each copied answer's sources.
            db.execute("UPDATE conversations SET library_scope = (SELECT library_scope FROM conversations"
                       " WHERE id = ?) WHERE id = ?", (conversation_id, fork_id))
            db.execute(
                "INSERT INTO message_sources (message_id, n, chunk_id, document_id, filename, page, char_start,"
                " char_end, text, score, cited, kind, verified)"
                " SELECT copy.id, s.n, s.chunk_id, s.document_id, s.filename, s.page, s.char_start, s.char_end,"
                " s.text, s.score, s.cited, s.kind, s.verified"
                " FROM message_sources s JOIN messages original ON original.id = s.message_id"
                " JOIN messages copy ON copy.conversation_id = ? AND copy.position = original.position"
                " WHERE original.conversation_id = ? AND original.position <= ?",
                (fork_id, conversation_id, position),
            )
        return fork_id

    @staticmethod
    def auto_title(text: str) -> str:
        """A short title from a first user message: its first line, cut at a word near 60 chars."""
        for line in text.strip().splitlines():
            # Drop Markdown decoration at the start of the line (headings, quotes, bullets).
            line = " ".join(re.sub(r"^[\s#>*\-`]+", "", line).split())
            if line:
                break
        else:
            return "Untitled"
        if len(line) <= TITLE_MAX_CHARS:
            return line
        cut = line[: TITLE_MAX_CHARS - 1]
        if " " in cut[TITLE_MAX_CHARS // 2 :]:
            cut = cut.rsplit(" ", 1)[0]
        return cut.rstrip(" ,.;:") + "…"

    # -- messages ------------------------------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        model: str | None = None,
        params: dict | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        ttft_ms: float | None = None,
        tokens_per_s: float | None = None,
        finish_reason: str | None = None,
        complete: bool = True,
    ) -> int:
        """Append a message (committed at once) and bump the conversation's ``updated``.

        The first user message of an untitled conversation also gives it a title.
        """
        if role not in ROLES:
            raise InvalidValue(f"A message role must be one of {', '.join(ROLES)}, not {role!r}.")
        now = utc_now()
        with immediate(self.db) as db:
            row = db.conn.execute(
                "SELECT title, (SELECT coalesce(max(position), -1) + 1 FROM messages"
                " WHERE conversation_id = conversations.id) FROM conversations"
                " WHERE id = ? AND deleted_at IS NULL",
                (conversation_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"No conversation {conversation_id}.")
            title, position = row
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, position, role, content, created, updated,"
                " model, params, prompt_tokens, completion_tokens, ttft_ms, tokens_per_s,"
                " finish_reason, complete) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    position,
                    role,
                    content,
                    now,
                    now,
                    model,
                    dump_json(params),
                    prompt_tokens,
                    completion_tokens,
                    ttft_ms,
                    tokens_per_s,
                    finish_reason,
                    bool(complete),
                ),
            )
            if title is None and role == "user":
                title = self.auto_title(content)
            db.execute(
                "UPDATE conversations SET updated = ?, title = ? WHERE id = ?",
                (now, title, conversation_id),
            )
        return inserted_id(cursor)

    def begin_assistant_message(
        self,
        conversation_id: int,
        *,
        model: str | None = None,
        params: dict | None = None,
        content: str = "",
    ) -> int:
        """The assistant's answer at its first token, marked incomplete until ``finish_message``."""
        return self.add_message(
            conversation_id, "assistant", content, model=model, params=params, complete=False
        )

    def update_message_content(self, message_id: int, content: str) -> None:
        """Replace a streaming message's text: one cheap statement; the caller throttles."""
        cursor = self.db.execute(
            "UPDATE messages SET content = ?, updated = ? WHERE id = ?",
            (content, utc_now(), message_id),
        )
        if cursor.rowcount == 0:
            raise NotFound(f"No message {message_id}.")

    def finish_message(
        self,
        message_id: int,
        content: str,
        *,
        finish_reason: str | None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        ttft_ms: float | None = None,
        tokens_per_s: float | None = None,
        complete: bool = True,
        params: dict | None = None,
    ) -> None:
        """Write a message's final text and stats. ``params`` are merged into those it began with."""
        now = utc_now()
        with immediate(self.db) as db:
            row = db.conn.execute(
                "SELECT conversation_id, params FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"No message {message_id}.")
            conversation_id, old_params = row
            if params is not None:
                params = {**(load_json(old_params) or {}), **params}
            db.execute(
                "UPDATE messages SET content = ?, updated = ?, finish_reason = ?,"
                " prompt_tokens = ?, completion_tokens = ?, ttft_ms = ?, tokens_per_s = ?,"
                " complete = ?, params = coalesce(?, params) WHERE id = ?",
                (
                    content,
                    now,
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                    ttft_ms,
                    tokens_per_s,
                    bool(complete),
                    dump_json(params),
                    message_id,
                ),
            )
            db.execute(
                "UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id)
            )

    def get_message(self, owner: str, message_id: int) -> dict[str, Any]:
        """One message of one of the owner's live conversations."""
        rows = self.rows(
            f"SELECT {', '.join('m.' + c for c in _MESSAGE_COLUMNS.split(', '))}"
            " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
            " WHERE m.id = ? AND c.owner = ? AND c.deleted_at IS NULL",
            (message_id, owner),
        )
        if not rows:
            raise NotFound(f"No message {message_id}.")
        return _message(rows[0])

    def rate_message(
        self, owner: str, message_id: int, rating: int, comment: str | None = None
    ) -> None:
        """Rate a message -1 (bad), 0 (neutral) or 1 (good), with an optional comment."""
        if rating not in (-1, 0, 1) or isinstance(rating, bool):
            raise InvalidValue(f"A rating must be -1, 0 or 1, not {rating!r}.")
        cursor = self.db.execute(
            "UPDATE messages SET rating = ?, rating_comment = ? WHERE id = ? AND conversation_id IN"
            " (SELECT id FROM conversations WHERE owner = ? AND deleted_at IS NULL)",
            (rating, comment, message_id, owner),
        )
        if cursor.rowcount == 0:
            raise NotFound(f"No message {message_id}.")

    # -- search --------------------------------------------------------------------------------

    def search(self, owner: str, query: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """Full-text search over message content and titles of live conversations, best first.

        Each word of ``query`` must match (words are stemmed: "running" finds "run"); a word
        ending in ``*`` matches as a prefix. Nothing in ``query`` is FTS syntax, so any text is
        safe. Hits: ``conversation_id``, ``conversation_title``, ``message_id`` and ``role``
        (both ``None`` for a title hit), ``position``, ``snippet`` with matches between
        ``HIGHLIGHT_START`` and ``HIGHLIGHT_END``, and ``rank`` (lower is better).
        """
        match = fts_query(query)
        if match is None or limit <= 0:
            return []
        marks = (HIGHLIGHT_START, HIGHLIGHT_END, SNIPPET_ELLIPSIS, SNIPPET_TOKENS)
        with self.snapshot():
            best = self._best_messages(match, owner, limit)
            hits = []
            for row in best:
                hit = self.rows(
                    "SELECT m.conversation_id, c.title AS conversation_title, m.id AS message_id,"
                    " m.role, m.position, snippet(messages_fts, 0, ?, ?, ?, ?) AS snippet"
                    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
                    " JOIN conversations c ON c.id = m.conversation_id"
                    " WHERE messages_fts MATCH ? AND messages_fts.rowid = ?",
                    (*marks, match, row["id"]),
                )[0]
                hits.append({**hit, "rank": row["rank"]})
            titles = self.rows(
                "SELECT c.id AS conversation_id, c.title AS conversation_title,"
                " NULL AS message_id, NULL AS role, NULL AS position,"
                " highlight(conversations_fts, 0, ?, ?) AS snippet,"
                " bm25(conversations_fts) AS rank"
                " FROM conversations_fts JOIN conversations c ON c.id = conversations_fts.rowid"
                " WHERE conversations_fts MATCH ? AND c.owner = ? AND c.deleted_at IS NULL"
                " ORDER BY rank LIMIT ?",
                (HIGHLIGHT_START, HIGHLIGHT_END, match, owner, limit),
            )
        return sorted(hits + titles, key=lambda hit: hit["rank"])[:limit]

    def _best_messages(self, match: str, owner: str, limit: int) -> list[dict[str, Any]]:
        """Ids and ranks of the ``limit`` best matching messages in the owner's live conversations.

        Ranking the FTS index alone is much cheaper than joining every match to its
        conversation. When enough of the best few overall belong to the owner and are live,
        they are exactly the owner's best; only otherwise is every match joined and filtered.
        """
        candidates = self.rows(
            "SELECT rowid AS id, bm25(messages_fts) AS rank FROM messages_fts"
            " WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?",
            (match, 4 * limit),
        )
        if not candidates:
            return []
        ids = [row["id"] for row in candidates]
        live = {
            row["id"]
            for row in self.rows(
                # CROSS JOIN fixes the loop order: look up these few messages, then their
                # conversations, never scan the owner's conversations for them.
                "SELECT m.id FROM messages m CROSS JOIN conversations c"
                f" ON c.id = m.conversation_id WHERE m.id IN ({', '.join('?' * len(ids))})"
                " AND c.owner = ? AND c.deleted_at IS NULL",
                (*ids, owner),
            )
        }
        best = [row for row in candidates if row["id"] in live][:limit]
        if len(best) == limit or len(candidates) < 4 * limit:
            return best
        return self.rows(
            "SELECT m.id, bm25(messages_fts) AS rank FROM messages_fts"
            " JOIN messages m ON m.id = messages_fts.rowid"
            " JOIN conversations c ON c.id = m.conversation_id"
            " WHERE messages_fts MATCH ? AND c.owner = ? AND c.deleted_at IS NULL"
            " ORDER BY rank LIMIT ?",
            (match, owner, limit),
        )

    # -- export and import ---------------------------------------------------------------------

    def export_json(self, owner: str, conversation_ids: list[int] | None = None) -> dict[str, Any]:
        """The versioned export document (EXPORT_FORMAT.md); ``None`` exports every conversation."""
        return transfer.export_document(self._export(owner, conversation_ids))

    def export_markdown(self, owner: str, conversation_ids: list[int] | None = None) -> str:
        """Conversations as one Markdown document; ``None`` exports every conversation."""
        return transfer.to_markdown(self._export(owner, conversation_ids))

    def import_json(self, owner: str, data: str | bytes | dict) -> list[int]:
        """Import an export document as new conversations owned by ``owner``; returns their ids.

        The whole document is validated first (``ImportValidationError`` names the problem and
        where it is) and then written in one transaction: on any error nothing is written.
        """
        conversations = transfer.parse_export(data)
        now = utc_now()
        new_conversation: dict[int, int] = {}
        new_message: dict[int, int] = {}
        with immediate(self.db) as db:
            self.ensure_user(owner, now)
            for c in conversations:
                created = c.get("created", now)
                cursor = db.execute(
                    "INSERT INTO conversations (owner, title, created, updated, model,"
                    " system_prompt, params, source, archived) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        owner,
                        c.get("title"),
                        created,
                        c.get("updated", created),
                        c.get("model"),
                        c.get("system_prompt"),
                        dump_json(c.get("params")),
                        c.get("source", "import"),
                        c.get("archived", False),
                    ),
                )
                new_conversation[c["id"]] = conversation_id = inserted_id(cursor)
                for position, m in enumerate(c["messages"]):
                    message_created = m.get("created", created)
                    cursor = db.execute(
                        "INSERT INTO messages (conversation_id, position, role, content, created,"
                        " updated, model, params, prompt_tokens, completion_tokens, ttft_ms,"
                        " tokens_per_s, finish_reason, complete, rating, rating_comment)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            conversation_id,
                            position,
                            m["role"],
                            m["content"],
                            message_created,
                            m.get("updated", message_created),
                            m.get("model"),
                            dump_json(m.get("params")),
                            m.get("prompt_tokens"),
                            m.get("completion_tokens"),
                            m.get("ttft_ms"),
                            m.get("tokens_per_s"),
                            m.get("finish_reason"),
                            m.get("complete", True),
                            m.get("rating"),
                            m.get("rating_comment"),
                        ),
                    )
                    new_message[m["id"]] = inserted_id(cursor)
            # Forks keep their link when the parent came in the same file; a parent outside
            # the file does not exist here, so the link is dropped.
            for c in conversations:
                parent = new_conversation.get(c.get("parent_conversation_id"))  # type: ignore[arg-type]
                parent_message = new_message.get(c.get("parent_message_id"))  # type: ignore[arg-type]
                if parent is not None:
                    db.execute(
                        "UPDATE conversations SET parent_conversation_id = ?,"
                        " parent_message_id = ? WHERE id = ?",
                        (parent, parent_message, new_conversation[c["id"]]),
                    )
        return [new_conversation[c["id"]] for c in conversations]

    # -- internals -----------------------------------------------------------------------------

    def _export(self, owner: str, conversation_ids: list[int] | None) -> list[dict[str, Any]]:
        with self.snapshot():
            if conversation_ids is None:
                conversation_ids = [
                    row["id"]
                    for row in self.rows(
                        "SELECT id FROM conversations WHERE owner = ? AND deleted_at IS NULL"
                        " ORDER BY id",
                        (owner,),
                    )
                ]
            return [self.get_conversation(owner, cid) for cid in conversation_ids]

    def ensure_user(self, name: str, now: str) -> None:
        """Create the password-less ``users`` row that ``name``'s rows reference, unless it exists."""
        self.db.execute(
            "INSERT INTO users (name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, now),
        )

    def conversation_row(self, owner: str, conversation_id: int) -> dict[str, Any]:
        """The live conversation's own row, without its messages; ``NotFound`` if gone or another owner's."""
        rows = self.rows(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
            " WHERE id = ? AND owner = ? AND deleted_at IS NULL",
            (conversation_id, owner),
        )
        if not rows:
            raise NotFound(f"No conversation {conversation_id}.")
        return _conversation(rows[0])

    def _position_in(self, conversation_id: int, message_id: int) -> int:
        row = self.db.conn.execute(
            "SELECT position FROM messages WHERE id = ? AND conversation_id = ?",
            (message_id, conversation_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"No message {message_id} in conversation {conversation_id}.")
        return row[0]

    def _update_live(self, owner: str, conversation_id: int, assignment: str, params: tuple) -> None:
        cursor = self.db.execute(
            f"UPDATE conversations SET {assignment}"
            " WHERE id = ? AND owner = ? AND deleted_at IS NULL",
            (*params, conversation_id, owner),
        )
        if cursor.rowcount == 0:
            raise NotFound(f"No conversation {conversation_id}.")


def fts_query(text: str) -> str | None:
    """User text as an FTS5 query: every word quoted (so nothing is syntax), all required.

    A word ending in ``*`` becomes a prefix query. Returns ``None`` for blank text.
    """
    terms = []
    # FTS5 reads the query as a C string: a NUL would end it inside a quoted word.
    for word in text.replace("\x00", " ").split():
        prefix = len(word) > 1 and word.endswith("*")
        word = word.rstrip("*") if prefix else word
        terms.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms) or None


def render_snippet(snippet: str, start: str, end: str, escape: Callable[[str], str] = str) -> str:
    """A snippet for display: its text passed through ``escape``, its markers replaced.

    For HTML: ``render_snippet(hit["snippet"], "<mark>", "</mark>", html.escape)``.
    """
    markers = {HIGHLIGHT_START: start, HIGHLIGHT_END: end}
    parts = re.split(f"({HIGHLIGHT_START}|{HIGHLIGHT_END})", snippet)
    return "".join(markers[part] if part in markers else escape(part) for part in parts)


def dump_json(value: dict | None) -> str | None:
    """A JSON column's text for ``value`` (keys sorted, so equal settings store equal text); None stays NULL."""
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def load_json(value: str | None) -> Any:
    """The value a JSON column's text holds; NULL reads as None."""
    return None if value is None else json.loads(value)


def inserted_id(cursor: Any) -> int:
    """The id of the row an INSERT through ``cursor`` just made."""
    rowid = cursor.lastrowid
    assert rowid is not None  # an INSERT into a rowid table always sets it
    return rowid


def _conversation(row: dict[str, Any]) -> dict[str, Any]:
    row["params"] = load_json(row["params"])
    row["archived"] = bool(row["archived"])
    return row


def _message(row: dict[str, Any]) -> dict[str, Any]:
    row["params"] = load_json(row["params"])
    row["complete"] = bool(row["complete"])
    return row

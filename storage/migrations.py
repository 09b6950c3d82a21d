"""The schema, as named migrations applied in order and recorded in ``_sqlite_migrations``.

Never edit a migration once it is committed: databases in the wild have already run it. Change
the schema by appending ``m00N_...``; ``tests/storage`` migrates every earlier version to the
latest and compares the result with a fresh database.

Room left for later issues:
- ``users`` exists from the start (``password_hash`` unused until accounts arrive); every
  conversation's ``owner`` references ``users.name``, the single-user app uses ``"local"``.
- Notes will be a new table whose links point at ``messages.id``. Message ids are stable:
  messages are never renumbered or deleted except by an explicit purge of a deleted
  conversation.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("chatcore")


@migrations()
def m001_initial(db: Database) -> None:
    """Users, conversations and one row per message."""
    db.executescript(
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            password_hash TEXT,
            created TEXT NOT NULL
        );

        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            title TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            model TEXT,
            system_prompt TEXT,
            params TEXT,                    -- JSON object: generation parameters
            source TEXT NOT NULL DEFAULT 'cli',
            parent_conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
            parent_message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL,
            archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
            deleted_at TEXT                 -- soft delete: NULL while the conversation is live
        );
        CREATE INDEX conversations_owner_updated ON conversations (owner, updated, id);

        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            model TEXT,
            params TEXT,                    -- JSON object, the seed included
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_ms REAL,
            tokens_per_s REAL,
            finish_reason TEXT,
            complete INTEGER NOT NULL DEFAULT 1 CHECK (complete IN (0, 1)),
            rating INTEGER CHECK (rating IN (-1, 0, 1)),
            rating_comment TEXT,
            UNIQUE (conversation_id, position)
        );
        """
    )


@migrations()
def m002_search(db: Database) -> None:
    """Full-text search over message content and conversation titles, kept in sync by triggers."""
    db.executescript(
        """
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            content, content='messages', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
                VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END;

        CREATE VIRTUAL TABLE conversations_fts USING fts5(
            title, content='conversations', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN
            INSERT INTO conversations_fts (rowid, title) VALUES (new.id, new.title);
        END;
        CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
            INSERT INTO conversations_fts (conversations_fts, rowid, title)
                VALUES ('delete', old.id, old.title);
        END;
        CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title ON conversations BEGIN
            INSERT INTO conversations_fts (conversations_fts, rowid, title)
                VALUES ('delete', old.id, old.title);
            INSERT INTO conversations_fts (rowid, title) VALUES (new.id, new.title);
        END;

        -- Index what earlier versions of the schema already hold.
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        INSERT INTO conversations_fts (conversations_fts) VALUES ('rebuild');
        """
    )


@migrations()
def m003_api_keys(db: Database) -> None:
    """API keys, many per user; only a SHA-256 of each key is kept, never the key."""
    db.executescript(
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE ON DELETE CASCADE,
            key_hash TEXT NOT NULL UNIQUE,  -- hex SHA-256 of the whole key
            prefix TEXT NOT NULL,           -- the key's first characters, to tell keys apart in lists
            created TEXT NOT NULL,
            last_used TEXT
        );
        CREATE INDEX api_keys_owner ON api_keys (owner);
        """
    )


@migrations()
def m004_notes(db: Database) -> None:
    """Research notes with full-text search, and notes pinned to conversations.

    A note copies its source's model and settings, and keeps the source ids without a foreign
    key: it outlives the conversation it came from, whose link is then reported as gone.
    """
    db.executescript(
        """
        CREATE TABLE notes (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            title TEXT NOT NULL,
            body TEXT NOT NULL,             -- Markdown
            tags TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            source_conversation_id INTEGER, -- no foreign key: see above
            source_message_id INTEGER,
            model TEXT,                     -- snapshot of the source answer's model
            params TEXT                     -- JSON object: snapshot of its settings, the seed included
        );
        CREATE INDEX notes_owner_updated ON notes (owner, updated, id);

        CREATE TABLE note_pins (
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
            created TEXT NOT NULL,
            PRIMARY KEY (conversation_id, note_id)
        );
        CREATE INDEX note_pins_note ON note_pins (note_id);

        CREATE VIRTUAL TABLE notes_fts USING fts5(
            title, body, tags, content='notes', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER notes_fts_insert AFTER INSERT ON notes BEGIN
            INSERT INTO notes_fts (rowid, title, body, tags)
                VALUES (new.id, new.title, new.body, new.tags);
        END;
        CREATE TRIGGER notes_fts_delete AFTER DELETE ON notes BEGIN
            INSERT INTO notes_fts (notes_fts, rowid, title, body, tags)
                VALUES ('delete', old.id, old.title, old.body, old.tags);
        END;
        CREATE TRIGGER notes_fts_update AFTER UPDATE OF title, body, tags ON notes BEGIN
            INSERT INTO notes_fts (notes_fts, rowid, title, body, tags)
                VALUES ('delete', old.id, old.title, old.body, old.tags);
            INSERT INTO notes_fts (rowid, title, body, tags)
                VALUES (new.id, new.title, new.body, new.tags);
        END;
        """
    )

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


@migrations()
def m005_library(db: Database) -> None:
    """The researcher's documents: files stored once, pages, chunks with an FTS5 index, vectors and jobs.

    A document's chunks are written in the same transaction that marks it ``ready``: a search never sees
    half of a document, and a crash mid-index leaves it ``queued`` or ``indexing`` for the next start to
    resume. Offsets (``char_start``, ``char_end``) index the text of the chunk's page as stored in
    ``document_pages``, so a citation can be shown in its page.
    """
    db.executescript(
        """
        CREATE TABLE library_files (
            sha256 TEXT PRIMARY KEY,        -- hex SHA-256 of the bytes: identical files are stored once
            size INTEGER NOT NULL,
            content BLOB NOT NULL
        );

        CREATE TABLE collections (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            name TEXT NOT NULL,
            embedding_model TEXT,           -- NULL: BM25 only
            created TEXT NOT NULL,
            UNIQUE (owner, name)
        );

        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            filename TEXT NOT NULL,         -- the base name only, never a path
            sha256 TEXT NOT NULL REFERENCES library_files(sha256),
            size INTEGER NOT NULL,
            kind TEXT NOT NULL,             -- pdf, markdown, text, html, docx
            pages INTEGER,                  -- NULL until extracted; 1 for formats without pages
            title TEXT,
            authors TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
            year INTEGER,
            doi TEXT,
            extractor TEXT,                 -- e.g. "pypdfium2 5.15.2"
            settings TEXT NOT NULL,         -- JSON: the chunking settings the chunks were built with
            status TEXT NOT NULL CHECK (status IN ('queued', 'indexing', 'ready', 'failed', 'cancelled')),
            progress INTEGER NOT NULL DEFAULT 0, -- pages read so far while indexing
            error TEXT,                     -- why it failed, for the user
            warnings TEXT NOT NULL DEFAULT '[]', -- JSON array: pages without text, a guessed encoding...
            chunks INTEGER NOT NULL DEFAULT 0,
            job_id INTEGER,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            deleted_at TEXT,                -- soft delete, for Undo
            UNIQUE (owner, sha256)
        );
        CREATE INDEX documents_owner_collection ON documents (owner, collection_id, status);

        CREATE TABLE document_pages (
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            page INTEGER NOT NULL,          -- 1-based
            text TEXT NOT NULL,
            PRIMARY KEY (document_id, page)
        );

        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            page INTEGER NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            text TEXT NOT NULL,
            UNIQUE (document_id, ordinal)
        );

        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            text, content='chunks', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TRIGGER chunks_fts_update AFTER UPDATE OF text ON chunks BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
        END;

        CREATE TABLE chunk_vectors (
            chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
            model TEXT NOT NULL,            -- the embedding model that made it
            vector BLOB NOT NULL            -- float32, little-endian, L2-normalised
        );
        -- Counting a model's vectors (the retriever's check that its in-memory matrix is current) reads this.
        CREATE INDEX chunk_vectors_model ON chunk_vectors (model, chunk_id);

        CREATE TABLE library_jobs (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('ingest', 'embed')),
            collection_id INTEGER REFERENCES collections(id) ON DELETE CASCADE,
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
            total INTEGER NOT NULL DEFAULT 0,
            done INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );

        -- The passages an answer was given, numbered as in its prompt; text and place are copied so a
        -- citation still reads after its document is deleted.
        CREATE TABLE message_sources (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            n INTEGER NOT NULL,
            chunk_id INTEGER,               -- no foreign key: the passage outlives its document
            document_id INTEGER,
            filename TEXT NOT NULL,
            page INTEGER NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            text TEXT NOT NULL,
            score REAL,
            cited INTEGER NOT NULL DEFAULT 0 CHECK (cited IN (0, 1)),
            kind TEXT CHECK (kind IN ('cited', 'matched')), -- matched: found in the answer, not cited by the model
            verified INTEGER CHECK (verified IN (0, 1)), -- NULL: not cited
            PRIMARY KEY (message_id, n)
        );

        -- Which documents a conversation answers from: {"collections": [...]} or {"documents": [...]}
        -- or {"all": true}; NULL answers from the model alone.
        ALTER TABLE conversations ADD COLUMN library_scope TEXT;

        -- A note saved from a cited passage keeps where it came from.
        ALTER TABLE notes ADD COLUMN source_document TEXT;
        ALTER TABLE notes ADD COLUMN source_page INTEGER;
        """
    )


@migrations()
def m006_evaluation(db: Database) -> None:
    """Evaluation: test sets and their items, runs, every output with its reproducibility record, the
    scores of each scorer (a rescore adds rows, it never generates again), and the arena's blind battles.

    An output row is written whole, once per (run, item, model): an interrupted run keeps what finished,
    and resuming it generates only the missing rows.
    """
    db.executescript(
        """
        CREATE TABLE test_sets (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            name TEXT NOT NULL,
            filename TEXT,
            sha256 TEXT NOT NULL,           -- of the items as stored (canonical JSON), not of the upload's bytes
            items INTEGER NOT NULL,
            created TEXT NOT NULL,
            deleted_at TEXT
        );
        CREATE UNIQUE INDEX test_sets_live_name ON test_sets (owner, name) WHERE deleted_at IS NULL;

        CREATE TABLE test_items (
            id INTEGER PRIMARY KEY,
            test_set_id INTEGER NOT NULL REFERENCES test_sets(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            key TEXT NOT NULL,              -- the item's own id in the file
            item TEXT NOT NULL,             -- JSON: messages, answers, choices, gold, tags, pages
            UNIQUE (test_set_id, key)
        );

        CREATE TABLE eval_runs (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            test_set_id INTEGER NOT NULL REFERENCES test_sets(id),
            models TEXT NOT NULL,           -- JSON list of model specs, in the order given
            scorers TEXT NOT NULL,          -- JSON list of scorer names, as asked for at the start
            params TEXT NOT NULL,           -- JSON: sampling settings, scope, judge
            status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'cancelled', 'failed', 'interrupted')),
            total INTEGER NOT NULL,         -- items x models
            done INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,          -- the worker's heartbeat while running
            finished TEXT
        );
        CREATE INDEX eval_runs_owner ON eval_runs (owner, id);

        CREATE TABLE eval_outputs (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
            item_id INTEGER NOT NULL REFERENCES test_items(id),
            model TEXT NOT NULL,            -- the model spec
            text TEXT,                      -- the generated answer (NULL when only log-likelihoods were asked for)
            choices TEXT,                   -- JSON: per choice {logprob, greedy, tokens, chars}
            sources TEXT,                   -- JSON: the passages retrieved for the item, when scoped to documents
            record TEXT NOT NULL,           -- JSON: the answer's reproducibility record (seed, weights, settings)
            error TEXT,                     -- why this item failed; the run went on
            created TEXT NOT NULL,
            UNIQUE (run_id, item_id, model)
        );

        CREATE TABLE eval_scores (
            output_id INTEGER NOT NULL REFERENCES eval_outputs(id) ON DELETE CASCADE,
            scorer TEXT NOT NULL,
            value REAL NOT NULL,            -- 0..1 (F1, recall, a judge's grade scaled)
            correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
            detail TEXT,                    -- JSON: what the scorer saw (precision and recall, the letter read...)
            created TEXT NOT NULL,
            PRIMARY KEY (output_id, scorer)
        );

        CREATE TABLE arena_battles (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            prompt TEXT NOT NULL,
            model_a TEXT NOT NULL,
            model_b TEXT NOT NULL,
            answer_a TEXT,
            answer_b TEXT,
            record_a TEXT,                  -- JSON reproducibility records
            record_b TEXT,
            vote TEXT CHECK (vote IN ('a', 'b', 'tie', 'both_bad')),
            created TEXT NOT NULL,
            voted TEXT
        );
        CREATE INDEX arena_battles_owner ON arena_battles (owner, id);
        """
    )


@migrations()
def m007_user_model(db: Database) -> None:
    """The model spec each user chose last on the page, where their next session starts (NULL: the default)."""
    db.execute("ALTER TABLE users ADD COLUMN default_model TEXT")


@migrations()
def m008_data(db: Database) -> None:
    """Data tables (the rows themselves live in the owner's DuckDB file) and the answers computed from them.

    A table's row is written ``loading`` before its DuckDB table and marked ``ready`` with its profile after
    the DuckDB transaction commits, so a crash mid-load leaves a ``loading`` row that the next start removes
    with whatever DuckDB kept of it. ``duck_name`` is the DuckDB table's name, which is the name users write
    in SQL. An answer keeps its query, the hashes of its tables and of its result, and the rows it showed.
    """
    db.executescript(
        """
        CREATE TABLE data_tables (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            name TEXT NOT NULL,             -- the SQL name: lower case letters, digits and _
            filename TEXT NOT NULL,         -- the base name only, never a path
            kind TEXT NOT NULL,             -- csv, tsv, xlsx, parquet
            sha256 TEXT NOT NULL,           -- hex SHA-256 of the file's bytes: the table's hash in records
            size INTEGER NOT NULL,
            rows INTEGER,
            columns TEXT NOT NULL DEFAULT '[]',  -- JSON [{name, type}]
            profile TEXT,                   -- JSON: per column counts, statistics, histogram or top values
            report TEXT NOT NULL DEFAULT '{}',   -- JSON: how it was read (encoding, sheet, skipped rows, warnings)
            status TEXT NOT NULL CHECK (status IN ('loading', 'ready')),
            created TEXT NOT NULL,
            deleted_at TEXT
        );
        CREATE INDEX data_tables_owner ON data_tables (owner, name);

        CREATE TABLE data_answers (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL REFERENCES users(name) ON UPDATE CASCADE,
            tables TEXT NOT NULL,           -- JSON [{id, name, sha256}] as they were when it ran
            kind TEXT NOT NULL,             -- query, ask, or an analysis: groupby, correlation, compare, regression
            question TEXT,
            sql TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',   -- JSON: the analysis' choices
            columns TEXT NOT NULL,          -- JSON [{name, type}]
            rows TEXT NOT NULL,             -- JSON rows as shown (at most the row limit)
            row_count INTEGER NOT NULL,
            truncated INTEGER NOT NULL DEFAULT 0,
            result_sha256 TEXT NOT NULL,
            chart TEXT,                     -- JSON chart spec, NULL when no chart fits
            narrative TEXT,
            statistics TEXT,                -- JSON: a computation's results (t, p, effect size, slope...)
            unverified TEXT NOT NULL DEFAULT '[]', -- JSON: numbers in the narrative that the result does not hold
            record TEXT NOT NULL DEFAULT '{}',    -- JSON: model, seed, attempts, timings
            created TEXT NOT NULL
        );
        CREATE INDEX data_answers_owner ON data_answers (owner, id);
        """
    )

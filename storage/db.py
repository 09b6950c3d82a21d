"""Opening the database: pragmas, migrations and ``BEGIN IMMEDIATE`` transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlite_utils import Database

from storage.migrations import migrations

# How long a writer waits for another writer's lock before "database is locked" (milliseconds).
# Write transactions here are short (one message, one rename); an import of a large file is the
# longest, and a few seconds covers it on a slow disk.
BUSY_TIMEOUT_MS = 10_000

_migrate_lock = threading.Lock()


def connect(path: str | Path) -> Database:
    """A configured connection to the database at ``path``, without migrating it.

    The connection is in driver autocommit mode (``isolation_level=None``): every statement
    commits on its own unless it runs inside :func:`immediate`, so no implicit, deferred
    transaction can ever be left open or upgraded from read to write (which is what raises
    "database is locked" in WAL mode regardless of the busy timeout).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        # Each connection is used by one thread only; Store.close() may close it from another.
        check_same_thread=False,
    )
    db = Database(conn, execute_plugins=False)
    # WAL: readers never block the writer and the writer never blocks readers.
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed message survives a power cut, not only a crash of the app. Commits are
    # a few per answer (streaming updates are throttled by the caller), so the fsync is cheap.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return db


def migrate(db: Database) -> None:
    """Apply every pending migration, safely against other threads and processes doing the same."""
    with _migrate_lock:
        if not migrations.pending(db):
            return
        # Under the write lock, re-check and apply: a second process opening the database at
        # the same moment waits here, then finds nothing pending.
        with immediate(db):
            migrations.apply(db)


def open_database(path: str | Path, *, migrate_schema: bool = True) -> Database:
    """Open (creating it and its directory if needed) and migrate the database at ``path``."""
    db = connect(path)
    if migrate_schema:
        migrate(db)
    return db


@contextlib.contextmanager
def immediate(db: Database) -> Iterator[Database]:
    """A write transaction that takes the write lock at ``BEGIN``.

    Use it whenever a read precedes a write: a deferred transaction that reads first and then
    writes can fail with "database is locked" at once, without waiting for the busy timeout.
    Nested use joins the outer transaction through a savepoint.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT leaves the transaction open: roll it back too.
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise

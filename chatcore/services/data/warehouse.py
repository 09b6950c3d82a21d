"""The owners' DuckDB files: one per owner beside ``chatcore.db``, written by loads, read by sandboxed queries.

An owner's file is either open read-only for queries (one sandboxed DuckDB instance, a cursor per query) or
open read-write for one load or drop at a time: a per-owner readers–writer lock keeps the two apart, because
DuckDB refuses to open one file twice in a process with different settings. Each write is one DuckDB
transaction, so a crash mid-load leaves the file as it was.

A file stays open while something reads it and IDLE_CLOSE_S after (a query on a warm file skips ~40 ms of
reopening and rereading), then closes, so that another process (``chatcore data add`` beside a running server)
can take its turn: DuckDB locks a file per process, and a process that finds it locked waits up to
LOCK_WAIT_S before saying who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from chatcore.services.data.errors import DataError
from chatcore.services.data.sandbox import Limits, Result, check_sql, explain, run_select, sandbox_config

LOCK_WAIT_S = 10.0
IDLE_CLOSE_S = 2.0


class FileBusy(DataError):
    """Another process holds the owner's DuckDB file (a server's load, or a command's) past LOCK_WAIT_S."""


def _connect(opener: Callable[[], duckdb.DuckDBPyConnection], path: Path) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, waiting while another process holds its lock; :class:`FileBusy` after LOCK_WAIT_S."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return opener()
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                if "lock" in str(exc).lower():
                    holder = re.search(r"\(PID (\d+)\)", str(exc))
                    raise FileBusy(f"the data file is in use by another ChatCore process"
                                   f"{' (PID ' + holder.group(1) + ')' if holder else ''}; try again when it is "
                                   "idle") from None
                raise
            time.sleep(0.2)


class _ReadersWriter:
    """Many readers or one writer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and self._readers == 0)
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def quote_identifier(name: str) -> str:
    """``name`` as a DuckDB identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


class Warehouse:
    """Every owner's DuckDB file under ``root``, with the sandbox every query runs in."""

    def __init__(self, root: Path, limits: Limits = Limits()) -> None:
        self.root = Path(root)
        self.limits = limits
        self._guard = threading.Lock()
        self._locks: dict[str, _ReadersWriter] = {}
        self._readers: dict[str, duckdb.DuckDBPyConnection] = {}
        self._reading: dict[str, int] = {}  # open cursors per owner: the file closes when the last one ends

    def path(self, owner: str) -> Path:
        """The owner's DuckDB file: a readable name and a hash, so that no two owners ever share one."""
        readable = re.sub(r"[^A-Za-z0-9_-]+", "_", owner)[:40] or "owner"
        digest = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:12]
        return self.root / f"{readable}-{digest}.duckdb"

    def _lock(self, owner: str) -> _ReadersWriter:
        with self._guard:
            return self._locks.setdefault(owner, _ReadersWriter())

    # -- writing ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, owner: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """The owner's file open read-write (no query runs meanwhile); the caller commits its own transaction."""
        with self._lock(owner).writing():
            self._close_reader(owner)
            self.root.mkdir(parents=True, exist_ok=True)
            connection = _connect(lambda: duckdb.connect(str(self.path(owner)), config={
                "autoinstall_known_extensions": False, "autoload_known_extensions": False,
                "threads": self.limits.threads}), self.path(owner))
            try:
                yield connection
            finally:
                connection.close()

    def drop(self, owner: str, table: str) -> None:
        """Drop the owner's DuckDB table if it exists (a removed table's purge, a failed load's leftovers)."""
        if not self.path(owner).exists():
            return
        with self.writer(owner) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {quote_identifier(table)}")

    def rename(self, owner: str, old: str, new: str) -> None:
        """Rename the owner's DuckDB table (a removed table steps aside; Undo brings it back)."""
        with self.writer(owner) as connection:
            connection.execute(f"ALTER TABLE {quote_identifier(old)} RENAME TO {quote_identifier(new)}")

    def tables(self, owner: str) -> list[str]:
        """The names of the DuckDB tables in the owner's file."""
        if not self.path(owner).exists():
            return []
        with self.reader(owner) as cursor:
            return [r[0] for r in cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]

    # -- reading ------------------------------------------------------------------------------------

    def _close_reader(self, owner: str) -> None:
        with self._guard:
            connection = self._readers.pop(owner, None)
        if connection is not None:
            connection.close()

    def _reader_connection(self, owner: str) -> duckdb.DuckDBPyConnection:
        with self._guard:
            self._reading[owner] = self._reading.get(owner, 0) + 1
            connection = self._readers.get(owner)
            if connection is not None:
                return connection
            path = self.path(owner)
            try:
                if not path.exists():  # read-only cannot create: an empty file first
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _connect(lambda: duckdb.connect(str(path)), path).close()
                connection = _connect(lambda: duckdb.connect(str(path), read_only=True,
                                                             config=sandbox_config(self.limits)), path)
            except BaseException:
                self._reading[owner] -= 1
                raise
            self._readers[owner] = connection
            return connection

    def _release_reader(self, owner: str) -> None:
        with self._guard:
            self._reading[owner] -= 1
            connection = self._readers.get(owner) if self._reading[owner] == 0 else None
        if connection is not None:  # the last reader: the file closes unless another comes soon
            timer = threading.Timer(IDLE_CLOSE_S, self._close_if_idle, (owner, connection))
            timer.daemon = True
            timer.start()

    def _close_if_idle(self, owner: str, connection: duckdb.DuckDBPyConnection) -> None:
        with self._guard:
            if self._reading.get(owner) or self._readers.get(owner) is not connection:
                return  # read again meanwhile (its own release schedules the next close), or already closed
            self._readers.pop(owner)
        connection.close()

    @contextlib.contextmanager
    def reader(self, owner: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A sandboxed cursor on the owner's file, read-only; no load runs while it is open."""
        with self._lock(owner).reading():
            connection = self._reader_connection(owner)
            try:
                cursor = connection.cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()
            finally:
                self._release_reader(owner)

    def query(self, owner: str, sql: str, *, limits: Limits | None = None, plan_first: bool = False) -> Result:
        """Check and run one ``SELECT`` over the owner's tables in the sandbox; ``plan_first`` binds and plans
        it with ``EXPLAIN`` before it runs (a model's query: an unknown column fails there, cheaply)."""
        limits = limits or self.limits
        checked = check_sql(sql)
        with self.reader(owner) as cursor:
            if plan_first:
                explain(cursor, checked)
            return run_select(cursor, checked, limits)

    def close(self) -> None:
        """Close every reader (tests and shutdown)."""
        with self._guard:
            readers, self._readers = list(self._readers.values()), {}
        for connection in readers:
            connection.close()

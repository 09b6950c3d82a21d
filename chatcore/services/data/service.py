"""The data service: tables in, profiles, sandboxed queries, analyses without a model, and questions a model
answers by writing SQL. Every front end (the Library tab's Data area, ``chatcore data``, ``/v1/data``) calls it.

A table is loaded in one DuckDB transaction between two SQLite writes: its row is reserved ``loading`` first
and marked ``ready`` with its profile last, so nothing is ever half-loaded; a crash in between leaves a
``loading`` row that :meth:`DataService.recover` clears at the next start.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from chatcore.services.data.answers import Answer
from chatcore.services.data.charts import choose_chart
from chatcore.services.data.errors import LoadRefused
from chatcore.services.data.loading import Progress, inspect_file, load_file, sheets
from chatcore.services.data.profile import profile_table
from chatcore.services.data.sandbox import Limits, Result
from chatcore.services.data.warehouse import Warehouse
from storage import Store
from storage import data as db
from storage.library import DEFAULT_COLLECTION

log = logging.getLogger(__name__)

REMOVED_PREFIX = "cc_removed_"  # a removed table's DuckDB name until it is restored or purged


class DataService:
    """The owner's data tables: load, profile, query, analyse, ask, and keep every answer with its record."""

    def __init__(self, store: Store, warehouse: Warehouse, *, max_bytes: int = 4 * 2**30,
                 backend_for: Callable[[str | None], Any] | None = None,
                 hold: Callable[[Any], Any] | None = None) -> None:
        self.store = store
        self.warehouse = warehouse
        self.max_bytes = max_bytes
        self.backend_for = backend_for  # model spec -> a loaded backend (ModelManager.wait_for); ask needs it
        self.hold = hold

    @classmethod
    def from_settings(cls, settings: Any, store: Store, **options: Any) -> "DataService":
        """A service with the file and query limits in ``settings`` and the DuckDB files in ``settings.data_dir``."""
        limits = Limits(memory=settings.data_query_memory, timeout_s=settings.data_query_timeout_s,
                        max_rows=settings.data_max_rows)
        return cls(store, Warehouse(settings.data_dir, limits), max_bytes=int(settings.data_max_mb * 2**20),
                   **options)

    # -- tables ---------------------------------------------------------------------------------------

    def add(self, owner: str, path: str | Path, *, filename: str | None = None, name: str | None = None,
            collection: str = DEFAULT_COLLECTION, sheet: str | None = None, bad_rows: str = "refuse",
            progress: Progress | None = None) -> dict[str, Any]:
        """Load a file as the owner's table ``name`` (from the file name by default) and profile it."""
        path = Path(path)
        filename = Path(filename or path.name).name
        if not path.is_file():
            raise LoadRefused(f"{filename}: no such file")
        source = inspect_file(path, filename, max_bytes=self.max_bytes)
        table = db.begin_table(self.store, owner, name or db.name_from_filename(filename), filename=filename,
                               kind=source.kind, sha256=source.sha256, size=source.size, collection=collection)
        try:
            with self.warehouse.writer(owner) as connection, \
                    tempfile.TemporaryDirectory(prefix="chatcore-data-") as workdir:
                connection.execute("BEGIN TRANSACTION")
                report = load_file(connection, source, table["name"], sheet=sheet, bad_rows=bad_rows,
                                   progress=progress, workdir=Path(workdir))
                if progress:
                    progress(0.99, "profiling")
                profile = profile_table(connection, table["name"])
                connection.execute("COMMIT")
        except BaseException:
            db.abandon_table(self.store, owner, table["id"])  # DuckDB rolled back when the connection closed
            raise
        if progress:
            progress(1.0, "ready")
        return db.finish_table(self.store, owner, table["id"], rows=report.rows, columns=report.columns,
                               profile=profile, report=report.to_dict())

    def sheets(self, path: str | Path) -> list[str]:
        """An Excel workbook's sheet names, to choose one before adding it."""
        return sheets(Path(path))

    def tables(self, owner: str, *, collection: str | None = None) -> list[dict[str, Any]]:
        return db.list_tables(self.store, owner, collection=collection)

    def table(self, owner: str, table: int | str) -> dict[str, Any]:
        """The owner's table by id or SQL name; another owner's answers like a missing one."""
        return db.get_table(self.store, owner, table)

    def remove(self, owner: str, table: int | str) -> dict[str, Any]:
        """Hide a table from lists and queries; :meth:`restore` undoes it until :meth:`purge`."""
        row = self.table(owner, table)
        self.warehouse.rename(owner, row["name"], f"{REMOVED_PREFIX}{row['id']}")
        try:
            return db.delete_table(self.store, owner, row["id"])
        except BaseException:
            self.warehouse.rename(owner, f"{REMOVED_PREFIX}{row['id']}", row["name"])
            raise

    def restore(self, owner: str, table_id: int) -> dict[str, Any]:
        """Undo :meth:`remove` (refused if a live table has taken the name meanwhile)."""
        row = db.restore_table(self.store, owner, table_id)  # NotFound, or the name taken: nothing renamed
        try:
            self.warehouse.rename(owner, f"{REMOVED_PREFIX}{table_id}", row["name"])
        except BaseException:
            db.delete_table(self.store, owner, table_id)  # removed again: its rows kept their removed name
            raise
        return row

    def purge(self, owner: str) -> int:
        """Drop the owner's removed tables for good; returns how many."""
        removed = db.deleted_tables(self.store, owner)
        for row in removed:
            self.warehouse.drop(owner, f"{REMOVED_PREFIX}{row['id']}")
            db.forget_table(self.store, owner, row["id"])
        return len(removed)

    def recover(self) -> int:
        """Clear loads cut short by a crash (their DuckDB tables, then their rows); returns how many."""
        stale = db.loading_tables(self.store)
        for row in stale:
            try:
                self.warehouse.drop(row["owner"], row["name"])
            except duckdb.Error as exc:
                log.warning("could not drop the half-loaded table %s of %s: %s", row["name"], row["owner"], exc)
                continue
            db.abandon_table(self.store, row["owner"], row["id"])
        return len(stale)

    def profile(self, owner: str, table: int | str, *, refresh: bool = False) -> dict[str, Any]:
        """The table's profile (computed at load; ``refresh`` computes it again)."""
        row = self.table(owner, table)
        if row["profile"] is not None and not refresh:
            return row["profile"]
        with self.warehouse.reader(owner) as cursor:
            profile = profile_table(cursor, row["name"])
        db.set_profile(self.store, owner, row["id"], profile)
        return profile

    # -- queries --------------------------------------------------------------------------------------

    def tables_read(self, owner: str, sql: str) -> list[dict[str, Any]]:
        """``{id, name, sha256}`` of the owner's tables a query reads (its record's table hashes)."""
        try:
            with duckdb.connect(":memory:", config={"enable_external_access": False}) as parser:
                names = parser.get_table_names(sql, qualified=False)
        except duckdb.Error:
            # get_table_names binds some joins (JOIN ... USING fails even over real tables): then every word
            # of the query that names a live table counts, since a record missing a table's hash is worse
            names = {word.lower() for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
        live = {t["name"]: t for t in self.tables(owner)}
        return [{"id": live[n]["id"], "name": n, "sha256": live[n]["sha256"]} for n in sorted(names) if n in live]

    def run(self, owner: str, sql: str) -> Result:
        """Run one ``SELECT`` in the sandbox; nothing is saved (analyses and ask build on it)."""
        return self.warehouse.query(owner, sql)

    def answer_from(self, owner: str, result: Result, *, kind: str, question: str | None = None,
                    params: dict[str, Any] | None = None, chart: dict[str, Any] | None | bool = True,
                    narrative: str | None = None, statistics: dict[str, Any] | None = None,
                    unverified: Sequence[str] = (), record: dict[str, Any] | None = None,
                    save: bool = True) -> Answer:
        """An :class:`Answer` for a result (its chart chosen when ``chart`` is True), saved unless told not to."""
        if chart is True:
            chart = choose_chart(result.columns, result.rows, title=question or "")
        answer = Answer(kind=kind, sql=result.sql, columns=result.columns, rows=result.rows,
                        row_count=len(result.rows), truncated=result.truncated, result_sha256=result.sha256,
                        tables=self.tables_read(owner, result.sql), question=question, params=params or {},
                        chart=chart or None, narrative=narrative, statistics=statistics,
                        unverified=list(unverified),
                        record={"elapsed_s": round(result.elapsed_s, 4), **(record or {})})
        if save:
            row = db.save_answer(self.store, owner, answer.to_dict())
            answer.id, answer.created = row["id"], row["created"]
        return answer

    def query(self, owner: str, sql: str, *, question: str | None = None, save: bool = True) -> Answer:
        """Run the owner's SQL (typed or edited) and answer with its table and chart; saved with its record."""
        return self.answer_from(owner, self.run(owner, sql), kind="query", question=question, save=save)

    def analyze(self, owner: str, table: int | str, kind: str, *, save: bool = True, **params: Any) -> Answer:
        """A model-free analysis of a table: ``groupby``, ``correlation``, ``compare`` or ``regression``."""
        from chatcore.services.data.analyses import run_analysis

        row = self.table(owner, table)
        return run_analysis(self, owner, row, kind, save=save, **params)

    def ask(self, owner: str, question: str, *, tables: Sequence[str], model: str | None = None,
            seed: int | None = None, retries: int = 2, on_step: Callable[[str], None] | None = None,
            save: bool = True) -> Answer:
        """A question answered by the model writing SQL over ``tables`` (schemas and profiles, never rows)."""
        from chatcore.services.data.ask import ask

        return ask(self, owner, question, tables=tables, model=model, seed=seed, retries=retries,
                   on_step=on_step, save=save)

    def answers(self, owner: str, *, table: str | None = None, limit: int = 50) -> list[Answer]:
        return [Answer.from_row(r) for r in db.list_answers(self.store, owner, table=table, limit=limit)]

    def answer(self, owner: str, answer_id: int) -> Answer:
        """The owner's saved answer; another owner's answers like a missing one."""
        return Answer.from_row(db.get_answer(self.store, owner, answer_id))

    def close(self) -> None:
        self.warehouse.close()

"""Data tables and the answers computed from them: what ChatCore knows about each table, not its rows.

The rows live in the owner's DuckDB file (``chatcore.services.data.warehouse``); this module keeps each table's
name, source file hash, columns, profile and load report, and each answer's query, result and record.

Ownership: another owner's table or answer id raises the same ``NotFound`` as a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from storage.db import immediate
from storage.errors import InvalidValue, NotFound
from storage.library import DEFAULT_COLLECTION, ensure_collection
from storage.store import Store, dump_json, inserted_id, load_json
from storage.transfer import utc_now

TABLE_NAME_MAX_CHARS = 63
# A SQL name a small model can write without quoting: it starts with a letter.
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# DuckDB's own names, and the prefix ChatCore uses for tables on their way in or out.
RESERVED = frozenset({"select", "from", "where", "table", "order", "group", "limit", "join", "union", "with",
                      "information_schema", "main", "temp", "system", "pg_catalog"})
INTERNAL_PREFIX = "cc_"

_TABLE_COLUMNS = ("t.id, t.owner, t.collection_id, c.name AS collection, t.name, t.filename, t.kind, t.sha256,"
                  " t.size, t.rows, t.columns, t.profile, t.report, t.status, t.created")
_ANSWER_COLUMNS = ("id, owner, tables, kind, question, sql, params, columns, rows, row_count, truncated,"
                   " result_sha256, chart, narrative, statistics, unverified, record, created")


def check_table_name(name: Any) -> str:
    """A table's SQL name, or ``InvalidValue`` saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue("the table name is empty")
    name = name.strip()
    if len(name) > TABLE_NAME_MAX_CHARS:
        raise InvalidValue(f"the table name is longer than {TABLE_NAME_MAX_CHARS} characters")
    if not TABLE_NAME.match(name):
        raise InvalidValue(f"the table name {name!r} must start with a lower-case letter and hold only lower-case "
                           "letters, digits and _ (it is the name you write in SQL)")
    if name in RESERVED or name.startswith(INTERNAL_PREFIX):
        raise InvalidValue(f"the table name {name!r} is reserved; choose another")
    return name


def name_from_filename(filename: str) -> str:
    """A valid table name guessed from a file name: ``Penguins (2020).csv`` gives ``penguins_2020``."""
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()
    name = re.sub(r"[^a-z0-9]+", "_", stem).strip("_")
    if not name or not name[0].isalpha():
        name = "t_" + name if name else "table"
    name = name[:TABLE_NAME_MAX_CHARS].rstrip("_")
    if name in RESERVED or name.startswith(INTERNAL_PREFIX):
        name = "t_" + name
    return name


def _table(row: dict[str, Any]) -> dict[str, Any]:
    for key, empty in (("columns", []), ("profile", None), ("report", {})):
        row[key] = load_json(row[key]) if row[key] else empty
    return row


# -- tables ---------------------------------------------------------------------------------------------


def begin_table(store: Store, owner: str, name: str, *, filename: str, kind: str, sha256: str, size: int,
                collection: str = DEFAULT_COLLECTION) -> dict[str, Any]:
    """Reserve ``name`` for a table on its way in (status ``loading``); ``InvalidValue`` if a live one has it."""
    name = check_table_name(name)
    collection_id = ensure_collection(store, owner, collection)["id"]
    with immediate(store.db):
        store.ensure_user(owner, utc_now())
        taken = store.rows("SELECT status FROM data_tables WHERE owner = ? AND name = ? AND deleted_at IS NULL",
                           (owner, name))
        if taken:
            what = "is being loaded" if taken[0]["status"] == "loading" else "exists"
            raise InvalidValue(f"a table named {name!r} {what}; choose another name or remove it first")
        cursor = store.db.conn.execute(
            "INSERT INTO data_tables (owner, collection_id, name, filename, kind, sha256, size, status, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'loading', ?)",
            (owner, collection_id, name, filename, kind, sha256, size, utc_now()))
    return get_table(store, owner, inserted_id(cursor), include_loading=True)


def finish_table(store: Store, owner: str, table_id: int, *, rows: int, columns: Sequence[dict[str, Any]],
                 profile: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Mark a loaded table ``ready`` with its shape, profile and load report, in one statement."""
    cursor = store.db.conn.execute(
        "UPDATE data_tables SET status = 'ready', rows = ?, columns = ?, profile = ?, report = ?"
        " WHERE id = ? AND owner = ? AND status = 'loading'",
        (rows, dump_json(list(columns)), dump_json(profile), dump_json(report), table_id, owner))
    if cursor.rowcount == 0:
        raise NotFound(f"no table {table_id} being loaded")
    return get_table(store, owner, table_id)


def set_profile(store: Store, owner: str, table_id: int, profile: dict[str, Any]) -> None:
    """Replace a ready table's profile (a profile computed again, with other settings)."""
    get_table(store, owner, table_id)
    store.db.conn.execute("UPDATE data_tables SET profile = ? WHERE id = ?", (dump_json(profile), table_id))


def abandon_table(store: Store, owner: str, table_id: int) -> None:
    """Forget a table whose load failed or was cut short (its DuckDB table is already gone or never was)."""
    store.db.conn.execute("DELETE FROM data_tables WHERE id = ? AND owner = ? AND status = 'loading'",
                          (table_id, owner))


def loading_tables(store: Store) -> list[dict[str, Any]]:
    """Every owner's tables left ``loading`` (a load cut short by a crash), for the next start to clear."""
    return [_table(r) for r in store.rows(
        f"SELECT {_TABLE_COLUMNS} FROM data_tables t JOIN collections c ON c.id = t.collection_id"
        " WHERE t.status = 'loading' ORDER BY t.id")]


def get_table(store: Store, owner: str, table: int | str, *, include_loading: bool = False) -> dict[str, Any]:
    """The owner's live table by id or SQL name; ``NotFound`` for a missing, removed or another owner's one."""
    by = "t.id = ?" if isinstance(table, int) else "t.name = ?"
    status = "" if include_loading else " AND t.status = 'ready'"
    rows = store.rows(f"SELECT {_TABLE_COLUMNS} FROM data_tables t JOIN collections c ON c.id = t.collection_id"
                      f" WHERE {by} AND t.owner = ? AND t.deleted_at IS NULL{status}", (table, owner))
    if not rows:
        raise NotFound(f"no table {table!r}" if isinstance(table, str) else f"no table {table}")
    return _table(rows[0])


def list_tables(store: Store, owner: str, *, collection: str | None = None) -> list[dict[str, Any]]:
    """The owner's ready tables by name, optionally of one collection."""
    return [_table(r) for r in store.rows(
        f"SELECT {_TABLE_COLUMNS} FROM data_tables t JOIN collections c ON c.id = t.collection_id"
        " WHERE t.owner = ? AND t.deleted_at IS NULL AND t.status = 'ready' AND (? IS NULL OR c.name = ?)"
        " ORDER BY t.name", (owner, collection, collection))]


def delete_table(store: Store, owner: str, table_id: int) -> dict[str, Any]:
    """Hide a table from lists and queries; :func:`restore_table` undoes it until it is purged."""
    table = get_table(store, owner, table_id)
    store.db.conn.execute("UPDATE data_tables SET deleted_at = ? WHERE id = ?", (utc_now(), table_id))
    return table


def restore_table(store: Store, owner: str, table_id: int) -> dict[str, Any]:
    """Undo :func:`delete_table`; ``InvalidValue`` if a live table has taken its name meanwhile."""
    rows = store.rows("SELECT name FROM data_tables WHERE id = ? AND owner = ? AND deleted_at IS NOT NULL",
                      (table_id, owner))
    if not rows:
        raise NotFound(f"no removed table {table_id}")
    with immediate(store.db):
        if store.rows("SELECT 1 FROM data_tables WHERE owner = ? AND name = ? AND deleted_at IS NULL",
                      (owner, rows[0]["name"])):
            raise InvalidValue(f"a table named {rows[0]['name']!r} exists again; remove it before restoring this one")
        store.db.conn.execute("UPDATE data_tables SET deleted_at = NULL WHERE id = ?", (table_id,))
    return get_table(store, owner, table_id)


def deleted_tables(store: Store, owner: str | None = None) -> list[dict[str, Any]]:
    """Removed tables (of one owner, or all), whose DuckDB tables a purge drops."""
    return [_table(r) for r in store.rows(
        f"SELECT {_TABLE_COLUMNS}, t.deleted_at FROM data_tables t JOIN collections c ON c.id = t.collection_id"
        " WHERE t.deleted_at IS NOT NULL AND (? IS NULL OR t.owner = ?) ORDER BY t.id", (owner, owner))]


def forget_table(store: Store, owner: str, table_id: int) -> None:
    """Delete a removed table's row for good (after its DuckDB table was dropped)."""
    store.db.conn.execute("DELETE FROM data_tables WHERE id = ? AND owner = ? AND deleted_at IS NOT NULL",
                          (table_id, owner))


# -- answers --------------------------------------------------------------------------------------------


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("tables", "params", "columns", "rows", "chart", "statistics", "unverified", "record"):
        row[key] = load_json(row[key]) if row[key] is not None else None
    row["truncated"] = bool(row["truncated"])
    return row


def save_answer(store: Store, owner: str, answer: dict[str, Any]) -> dict[str, Any]:
    """Keep an answer whole (query, tables' hashes, result rows and hash, chart, narrative, record)."""
    keys = ("tables", "kind", "question", "sql", "params", "columns", "rows", "row_count", "truncated",
            "result_sha256", "chart", "narrative", "statistics", "unverified", "record")
    values = [answer.get(k) for k in keys]
    json_keys = {"tables", "params", "columns", "rows", "chart", "statistics", "unverified", "record"}
    values = [dump_json(v) if k in json_keys and v is not None else v for k, v in zip(keys, values)]
    for k, default in (("params", "{}"), ("unverified", "[]"), ("record", "{}")):
        i = keys.index(k)
        values[i] = values[i] or default
    values[keys.index("truncated")] = int(bool(answer.get("truncated")))
    with immediate(store.db):
        store.ensure_user(owner, utc_now())
        cursor = store.db.conn.execute(
            f"INSERT INTO data_answers (owner, {', '.join(keys)}, created) VALUES (?, {', '.join('?' * len(keys))}, ?)",
            (owner, *values, utc_now()))
    return get_answer(store, owner, inserted_id(cursor))


def get_answer(store: Store, owner: str, answer_id: int) -> dict[str, Any]:
    """The owner's answer; ``NotFound`` for a missing or another owner's one alike."""
    rows = store.rows(f"SELECT {_ANSWER_COLUMNS} FROM data_answers WHERE id = ? AND owner = ?", (answer_id, owner))
    if not rows:
        raise NotFound(f"no answer {answer_id}")
    return _answer(rows[0])


def list_answers(store: Store, owner: str, *, table: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The owner's answers, newest first, optionally those over one table (by SQL name)."""
    rows = store.rows(
        f"SELECT {_ANSWER_COLUMNS} FROM data_answers WHERE owner = ? AND (? IS NULL OR EXISTS ("
        "SELECT 1 FROM json_each(data_answers.tables) WHERE json_extract(value, '$.name') = ?))"
        " ORDER BY id DESC LIMIT ?", (owner, table, table, limit))
    return [_answer(r) for r in rows]

"""Running a user's (or a model's) SQL where it can read the owner's tables and nothing else.

Two fences, so that one mistake is not enough:

1. **The gate** (:func:`check_sql`): DuckDB's own parser splits the text; exactly one ``SELECT`` (``WITH``,
   ``DESCRIBE``, ``SUMMARIZE`` and ``FROM t`` parse as ``SELECT``) gets through. ``COPY``, ``ATTACH``,
   ``INSTALL``/``LOAD``, writes and settings are refused by name, before anything runs.
2. **The connection** (:func:`sandbox_config`): the owner's file opened read-only, external access off (no
   files, URLs or other databases, no Python replacement scans), extension install and autoload off, a memory
   and thread limit, and the configuration locked so that a query cannot turn any of it back on.

The time limit interrupts the query from a timer; the row limit stops fetching after ``max_rows``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import duckdb

from chatcore.services.data.errors import QueryFailed, QueryRefused, QueryTimeout

MAX_SQL_CHARS = 20_000


@dataclass(frozen=True)
class Limits:
    """What one query may use: memory, threads, seconds, and rows returned."""

    memory: str = "1GB"
    threads: int = 2
    timeout_s: float = 30.0
    max_rows: int = 1000


def sandbox_config(limits: Limits) -> dict[str, Any]:
    """The DuckDB configuration every query connection opens with; locked last, so a query cannot change it."""
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "python_enable_replacements": False,
        "memory_limit": limits.memory,
        "threads": limits.threads,
        "lock_configuration": True,
    }


# Why each kind of statement is refused, in the words the user (or the model, on a retry) reads.
_REFUSALS = {
    "COPY": "COPY is refused: queries may not read or write files",
    "EXPORT": "EXPORT DATABASE is refused: queries may not write files",
    "ATTACH": "ATTACH is refused: queries may not open other databases",
    "DETACH": "DETACH is refused: queries may not change which databases are open",
    "LOAD": "INSTALL and LOAD are refused: extensions are off",
    "SET": "SET is refused: the sandbox's settings are locked",
    "VARIABLE_SET": "SET is refused: the sandbox's settings are locked",
    "PRAGMA": "PRAGMA is refused: the sandbox's settings are locked",
    "CALL": "CALL is refused: only SELECT queries run here",
    "TRANSACTION": "transactions are refused: the tables are read-only",
}
_WRITES = {"INSERT", "UPDATE", "DELETE", "CREATE", "CREATE_FUNC", "DROP", "ALTER", "MERGE_INTO", "VACUUM",
           "ANALYZE", "UPDATE_EXTENSIONS"}


def _statement_kind(statement: Any) -> str:
    return str(statement.type).rsplit(".", 1)[-1]


def check_sql(sql: Any) -> str:
    """``sql`` as one ``SELECT`` statement without its trailing ``;``, or :class:`QueryRefused`/:class:`QueryFailed`."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryFailed("the query is empty: write one SELECT statement")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryFailed(f"the query is longer than {MAX_SQL_CHARS:,} characters")
    with duckdb.connect(":memory:", config={"enable_external_access": False, "lock_configuration": True}) as parser:
        try:
            statements = parser.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryFailed(f"the query does not parse: {_first_line(exc)}") from None
    if not statements:
        raise QueryFailed("the query is empty: write one SELECT statement")
    if len(statements) > 1:
        raise QueryRefused(f"the text holds {len(statements)} statements; run one SELECT at a time")
    kind = _statement_kind(statements[0])
    if kind == "SELECT":
        return sql.strip().rstrip(";").strip()
    if kind in _WRITES:
        raise QueryRefused(f"{kind.split('_')[0]} is refused: the tables are read-only")
    raise QueryRefused(_REFUSALS.get(kind, f"{kind} statements are refused: only SELECT queries run here"))


def _first_line(exc: BaseException) -> str:
    """DuckDB's message without the caret drawing under it."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def explain_error(exc: duckdb.Error) -> Exception:
    """A DuckDB error as the data error a user reads."""
    if isinstance(exc, duckdb.PermissionException):
        return QueryRefused("file, URL and extension access is off: queries read only your tables "
                            f"({_first_line(exc).replace('Permission Error: ', '')})")
    if isinstance(exc, duckdb.InterruptException):
        return QueryTimeout("the query was interrupted")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return QueryFailed(f"the query needs more memory than its limit: {_first_line(exc)}")
    message = _first_line(exc)
    if "read-only mode" in message:
        return QueryRefused("writes are refused: the tables are read-only")
    if "configuration has been locked" in message:
        return QueryRefused("the sandbox's settings are locked")
    return QueryFailed(message)


@dataclass
class Result:
    """What a query returned: columns with DuckDB types, the first ``max_rows`` rows as plain JSON values."""

    sql: str
    columns: list[dict[str, str]]
    rows: list[list[Any]]
    truncated: bool = False
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    @property
    def sha256(self) -> str:
        """The hash of the columns and rows as shown: the same result gives the same hash on every machine."""
        return result_sha256(self.columns, self.rows)

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts by column name."""
        return [dict(zip(self.names, row)) for row in self.rows]


def result_sha256(columns: list[dict[str, str]], rows: list[list[Any]]) -> str:
    """The canonical hash of a result: column names and types, then the rows as JSON, sorted.

    Sorted, because DuckDB returns a GROUP BY's groups in any order when the query does not say one: the
    same query over the same table then hashes the same on every run (the query, kept beside the hash,
    says the order when it matters).
    """
    lines = sorted(json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str) for row in rows)
    canonical = json.dumps({"columns": columns, "rows": lines}, ensure_ascii=False, sort_keys=True,
                           separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def plain(value: Any) -> Any:
    """A DuckDB value as JSON: decimals as floats, dates as ISO text, NaN and infinities as ``None``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def run_select(connection: duckdb.DuckDBPyConnection, sql: str, limits: Limits) -> Result:
    """Run one checked ``SELECT`` on a sandboxed connection, interrupted after ``limits.timeout_s``."""
    timer = threading.Timer(limits.timeout_s, connection.interrupt)
    timer.daemon = True
    started = time.perf_counter()
    timer.start()
    try:
        cursor = connection.execute(sql)
        columns = [{"name": d[0], "type": str(d[1])} for d in cursor.description or ()]
        fetched = cursor.fetchmany(limits.max_rows + 1)
    except duckdb.InterruptException:
        raise QueryTimeout(f"the query ran past its {limits.timeout_s:g} s limit and was stopped; "
                           "narrow it (a WHERE, a LIMIT) or raise the limit") from None
    except duckdb.Error as exc:
        raise explain_error(exc) from None
    finally:
        timer.cancel()
    truncated = len(fetched) > limits.max_rows
    rows = [[plain(v) for v in row] for row in fetched[:limits.max_rows]]
    return Result(sql=sql, columns=columns, rows=rows, truncated=truncated,
                  elapsed_s=time.perf_counter() - started)


def explain(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Bind and plan ``sql`` without running it (``EXPLAIN``): unknown tables and columns fail here, cheaply."""
    try:
        connection.execute(f"EXPLAIN {sql}").fetchall()
    except duckdb.Error as exc:
        raise explain_error(exc) from None

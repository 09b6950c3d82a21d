"""What goes wrong with data, in words fit to show: a refused file, a refused query, a failed or slow one."""

from __future__ import annotations

from chatcore.core.errors import ChatCoreError


class DataError(ChatCoreError):
    """Base class of the data errors; each message names the problem and what to do."""


class LoadRefused(DataError, ValueError):
    """A file that cannot become a table: empty, too large, malformed, of a kind not read, or ambiguous."""


class QueryRefused(DataError, PermissionError):
    """A query the sandbox does not run: a write, a file, a URL, another database, an extension, a setting."""


class QueryFailed(DataError, ValueError):
    """A query DuckDB could not bind or run (a syntax error, an unknown column); its message is DuckDB's."""


class QueryTimeout(DataError, TimeoutError):
    """A query that ran past the time limit and was interrupted."""

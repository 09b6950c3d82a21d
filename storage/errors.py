"""Errors raised by the storage layer.

Each message is fit to show a user as is; the layers above convert these exceptions into their
own (the CLI into ``click.ClickException``), because ``storage`` never imports them.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class for every error the storage layer raises on purpose."""


class NotFound(StorageError, LookupError):
    """A conversation or message does not exist, is deleted, or belongs to another owner.

    The three cases are indistinguishable on purpose: another owner's id looks exactly like
    a missing one.
    """


class InvalidValue(StorageError, ValueError):
    """An argument is outside what the schema accepts (an unknown role, a rating of 5, ...)."""


class ImportValidationError(StorageError, ValueError):
    """An import file was refused; nothing was written.

    ``where`` is the JSON path of the offending item (``conversations[3].messages[2].role``),
    or ``""`` for the file as a whole; ``problem`` says what is wrong with it.
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)

"""Errors that reach users: each carries a message fit to print as is."""

from __future__ import annotations


class ChatCoreError(Exception):
    """Base class for every error ChatCore reports to a user."""


class ParameterError(ChatCoreError, ValueError):
    """A generation parameter is missing, of the wrong type or out of its range."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ContextOverflowError(ChatCoreError):
    """The prompt cannot fit the model's context window even after dropping history."""


class ModelError(ChatCoreError):
    """A model could not be found, fetched, verified or loaded."""


class DeviceError(ChatCoreError):
    """The requested device or dtype is not available on this machine."""


class NotFoundError(ChatCoreError, LookupError):
    """A conversation, message or note does not exist (or belongs to someone else)."""

"""What every handler module shares: refusals as Gradio messages, the event kinds, and whose history it is."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterator

import gradio as gr

from chatcore.core.errors import ChatCoreError
from storage import LOCAL_OWNER, StorageError

# The quick events (all but generating). Gradio shows a handler's gr.Error only for a queued event (an
# unqueued one just marks its outputs "Error", without the message, and CSS hides that mark), so a
# handler that can refuse (user_errors) is queued, with no concurrency limit so that it never waits
# behind an answer. The others stay out of the queue: Stop and an answer's end must get through even
# when it is full.
REFUSABLE_EVENT = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}
UNQUEUED_EVENT = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
# Errors a user can act on (bad settings, model loading, a deleted conversation).
EXPECTED_ERRORS: tuple[type[Exception], ...] = (ChatCoreError, StorageError)


def user_errors(handler: Callable) -> Callable:
    """Errors a user can act on become Gradio messages; anything else stays a bug and propagates."""

    def convert(exc: Exception) -> gr.Error:
        return gr.Error(str(exc), title="ChatCore")

    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from handler(*args, **kwargs)
            except EXPECTED_ERRORS as exc:
                raise convert(exc) from exc
        return stream

    @functools.wraps(handler)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except EXPECTED_ERRORS as exc:
            raise convert(exc) from exc
    return call


def owner(request: gr.Request | None = None) -> str:
    """Whose history this is: the signed-in account, or the single local user when nobody signs in.

    Every handler takes the request and passes its owner to the workspace, which checks ownership
    itself: another account's id answers exactly as an id that does not exist.
    """
    username = getattr(request, "username", None)
    return username if isinstance(username, str) and username else LOCAL_OWNER


def event_index(event: Any) -> int:
    """The chat message an event (like, select, edit) is about; Gradio may send ``[row, column]``."""
    return int(event.index[0] if isinstance(event.index, (list, tuple)) else event.index)


def enabled(applies: bool) -> gr.Button:
    """A button update: clickable only when its action applies."""
    return gr.Button(interactive=bool(applies))

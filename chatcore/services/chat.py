"""The service layer shared by the CLI, the web app and the HTTP API: ask, save as it streams, stop."""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

from chatcore.core.chat import Message
from chatcore.core.errors import ChatCoreError
from chatcore.core.events import Event, Finished, Started, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.engine.base import Backend
from chatcore.services.library.citations import (
    GROUNDED_SYSTEM,
    Citation,
    check_citations,
    fit_passages,
    grounded_question,
    source_rows,
)
from chatcore.services.library.retrieval import Passage, Scope
from chatcore.services.notes import with_pinned_notes

# Streaming writes are throttled so that SQLite never slows decoding; a crash loses at most this much.
SAVE_INTERVAL_S = 0.5
MAX_MESSAGE_CHARS = 200_000
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed", "stop")


@dataclass(frozen=True)
class Saved:
    """The user's message is committed; the answer that follows belongs to this conversation."""

    conversation_id: int
    user_message_id: int


@dataclass(frozen=True)
class Sourced:
    """The passages the answer is grounded in, numbered from 1 as in its prompt (after ``Started``)."""

    passages: tuple[Passage, ...]
    scope: Scope


@dataclass(frozen=True)
class Cited:
    """After ``Finished``: each ``[n]`` the answer cites, checked against its passage; the answer's id if saved."""

    citations: tuple[Citation, ...]
    passages: tuple[Passage, ...]
    message_id: int | None


# C0 control characters and DEL, except tab, newline and carriage return: never typed text, and some
# (ESC) rewrite a terminal that later prints the message.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_user_text(text: Any, name: str = "message") -> str:
    """Refuse empty, oversized or control-character-laden messages before any model work."""
    from chatcore.core.errors import ParameterError

    if not isinstance(text, str):
        raise ParameterError(name, f"the {name} must be text")
    if not text.strip():
        raise ParameterError(name, f"the {name} is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ParameterError(name, f"the {name} is too long ({len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,})")
    if "\x00" in text:
        raise ParameterError(name, f"the {name} contains a NUL character")
    control = _CONTROL.search(text)
    if control:
        raise ParameterError(name, f"the {name} contains the control character U+{ord(control.group()):04X} "
                                   f"at position {control.start()}; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParameterError(name, f"the {name} is not valid Unicode (it contains a lone surrogate)") from None
    return text


def saved_model(conversation: dict[str, Any]) -> str | None:
    """The model spec a saved conversation's latest answer was asked of (``None``: the server's default).

    Only answers asked of a chosen model record one (``params.model_spec``): older answers, and those of
    the CLI and the API, continue with the default, as they always did.
    """
    for message in reversed(conversation.get("messages") or []):
        if message["role"] == "assistant":
            return (message.get("params") or {}).get("model_spec")
    return None


class ChatService:
    """Runs one exchange at a time per call: saves the question, streams the answer, saves it as it grows."""

    def __init__(self, backend: Callable[[], Backend], store: Any | None, library: Any | None = None, *,
                 lease: Callable[[str | None], ContextManager[Backend]] | None = None) -> None:
        self._backend = backend  # a callable, so the UI can start before the model finishes loading
        self.store = store
        self.library = library  # a services.library.Library: answers from the user's documents when scoped
        # ``ModelManager.lease``: the backend for a model spec, kept loaded while its answer streams. Without
        # one, ``backend`` answers every question and a ``model`` asked for is refused.
        self._lease = lease

    def _backend_for(self, model: str | None, chosen: bool) -> ContextManager[Backend]:
        """The backend for ``model`` (``None``: the default) held for the answer; ``chosen``: the caller asked
        for it, rather than it being the one a saved conversation was answered by."""
        if self._lease is not None:
            return self._lease(model)
        if chosen and model is not None:
            from chatcore.core.errors import ParameterError

            raise ParameterError("model", f"this service answers from one model only; {model!r} cannot be chosen")
        return contextlib.nullcontext(self._backend())

    def ask(
        self,
        prompt: str,
        params: GenerationParams,
        *,
        conversation_id: int | None = None,
        history: Sequence[Message] = (),
        system: str | None = None,
        owner: str = "local",
        source: str = "cli",
        save: bool = True,
        cancel: threading.Event | None = None,
        scope: Scope | None = None,
        passages: int = 5,
        model: str | None = None,
    ) -> Iterator[Event | Saved | Sourced | Cited]:
        """Answer ``prompt`` in a new or continued conversation, saving both sides unless ``save`` is off.

        ``history`` gives earlier turns of an unsaved chat; a saved one reads them from the store. With a
        ``scope`` (or a continued conversation saved with one) the answer is grounded in the best ``passages``
        of the library: ``Sourced`` follows ``Started``, and ``Cited`` follows ``Finished``. ``model`` is a
        model spec (``default``: the server's); without one a continued conversation keeps the model it was
        answered by. Its backend stays loaded until the answer ends.
        """
        prompt = check_user_text(prompt)
        if system is not None and system.strip():
            check_user_text(system, "system prompt")  # saved with the conversation: the same rules
        conversation = None
        if conversation_id is not None:
            conversation = self.store.get_conversation(owner, conversation_id)
        chosen = model is not None
        if not chosen and conversation is not None:
            model = saved_model(conversation)
        with self._backend_for(model, chosen) as backend:
            yield from self._ask(backend, model, prompt, params, conversation, history, system, owner, source, save,
                                 cancel, scope, passages)

    def _ask(self, backend: Backend, model: str | None, prompt: str, params: GenerationParams,
             conversation: dict[str, Any] | None, history: Sequence[Message], system: str | None, owner: str,
             source: str, save: bool, cancel: threading.Event | None, scope: Scope | None, passages: int,
             ) -> Iterator[Event | Saved | Sourced | Cited]:
        """``ask`` with its backend chosen and held."""
        history = list(history)
        conversation_id = conversation["id"] if conversation is not None else None
        if conversation is not None:
            history = [Message(m["role"], m["content"]) for m in conversation["messages"] if m["role"] != "system"]
            if system is None:
                system = conversation.get("system_prompt")
            # Research notes pinned to the conversation join the system prompt, so they count in the window.
            system = with_pinned_notes(self.store, owner, conversation_id, system,
                                       count_tokens=getattr(backend, "count_tokens", None),
                                       budget=backend.context_window - params.max_new_tokens)
        if scope is None and conversation_id is not None and self.library is not None:
            scope = self.library.scope(owner, conversation_id)
        found: list[Passage] = []
        model_system, model_prompt = system, prompt
        if scope is not None:
            if self.library is None:
                raise ChatCoreError("this server has no library to answer from")
            budget = backend.context_window - params.max_new_tokens - _tokens(backend, system or "") - 64
            found = fit_passages(prompt, self.library.search(owner, prompt, scope, k=passages), budget,
                                 getattr(backend, "count_tokens", None))
            if found:  # grounded: the model sees the numbered sources; the history keeps the question as typed
                model_system = GROUNDED_SYSTEM + (f"\n\n{system}" if system else "")
                model_prompt = grounded_question(prompt, found)
        stream = backend.stream([*history, Message("user", model_prompt)], params, system=model_system, cancel=cancel)
        # The backend fits the prompt to its window before its first event: an overflow or a bad
        # value fails here, before anything is written.
        started = next(stream)
        sourced = [Sourced(tuple(found), scope)] if scope is not None else []
        if not save:
            yield started
            yield from sourced
            yield from self._cite(stream, found, scope, None)
            return
        settings = params.to_dict()
        if conversation_id is None:
            conversation_id = self.store.create_conversation(
                owner, title=self.store.auto_title(prompt), model=backend.model_name,
                system_prompt=system, params=settings, source=source,
            )
            if scope is not None:
                self.library.set_scope(owner, conversation_id, scope)
        user_id = self.store.add_message(conversation_id, "user", prompt)
        yield Saved(conversation_id, user_id)
        answer_ids: list[int] = []
        events = self._stream_and_save(backend, itertools.chain([started], stream), params, system, conversation_id,
                                       answer_ids, model)
        yield started
        next(events)  # the Started just yielded: the Sourced event goes between it and the text
        yield from sourced
        yield from self._cite(events, found, scope, answer_ids)

    def _cite(self, events: Iterator[Event], passages: list[Passage], scope: Scope | None,
              answer_ids: list[int] | None) -> Iterator[Event | Cited]:
        """Pass the answer through; after ``Finished``, check its citations and keep them with the answer."""
        for event in events:
            yield event
            if isinstance(event, Finished) and scope is not None:
                citations = check_citations(event.text, passages)
                message_id = answer_ids[0] if answer_ids else None
                if message_id is not None and passages:
                    from storage.library import save_message_sources

                    save_message_sources(self.store, message_id, source_rows(passages, citations))
                yield Cited(tuple(citations), tuple(passages), message_id)

    def reproduce(
        self, owner: str, message_id: int, *, cancel: threading.Event | None = None
    ) -> Iterator[Event]:
        """Re-run a saved answer with its recorded settings and seed on the same turns; nothing is saved."""
        from chatcore.core.errors import ParameterError

        message = self.store.get_message(owner, message_id)
        if message["role"] != "assistant":
            raise ParameterError("message_id", f"message {message_id} is not an answer; only answers can be re-run")
        conversation = self.store.get_conversation(owner, message["conversation_id"])
        history = [Message(m["role"], m["content"]) for m in conversation["messages"]
                   if m["position"] < message["position"] and m["role"] != "system"]
        recorded = message.get("params") or {}
        params = GenerationParams.create(**{k: recorded.get(k) for k in SAMPLING_KEYS})
        system = recorded["system_prompt"] if "system_prompt" in recorded else conversation.get("system_prompt")
        with self._backend_for(recorded.get("model_spec"), False) as backend:  # the model that answered
            yield from backend.stream(history, params, system=system, cancel=cancel)

    def _stream_and_save(
        self, backend: Backend, events: Iterator[Event], params: GenerationParams, system: str | None,
        conversation_id: int, answer_ids: list[int] | None = None, model: str | None = None,
    ) -> Iterator[Event]:
        """Stream the answer; create its row at the first token, update it throttled, finalize it.

        The answer's message id is appended to ``answer_ids`` once it has one; ``model``, the spec asked for,
        is kept with it (``params.model_spec``) so that the conversation goes on with the same model.
        """
        message_id: int | None = None
        text, last_save, finished = "", 0.0, False
        # The system prompt is a per-answer setting too (it can change mid-conversation): keep it with the answer.
        record = {"model": backend.model_name, "params": {**params.to_dict(), "system_prompt": system}}
        if model is not None:
            record["params"]["model_spec"] = model
        try:
            for event in events:
                if isinstance(event, Started):
                    record["params"] = {**record["params"], "seed": event.seed}
                elif isinstance(event, TextDelta):
                    text += event.text
                    now = time.monotonic()
                    if message_id is None:
                        message_id = self.store.begin_assistant_message(conversation_id, content=text, **record)
                        last_save = now
                    elif now - last_save >= SAVE_INTERVAL_S:
                        self.store.update_message_content(message_id, text)
                        last_save = now
                elif isinstance(event, Finished):
                    if message_id is None:
                        message_id = self.store.begin_assistant_message(conversation_id, content="", **record)
                    if answer_ids is not None:
                        answer_ids.append(message_id)
                    self.store.finish_message(
                        message_id, event.text, finish_reason=event.finish_reason,
                        prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                        ttft_ms=event.ttft_ms, tokens_per_s=event.decode_tok_s,
                        complete=event.finish_reason in ("stop", "length"),
                        params={**record["params"], **event.extra},
                    )
                    finished = True
                yield event
        finally:
            # A consumer that went away, or an error, leaves the partial answer saved and marked incomplete.
            if message_id is not None and not finished:
                self.store.finish_message(message_id, text, finish_reason="cancelled", complete=False)


def _tokens(backend: Backend, text: str) -> int:
    """Tokens in ``text`` by the backend's tokenizer, or a safe over-estimate without one."""
    count = getattr(backend, "count_tokens", None)
    return count(text) if count is not None and text else len(text) // 3

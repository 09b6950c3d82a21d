"""The web page's facade over the services: chat views, answers streamed onto a page, labels.

The Gradio handlers (``chat.py``, ``notes.py``, ``stats.py``) are thin calls into :class:`Workspace`. What
a front end does besides showing things lives in ``chatcore.services.conversations``; this module adds
how the page shows it (``ChatView``, sidebar labels, the pinned line) and the threading a web server
needs to stream an answer. Nothing here imports gradio.

Chat messages are returned as the dicts Gradio's ``Chatbot`` takes (``{"role", "content"}``): the
conversation's saved messages in order, system prompt excluded, so index ``i`` in the chat view is
message ``i`` of the conversation.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from chatcore.core.errors import ParameterError
from chatcore.core.events import Finished, Started, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.services.chat import ChatService, Cited, Saved, Sourced, check_user_text
from chatcore.services.conversations import Conversations, system_prompt
from chatcore.services.library import ALL, Library, Passage, Scope, check_citations
from chatcore.services.models import ModelManager
from chatcore.web.views import (
    COLLECTION_PREFIX,
    RATINGS,
    SOURCES_ALL,
    SOURCES_OFF,
    answer_markdown,
    context_markdown,
    conversation_label,
    grounding_line,
    match_label,
    pinned_line,
    sources_markdown,
    stats_line,
)

SIDEBAR_LIMIT = 200
# At most 25 chat updates a second: the browser re-renders Markdown and LaTeX on each one, and on a
# small CPU that rendering competes with decoding. The last text always arrives with the final view.
STREAM_INTERVAL_S = 0.04
SEARCH_LIMIT = 30


class StopSignal(threading.Event):
    """One browser session's Stop button: set it and the answer in progress ends at the next token.

    Session state is deep-copied when a session starts; a fresh signal per session is the point,
    so the copy is the signal itself.
    """

    def __deepcopy__(self, memo: dict) -> "StopSignal":
        return self


@dataclass
class ChatView:
    """One conversation as the chat shows it: messages, per-answer ratings and the context line."""

    conversation_id: int | None = None
    title: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[str | None] = field(default_factory=list)  # one per assistant message: Like, Dislike or None
    context: str = ""  # Markdown: how much of the window is used, and what was left out
    system_prompt: str | None = None
    pinned: str = ""  # plain text: the notes pinned to this conversation and the tokens they take
    # Grounded answers by chat index: {"message_id", "sources": [message_sources rows, each with its "reason"]}.
    grounded: dict[int, dict[str, Any]] = field(default_factory=dict)

    def last_grounded(self) -> dict[str, Any] | None:
        """The latest grounded answer's message id and sources, or ``None``."""
        return self.grounded[max(self.grounded)] if self.grounded else None


class Workspace(Conversations):
    """The page's operations for one model manager and one store; ``owner`` is passed to each call."""

    def __init__(self, manager: ModelManager, store: Any, *, service: ChatService | None = None,
                 library: Library | None = None, stream_interval: float = STREAM_INTERVAL_S,
                 evaluations: Any = None, arena: Any = None, data: Any = None) -> None:
        self.library = library or Library.from_settings(manager.settings, store)
        if data is None:  # a page alone (tests): its own, over the same store
            from chatcore.services.data import for_server as data_for_server

            data = data_for_server(manager, store)
        self.data = data
        if evaluations is None or arena is None:  # a page alone (tests): its own, over the same store
            from chatcore.services.evaluation import for_server

            built = for_server(manager, store, self.library)
            evaluations, arena = evaluations or built[0], arena or built[1]
        self.evaluations, self.arena = evaluations, arena
        super().__init__(manager, store, service=service or ChatService(manager.get, store, library=self.library,
                                                                        lease=manager.lease))
        if self.service.library is None:  # a service handed in without one answers from this library
            self.service.library = self.library
        self.stream_interval = stream_interval

    # -- the model -----------------------------------------------------------------------------

    def model_status(self, model: str | None = None) -> tuple[str, bool]:
        """The status line of ``model`` (``None``: the default), and whether it is loading (the page polls while
        it is)."""
        status = self.manager.status if model is None else self.manager.status_of(model)
        return str(status), status.loading

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, value) for every cached model, the current one first if it is not cached."""
        from chatcore.engine import sources

        choices = []
        for cached in sources.list_cached(self.manager.settings):
            value = cached.name if cached.name in sources.PACKAGED else str(cached.path)
            choices.append((f"{cached.name} ({cached.parameters / 1e6:.0f}M)", value))
        current = self.manager.settings.model
        if current not in [value for _, value in choices]:
            label = Path(current).name if ("/" in current and Path(current).exists()) else current
            choices.insert(0, (label, current))
        return choices

    @staticmethod
    def device_choices() -> list[str]:
        """The devices this machine has, ``auto`` first (the engine layer asks torch)."""
        from chatcore.engine.device import available_devices

        return available_devices()

    def switch_model(self, model: str | None, device: str | None) -> str:
        """Start loading another model or device in the background; returns the new status line."""
        return str(super().switch_model(model, device))

    # -- the sidebar and the notes list ----------------------------------------------------------

    def conversation_choices(self, owner: str, limit: int = SIDEBAR_LIMIT) -> list[tuple[str, int]]:
        """(label, id) for the most recently updated conversations; branches are marked."""
        rows = self.store.list_conversations(owner, limit=limit)
        return [(conversation_label(row["title"], row.get("parent_conversation_id")), row["id"]) for row in rows]

    def search(self, owner: str, query: str, limit: int = SEARCH_LIMIT) -> list[tuple[str, int]]:
        """(label, id) per matching conversation, best first: ``title — …snippet with «matches»…``."""
        if not query.strip():
            return self.conversation_choices(owner)
        seen: dict[int, str] = {}
        for hit in self.store.search(owner, query, limit=limit):
            if hit["conversation_id"] in seen:
                continue
            title = conversation_label(hit["conversation_title"])
            if hit["message_id"] is None:  # the title itself matched
                label = match_label(hit["snippet"])
            else:
                label = f"{title} — {match_label(hit['snippet'])}"
            seen[hit["conversation_id"]] = label
        return [(label, cid) for cid, label in seen.items()]

    def note_choices(self, owner: str, query: str = "", limit: int = SIDEBAR_LIMIT) -> list[tuple[str, int]]:
        """(label, id) per note, newest first, or per search hit, best first, as ``title — …«match»…``."""
        if not query.strip():
            return [(conversation_label(n["title"]), n["id"]) for n in self.notes(owner, limit=limit)]
        return [(f"{conversation_label(hit['title'])} — {match_label(hit['snippet'])}", hit["id"])
                for hit in self.notes(owner, query, limit=SEARCH_LIMIT)]

    def pin(self, owner: str, note_id: int | None, conversation_id: int | None, pinned: bool = True) -> str:
        """Pin (or unpin) a note to a conversation; returns the conversation's new pinned line."""
        super().pin(owner, note_id, conversation_id, pinned)
        return self.pinned_line(owner, conversation_id)

    def pinned_line(self, owner: str, conversation_id: int | None) -> str:
        """``2 notes pinned · 310 tokens of context`` (the tokens once a model is loaded), or ``""``."""
        return pinned_line(*self.pinned(owner, conversation_id))

    # -- the chat ------------------------------------------------------------------------------

    def open(self, owner: str, conversation_id: int | None) -> ChatView:
        """A saved conversation as the chat shows it, stats under every answer."""
        if conversation_id is None:
            return ChatView()
        conversation = self.store.get_conversation(owner, conversation_id)
        messages, feedback, grounded = [], [], {}
        last_answer = None
        for m in conversation["messages"]:
            if m["role"] == "system":
                continue
            if m["role"] == "assistant":
                sources = self.answer_sources(owner, m["id"], m["content"])
                content = answer_markdown(m["content"], stats_line(m))
                if sources:
                    grounded[len(messages)] = {"message_id": m["id"], "sources": sources}
                    content += "\n\n" + sources_markdown(sources)
                messages.append({"role": "assistant", "content": content})
                feedback.append(RATINGS.get(m.get("rating")))
                last_answer = m
            else:
                messages.append({"role": m["role"], "content": m["content"]})
        context = ""
        if last_answer is not None and last_answer.get("prompt_tokens"):
            used = last_answer["prompt_tokens"] + (last_answer.get("completion_tokens") or 0)
            context = context_markdown(used, self.window())
        return ChatView(conversation_id, conversation["title"] or "", messages, feedback, context,
                        conversation.get("system_prompt"), self.pinned_line(owner, conversation_id), grounded)

    def send(
        self, owner: str, conversation_id: int | None, text: str, params: GenerationParams, *,
        system: str | None = None, cancel: threading.Event | None = None, sources: str | None = None,
        model: str | None = None,
    ) -> Iterator[ChatView]:
        """Ask ``text`` in the conversation (a new one when ``None``), yielding the view as the answer grows.

        ``sources`` is the Sources picker's value (``off``, ``all`` or ``collection:NAME``): it becomes the
        open conversation's scope before the question is asked; ``None`` keeps the scope it has. ``model`` is
        the spec to answer with (``None``: the conversation's own, or the default).
        """
        prior = self.open(owner, conversation_id)
        scope = None
        if sources is not None:
            scope = self.scope_of(sources)
            if conversation_id is not None:
                self.library.set_scope(owner, conversation_id, scope)
        events = _confined(self.service.ask(
            text, params, conversation_id=conversation_id, system=system_prompt(system), owner=owner,
            source="web", cancel=cancel, scope=scope, model=model,
        ), cancel)
        yield from self._stream(owner, prior, text, events)

    def edit(
        self, owner: str, conversation_id: int, index: int, text: str, params: GenerationParams, *,
        system: str | None = None, cancel: threading.Event | None = None, model: str | None = None,
    ) -> Iterator[ChatView]:
        """Re-ask from user message ``index`` with new ``text`` as a new branch; the original stays as it was."""
        conversation, messages = self.chat(owner, conversation_id)
        if not 0 <= index < len(messages) or messages[index]["role"] != "user":
            raise ParameterError("message", "only your own messages can be edited")
        yield from self._branch(owner, conversation, messages, index, text, params, system=system, cancel=cancel,
                                model=model)

    def _branch(
        self, owner: str, conversation: dict[str, Any], messages: list[dict[str, Any]], index: int, text: str,
        params: GenerationParams, *, system: str | None, cancel: threading.Event | None, model: str | None = None,
    ) -> Iterator[ChatView]:
        """Ask ``text`` in place of user message ``index`` (of ``messages``, ``conversation``'s chat view)."""
        conversation_id = conversation["id"]
        check_user_text(text)
        if model is None:  # a branch keeps the model its conversation was answered by
            model = self.conversation_model(owner, conversation_id)
        self.manager.get(model)  # refuse before creating the branch, so no empty branch is left behind
        scope = self.library.scope(owner, conversation_id)  # a branch answers from the same sources
        if index == 0:  # nothing to copy: the branch is a new conversation with the same system prompt
            branch = None
            prior = ChatView()
        else:
            branch = self.store.fork_conversation(owner, conversation_id, messages[index - 1]["id"])
            if scope is not None:
                self.library.set_scope(owner, branch, scope)
            prior = self.open(owner, branch)
        if system is None:
            system = conversation.get("system_prompt") or ""
        events = _confined(self.service.ask(
            text, params, conversation_id=branch, system=system_prompt(system), owner=owner, source="web",
            cancel=cancel, scope=scope, model=model,
        ), cancel)
        yield from self._stream(owner, prior, text, events)

    def retry(
        self, owner: str, conversation_id: int, params: GenerationParams, *,
        system: str | None = None, cancel: threading.Event | None = None, model: str | None = None,
    ) -> Iterator[ChatView]:
        """Answer the last question again, as a new branch (the earlier answer is kept in the original)."""
        conversation, messages = self.chat(owner, conversation_id)
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            raise ParameterError("message", "there is no question to answer again")
        yield from self._branch(owner, conversation, messages, last_user, messages[last_user]["content"], params,
                                system=system, cancel=cancel, model=model)

    def rerun(self, owner: str, conversation_id: int | None, index: int | None) -> tuple[str, bool]:
        """Answer ``index`` run again with its recorded settings and seed (nothing saved): the text, and
        whether it is identical to the saved answer."""
        answer = self.answer(owner, conversation_id, index, "re-run")
        self.manager.get((answer.get("params") or {}).get("model_spec"))  # the model that answered it
        cancel = threading.Event()
        text = ""
        for event in _confined(self.service.reproduce(owner, answer["id"], cancel=cancel), cancel):
            if isinstance(event, Finished):
                text = event.text
        return text, text == answer["content"]

    # -- the library ---------------------------------------------------------------------------

    def add_uploads(self, owner: str, paths: list[str], collection: str) -> tuple[int, list[Any]]:
        """Add uploaded files (temporary paths) under their base names and start indexing them in the background.

        Only the last part of a path names the document (Gradio keeps an upload's own name there): an upload's
        folders are the server's, never the user's. A file that cannot be read is refused alone, with the reason.
        """
        if not paths:
            raise ParameterError("files", "choose one or more files to add")
        collection = (collection or "").strip() or "default"
        job_id, outcomes = self.library.add_paths(owner, paths, collection)
        self.library.start_job(owner, job_id)
        return job_id, outcomes

    def collection_names(self, owner: str) -> list[str]:
        return [c["name"] for c in self.library.collections(owner)]

    @staticmethod
    def scope_of(value: str | None) -> Scope | None:
        """The scope a Sources picker value stands for (``None`` for Off)."""
        if not value or value == SOURCES_OFF:
            return None
        if value == SOURCES_ALL:
            return ALL
        if value.startswith(COLLECTION_PREFIX) and value[len(COLLECTION_PREFIX):]:
            return Scope(collections=(value[len(COLLECTION_PREFIX):],))
        raise ParameterError("sources", f"unknown sources {value!r}: choose Off, Whole library or a collection")

    def set_sources(self, owner: str, conversation_id: int | None, value: str | None) -> None:
        """Save the picker's choice as the open conversation's scope (with none open, it waits for the next message)."""
        scope = self.scope_of(value)
        if conversation_id is not None:
            self.library.set_scope(owner, conversation_id, scope)
        elif scope is not None:
            self.library.retriever.resolve(owner, scope)  # an unknown collection is refused now, not at Send

    def answer_sources(self, owner: str, message_id: int, answer: str | None = None) -> list[dict[str, Any]]:
        """An answer's numbered sources (empty for another owner's), each unverified one with its reason."""
        from storage.library import message_sources

        rows = message_sources(self.store, owner, message_id)
        if rows and answer is not None:
            # The reason is not stored: checking the same answer against the same passages gives it again.
            passages = [Passage(r["chunk_id"] or 0, r["document_id"] or 0, r["filename"], None, r["page"],
                                r["char_start"], r["char_end"], r["text"]) for r in rows]
            reasons = {c.n: c.reason for c in check_citations(answer, passages)}
            for row in rows:
                row["reason"] = reasons.get(row["n"], "")
        return rows

    def source(self, owner: str, message_id: int | None, n: int | None) -> dict[str, Any]:
        """Source ``[n]`` of an answer; another owner's answer is ``NotFound`` like one without sources."""
        from storage.errors import NotFound

        sources = {s["n"]: s for s in self.answer_sources(owner, message_id)} if message_id is not None else {}
        if n is None or int(n) not in sources:
            raise NotFound(f"answer {message_id} has no source [{n}]")
        return sources[int(n)]

    def evidence(self, owner: str, question: str, value: str | None, k: int = 5) -> list[Any]:
        """Evidence mode for ``question`` within the picker's scope: ranked passages, nothing generated or saved."""
        check_user_text(question, "question")
        scope = self.scope_of(value)
        if scope is None:
            raise ParameterError("sources", "choose Sources (the whole library or a collection) to see evidence")
        return self.library.evidence(owner, question, scope, k=k)

    # -- internals -----------------------------------------------------------------------------

    def _stream(self, owner: str, prior: ChatView, text: str, events: Iterator[Any]) -> Iterator[ChatView]:
        base = [*prior.messages, {"role": "user", "content": text}]
        view = ChatView(prior.conversation_id, prior.title, base, list(prior.feedback), prior.context,
                        prior.system_prompt)
        started: Started | None = None
        answer, shown_at, grounding = "", 0.0, ""
        for event in events:
            if isinstance(event, Saved):
                view.conversation_id = event.conversation_id
                yield view
            elif isinstance(event, Started):
                started = event
                view.context = context_markdown(event.prompt_tokens, event.context_window, event.dropped_messages)
            elif isinstance(event, Sourced):
                grounding = grounding_line(len(event.passages), event.scope)
                view.context = " · ".join(filter(None, [view.context, grounding]))
                yield view
            elif isinstance(event, TextDelta):
                answer += event.text
                now = time.monotonic()
                if now - shown_at >= self.stream_interval:
                    view.messages = [*base, {"role": "assistant", "content": answer_markdown(answer, "")}]
                    shown_at = now
                    yield view
            elif isinstance(event, Finished):
                final = self.open(owner, view.conversation_id)
                if started is not None:
                    final.context = context_markdown(
                        event.prompt_tokens + event.completion_tokens, started.context_window, event.dropped_messages
                    )
                final.context = " · ".join(filter(None, [final.context, grounding]))
                view = final
                yield view
            elif isinstance(event, Cited):  # its sources are saved now: show them under the answer
                final = self.open(owner, view.conversation_id)
                final.context = view.context
                view = final
                yield view


_END = object()


def _confined(events: Iterator[Any], cancel: threading.Event | None) -> Iterator[Any]:
    """Run ``events`` start to end on one thread of its own and hand its items over.

    The decoder holds thread-local torch state (inference mode) across its yields, while a web server
    resumes a generator on whichever worker thread is free; a resumed step on another thread fails
    ("Inference tensors cannot be saved for backward"). Closing this iterator early sets ``cancel``,
    so the answer stops at the next token and is saved as stopped, with its stats.
    """
    handoff: queue.Queue = queue.Queue()

    def pump() -> None:
        try:
            for item in events:
                handoff.put((item, None))
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put((_END, exc))
        else:
            handoff.put((_END, None))

    worker = threading.Thread(target=pump, name="chatcore-answer", daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        if worker.is_alive() and cancel is not None:
            cancel.set()

"""What the web app does, without the web: conversations, streaming answers, branches, ratings, models.

The Gradio handlers in ``app.py`` are one-line calls into :class:`Workspace`; everything here is plain
Python over ``ChatService``, the ``Store`` and the ``ModelManager``, so it is tested without a browser
and the CLI or an HTTP API can share it. Nothing here imports gradio.

Chat messages are returned as the dicts Gradio's ``Chatbot`` takes (``{"role", "content"}``): the
conversation's saved messages in order, system prompt excluded, so index ``i`` in the chat view is
message ``i`` of the conversation.
"""

from __future__ import annotations

import html
import json
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from chatcore.core.errors import ParameterError
from chatcore.core.events import Finished, Started, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.services.chat import ChatService, Saved, check_user_text
from chatcore.services.models import ModelManager

SIDEBAR_LIMIT = 200
# At most 25 chat updates a second: the browser re-renders Markdown and LaTeX on each one, and on a
# small CPU that rendering competes with decoding. The last text always arrives with the final view.
STREAM_INTERVAL_S = 0.04
SEARCH_LIMIT = 30
# Search hits mark matches with these in plain-text labels (radio labels are never HTML).
MATCH_OPEN, MATCH_CLOSE = "«", "»"

FINISH_WORDS = {"stop": "", "length": "hit the token limit", "cancelled": "stopped", "error": "error"}
RATINGS = {1: "Like", -1: "Dislike"}


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


def model_label(model: str) -> str:
    """A model as shown under answers, on notes and in the stats: the last part of a path or Hugging Face id."""
    return Path(model).name if "/" in model else model


def stats_line(message: dict[str, Any]) -> str:
    """``model · 42 tokens · first token 120 ms · 31.5 tok/s · seed 7``: the facts under an answer."""
    parts = []
    if message.get("model"):
        parts.append(model_label(message["model"]))
    if message.get("completion_tokens") is not None:
        parts.append(f"{message['completion_tokens']:,} tokens")
    if message.get("ttft_ms") is not None:
        parts.append(f"first token {message['ttft_ms']:,.0f} ms")
    if message.get("tokens_per_s") is not None:
        parts.append(f"{message['tokens_per_s']:.1f} tok/s")
    seed = (message.get("params") or {}).get("seed")
    if seed is not None:
        parts.append(f"seed {seed}")
    reason = FINISH_WORDS.get(message.get("finish_reason") or "", "")
    if reason:
        parts.append(reason)
    elif message.get("finish_reason") is None and not message.get("complete", True):
        parts.append("interrupted")
    return " · ".join(parts)


def answer_markdown(content: str, stats: str) -> str:
    """An answer for display: any code fence left open by a stopped answer closed, then its stats line."""
    if content.count("```") % 2:
        content += "\n```"
    if not stats:
        return content
    # The stats are our own text, escaped so that a model name cannot inject markup.
    return f"{content}\n\n<sub>{html.escape(stats)}</sub>"


def context_markdown(used: int | None, window: int | None, dropped: int = 0) -> str:
    """``Context: 1,234 / 8,192 tokens (15%)`` plus a notice when old turns were left out."""
    if not used or not window:
        return ""
    line = f"Context: {used:,} / {window:,} tokens ({100 * used / window:.0f}%)"
    if dropped:
        line += (f" — ⚠️ the {dropped} oldest message{'s' if dropped != 1 else ''} did not fit the model's "
                 "window and were left out of this answer")
    return line


def _match_label(snippet: str) -> str:
    from storage import HIGHLIGHT_END, HIGHLIGHT_START

    text = " ".join(snippet.split())
    return text.replace(HIGHLIGHT_START, MATCH_OPEN).replace(HIGHLIGHT_END, MATCH_CLOSE)


class Workspace:
    """The web app's operations for one model manager and one store; ``owner`` is passed to each call."""

    def __init__(self, manager: ModelManager, store: Any, *, service: ChatService | None = None,
                 stream_interval: float = STREAM_INTERVAL_S) -> None:
        self.manager = manager
        self.store = store
        self.service = service or ChatService(manager.get, store)
        self.stream_interval = stream_interval

    # -- the model -----------------------------------------------------------------------------

    def model_status(self) -> tuple[str, bool]:
        """The status line, and whether a load is in progress (the page polls while it is)."""
        status = self.manager.status
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
        """The devices this machine has, ``auto`` first."""
        import torch

        devices = ["auto", "cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            devices.append("mps")
        return devices

    def switch_model(self, model: str | None, device: str | None) -> str:
        """Start loading another model or device in the background; returns the new status line."""
        current = self.manager.settings
        if self.manager.ready and (model or current.model) == current.model and (device or current.device) == current.device:
            return str(self.manager.status)
        self.manager.start(model=model or None, device=device or None)
        return str(self.manager.status)

    # -- the sidebar ---------------------------------------------------------------------------

    def conversation_choices(self, owner: str, limit: int = SIDEBAR_LIMIT) -> list[tuple[str, int]]:
        """(label, id) for the most recently updated conversations; branches are marked ⑂."""
        rows = self.store.list_conversations(owner, limit=limit)
        return [(_label(row["title"], row.get("parent_conversation_id")), row["id"]) for row in rows]

    def search(self, owner: str, query: str, limit: int = SEARCH_LIMIT) -> list[tuple[str, int]]:
        """(label, id) per matching conversation, best first: ``title — …snippet with «matches»…``."""
        if not query.strip():
            return self.conversation_choices(owner)
        seen: dict[int, str] = {}
        for hit in self.store.search(owner, query, limit=limit):
            if hit["conversation_id"] in seen:
                continue
            title = _label(hit["conversation_title"], None)
            if hit["message_id"] is None:  # the title itself matched
                label = _match_label(hit["snippet"])
            else:
                label = f"{title} — {_match_label(hit['snippet'])}"
            seen[hit["conversation_id"]] = label
        return [(label, cid) for cid, label in seen.items()]

    def rename(self, owner: str, conversation_id: int | None, title: str) -> None:
        if conversation_id is None:
            raise ParameterError("title", "open a conversation first")
        self.store.rename_conversation(owner, conversation_id, title)

    def delete(self, owner: str, conversation_id: int | None) -> str:
        """Soft-delete; returns the title for the undo notice."""
        if conversation_id is None:
            raise ParameterError("conversation", "open a conversation first")
        title = self.store.get_conversation(owner, conversation_id)["title"] or "Untitled"
        self.store.delete_conversation(owner, conversation_id)
        return title

    def restore(self, owner: str, conversation_id: int) -> None:
        self.store.restore_conversation(owner, conversation_id)

    def export(self, owner: str, conversation_id: int | None, fmt: str, directory: Path) -> Path:
        """Write the conversation as Markdown or JSON into ``directory``; returns the file."""
        if conversation_id is None:
            raise ParameterError("conversation", "open a conversation first")
        title = self.store.get_conversation(owner, conversation_id)["title"] or "conversation"
        stem = re.sub(r"[^\w-]+", "-", title).strip("-")[:50] or "conversation"
        directory.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            path = directory / f"{stem}-{conversation_id}.json"
            path.write_text(json.dumps(self.store.export_json(owner, [conversation_id]), indent=2, ensure_ascii=False))
        elif fmt == "markdown":
            path = directory / f"{stem}-{conversation_id}.md"
            path.write_text(self.store.export_markdown(owner, [conversation_id]))
        else:
            raise ParameterError("format", f"unknown export format {fmt!r}; use markdown or json")
        return path

    # -- the chat ------------------------------------------------------------------------------

    def open(self, owner: str, conversation_id: int | None) -> ChatView:
        """A saved conversation as the chat shows it, stats under every answer."""
        if conversation_id is None:
            return ChatView()
        conversation = self.store.get_conversation(owner, conversation_id)
        messages, feedback = [], []
        last_answer = None
        for m in conversation["messages"]:
            if m["role"] == "system":
                continue
            if m["role"] == "assistant":
                messages.append({"role": "assistant", "content": answer_markdown(m["content"], stats_line(m))})
                feedback.append(RATINGS.get(m.get("rating")))
                last_answer = m
            else:
                messages.append({"role": m["role"], "content": m["content"]})
        context = ""
        if last_answer is not None and last_answer.get("prompt_tokens"):
            used = last_answer["prompt_tokens"] + (last_answer.get("completion_tokens") or 0)
            context = context_markdown(used, self._window())
        return ChatView(conversation_id, conversation["title"] or "", messages, feedback, context,
                        conversation.get("system_prompt"), self.pinned_line(owner, conversation_id))

    def params(self, **values: Any) -> GenerationParams:
        """Validated sampling parameters from the settings panel; a blank seed means a fresh one."""
        if isinstance(values.get("seed"), str) and not values["seed"].strip():
            values["seed"] = None
        window = self._window()
        return GenerationParams.create(max_new_tokens_limit=window - 1 if window else None, **values)

    def check_send(self, text: str, **param_values: Any) -> None:
        """Refuse a message before it is shown as sent: bad text, bad settings or no model yet."""
        check_user_text(text)
        self.params(**param_values)
        self.manager.get()

    def send(
        self, owner: str, conversation_id: int | None, text: str, params: GenerationParams, *,
        system: str | None = None, cancel: threading.Event | None = None,
    ) -> Iterator[ChatView]:
        """Ask ``text`` in the conversation (a new one when ``None``), yielding the view as the answer grows."""
        prior = self.open(owner, conversation_id)
        events = _confined(self.service.ask(
            text, params, conversation_id=conversation_id, system=_system(system), owner=owner,
            source="web", cancel=cancel,
        ), cancel)
        yield from self._stream(owner, prior, text, events)

    def edit(
        self, owner: str, conversation_id: int, index: int, text: str, params: GenerationParams, *,
        system: str | None = None, cancel: threading.Event | None = None,
    ) -> Iterator[ChatView]:
        """Re-ask from user message ``index`` with new ``text`` as a new branch; the original stays as it was."""
        conversation, messages = self._chat(owner, conversation_id)
        if not 0 <= index < len(messages) or messages[index]["role"] != "user":
            raise ParameterError("message", "only your own messages can be edited")
        yield from self._branch(owner, conversation, messages, index, text, params, system=system, cancel=cancel)

    def _branch(
        self, owner: str, conversation: dict[str, Any], messages: list[dict[str, Any]], index: int, text: str,
        params: GenerationParams, *, system: str | None, cancel: threading.Event | None,
    ) -> Iterator[ChatView]:
        """Ask ``text`` in place of user message ``index`` (of ``messages``, ``conversation``'s chat view)."""
        conversation_id = conversation["id"]
        check_user_text(text)
        self.manager.get()  # refuse before creating the branch, so no empty branch is left behind
        if index == 0:  # nothing to copy: the branch is a new conversation with the same system prompt
            branch = None
            prior = ChatView()
        else:
            branch = self.store.fork_conversation(owner, conversation_id, messages[index - 1]["id"])
            prior = self.open(owner, branch)
        if system is None:
            system = conversation.get("system_prompt") or ""
        events = _confined(self.service.ask(
            text, params, conversation_id=branch, system=_system(system), owner=owner, source="web", cancel=cancel,
        ), cancel)
        yield from self._stream(owner, prior, text, events)

    def retry(
        self, owner: str, conversation_id: int, params: GenerationParams, *,
        system: str | None = None, cancel: threading.Event | None = None,
    ) -> Iterator[ChatView]:
        """Answer the last question again, as a new branch (the earlier answer is kept in the original)."""
        conversation, messages = self._chat(owner, conversation_id)
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            raise ParameterError("message", "there is no question to answer again")
        yield from self._branch(owner, conversation, messages, last_user, messages[last_user]["content"], params,
                                system=system, cancel=cancel)

    def rate(self, owner: str, conversation_id: int | None, index: int, liked: bool | str | None) -> None:
        """Save a thumbs up (``True``), down (``False``) or clear it (anything else) on answer ``index``;
        a comment already given stays."""
        answer = self.answer(owner, conversation_id, index, "rating")
        rating = 1 if liked is True else -1 if liked is False else 0
        self.store.rate_message(owner, answer["id"], rating, answer.get("rating_comment"))

    def comment(self, owner: str, conversation_id: int | None, index: int, comment: str) -> None:
        """Say why answer ``index`` was rated as it was (blank clears the comment); the rating stays."""
        answer = self.answer(owner, conversation_id, index, "comment")
        comment = check_user_text(comment, "comment") if comment.strip() else None
        self.store.rate_message(owner, answer["id"], answer.get("rating") or 0, comment)

    def answer(self, owner: str, conversation_id: int | None, index: int | None, what: str = "answer"
               ) -> dict[str, Any]:
        """Answer ``index`` of the chat view (a message of the conversation), or a ``ParameterError``."""
        if conversation_id is None or index is None:
            raise ParameterError(what, "click a saved answer in the chat first")
        _, messages = self._chat(owner, conversation_id)
        if not 0 <= index < len(messages) or messages[index]["role"] != "assistant":
            raise ParameterError(what, "only answers can be rated, saved as notes or re-run")
        return messages[index]

    # -- research: templates, notes, re-runs and stats -----------------------------------------

    def templates(self) -> list[Any]:
        """Built-in and the user's prompt templates, by name (re-read each time, so new files show up)."""
        return self._library().templates

    def template(self, name: str) -> Any:
        """One template; an unknown name raises ``TemplateError`` listing the others."""
        return self._library().get(name)

    def _library(self) -> Any:
        from chatcore.services.templates import PromptLibrary, user_prompts_dir

        return PromptLibrary.load(user_prompts_dir(self.manager.settings.home))

    def use_template(self, name: str, values: dict[str, str]) -> Any:
        """The template filled in (``RenderedPrompt``: text, system, settings); blank optional values
        take their defaults, and missing required ones raise ``TemplateError`` naming them."""
        template = self.template(name)
        given = {k: v for k, v in values.items() if k in template.variables and v.strip()}
        return template.render(given)

    def save_note(self, owner: str, conversation_id: int | None, index: int | None, text: str, *,
                  title: str = "", tags: str = "") -> int:
        """Save answer ``index`` (or ``text``, the part of it kept) as a note; returns its id."""
        from chatcore.services.notes import save_answer_as_note

        answer = self.answer(owner, conversation_id, index, "note")
        return save_answer_as_note(self.store, owner, answer["id"], selection=text, title=title or None,
                                   tags=_tags(tags))

    def note_choices(self, owner: str, query: str = "", limit: int = SIDEBAR_LIMIT) -> list[tuple[str, int]]:
        """(label, id) per note, newest first, or per search hit, best first, as ``title — …«match»…``."""
        from storage import notes

        if not query.strip():
            return [(_label(n["title"], None), n["id"]) for n in notes.list_notes(self.store, owner, limit=limit)]
        return [(f"{_label(hit['title'], None)} — {_match_label(hit['snippet'])}", hit["id"])
                for hit in notes.search_notes(self.store, owner, query, limit=SEARCH_LIMIT)]

    def note(self, owner: str, note_id: int | None) -> dict[str, Any]:
        from storage import notes

        if note_id is None:
            raise ParameterError("note", "choose a note first")
        return notes.get_note(self.store, owner, note_id)

    def update_note(self, owner: str, note_id: int | None, *, title: str, body: str, tags: str) -> None:
        from storage import notes

        self.note(owner, note_id)
        notes.update_note(self.store, owner, note_id, title=title, body=body, tags=_tags(tags))

    def delete_note(self, owner: str, note_id: int | None) -> str:
        """Delete a note for good; returns its title."""
        from storage import notes

        title = self.note(owner, note_id)["title"]
        notes.delete_note(self.store, owner, note_id)
        return title

    def export_notes(self, owner: str, directory: Path) -> Path:
        """Every note of the owner as one Markdown document in a fresh folder under ``directory``."""
        import tempfile

        from chatcore.services.notes import export_notes

        directory.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="notes-", dir=directory))  # one per export: users never share
        return export_notes(self.store, owner, folder / "chatcore-notes.md", single_file=True)[0]

    def note_source(self, owner: str, note_id: int | None) -> int:
        """The conversation a note was saved from."""
        from chatcore.services.notes import note_source

        if note_id is None:
            raise ParameterError("note", "choose a note first")
        return note_source(self.store, owner, note_id)[0]

    def pin(self, owner: str, note_id: int | None, conversation_id: int | None, pinned: bool = True) -> str:
        """Pin (or unpin) a note to a conversation; returns the conversation's new pinned line."""
        from storage import notes

        if note_id is None:
            raise ParameterError("note", "choose a note first")
        if conversation_id is None:
            raise ParameterError("conversation", "open a saved conversation in the chat first")
        (notes.pin_note if pinned else notes.unpin_note)(self.store, owner, note_id, conversation_id)
        return self.pinned_line(owner, conversation_id)

    def pinned_line(self, owner: str, conversation_id: int | None) -> str:
        """``📌 2 notes pinned · 310 tokens of context`` (the tokens once a model is loaded), or ``""``."""
        from chatcore.services.notes import context_tokens, pinned_context

        if conversation_id is None:
            return ""
        text, ids = pinned_context(self.store, owner, conversation_id)  # one read for the count and the tokens
        if not ids:
            return ""
        line = f"📌 {len(ids)} note{'s' if len(ids) != 1 else ''} pinned"
        try:
            count_tokens = self.manager.get().count_tokens
        except Exception:  # loading, failed, or a backend that cannot count (a remote server)
            return line
        return f"{line} · {context_tokens(text, count_tokens):,} tokens of context"

    def rerun(self, owner: str, conversation_id: int | None, index: int | None) -> tuple[str, bool]:
        """Answer ``index`` run again with its recorded settings and seed (nothing saved): the text, and
        whether it is identical to the saved answer."""
        answer = self.answer(owner, conversation_id, index, "re-run")
        self.manager.get()
        cancel = threading.Event()
        text = ""
        for event in _confined(self.service.reproduce(owner, answer["id"], cancel=cancel), cancel):
            if isinstance(event, Finished):
                text = event.text
        return text, text == answer["content"]

    def stats(self, owner: str, utc_offset_minutes: int = 0) -> dict[str, list[dict[str, Any]]]:
        """Messages per day and role, ratings per day, and decoding speed per model (``storage.stats``)."""
        from storage import stats

        return {
            "messages": stats.messages_per_day(self.store, owner, utc_offset_minutes=utc_offset_minutes),
            "ratings": stats.ratings_per_day(self.store, owner, utc_offset_minutes=utc_offset_minutes),
            "speed": stats.speed_by_model(self.store, owner),
        }

    # -- internals -----------------------------------------------------------------------------

    def _stream(self, owner: str, prior: ChatView, text: str, events: Iterator[Any]) -> Iterator[ChatView]:
        base = [*prior.messages, {"role": "user", "content": text}]
        view = ChatView(prior.conversation_id, prior.title, base, list(prior.feedback), prior.context,
                        prior.system_prompt)
        started: Started | None = None
        answer, shown_at = "", 0.0
        for event in events:
            if isinstance(event, Saved):
                view.conversation_id = event.conversation_id
                yield view
            elif isinstance(event, Started):
                started = event
                view.context = context_markdown(event.prompt_tokens, event.context_window, event.dropped_messages)
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
                view = final
                yield view

    def _chat(self, owner: str, conversation_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The conversation and its messages as the chat view indexes them (system prompt excluded)."""
        conversation = self.store.get_conversation(owner, conversation_id)
        return conversation, [m for m in conversation["messages"] if m["role"] != "system"]

    def _window(self) -> int | None:
        try:
            return self.manager.get().context_window
        except Exception:  # still loading or failed: the window is unknown for now
            return None


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


def _label(title: str | None, parent: int | None) -> str:
    title = " ".join((title or "Untitled").split())
    return f"⑂ {title}" if parent else title


def _tags(text: str) -> list[str]:
    """``"stats, methods"`` → ``["stats", "methods"]``."""
    return [tag.strip() for tag in (text or "").split(",") if tag.strip()]


def _system(system: str | None) -> str | None:
    """The settings panel's system prompt: blank text means none (not "keep the conversation's")."""
    if system is None:
        return None
    return system.strip()


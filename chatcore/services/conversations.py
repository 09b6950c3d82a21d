"""Conversations, answers and notes for one user at a time: what a front end does besides streaming.

Plain Python over the ``Store`` and the ``ModelManager``: rename, delete, export, rate, notes and pins,
templates, settings checks and stats. No gradio and no Markdown here: the web layer's ``Workspace``
adds how things are shown, and the streaming of answers onto a page.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from chatcore.core.errors import ParameterError
from chatcore.core.params import GenerationParams
from chatcore.core.settings import join_model_spec, split_model_spec
from chatcore.services.chat import ChatService, check_user_text, saved_model
from chatcore.services.models import ModelManager, ModelStatus


class Conversations:
    """One model manager and one store; ``owner`` is passed to each call, and checked by the store."""

    def __init__(self, manager: ModelManager, store: Any, *, service: ChatService | None = None) -> None:
        self.manager = manager
        self.store = store
        self.service = service or ChatService(manager.get, store, lease=manager.lease)

    # -- the model and the settings ------------------------------------------------------------

    def switch_model(self, model: str | None, device: str | None) -> ModelStatus:
        """Change the server's default model or device, for everyone, in the background (nothing when it is
        already loaded). One user choosing a model for themselves is ``choose_model``."""
        current = self.manager.settings
        same = (model or current.model) == current.model and (device or current.device) == current.device
        if not (self.manager.ready and same):
            self.manager.start(model=model or None, device=device or None)
        return self.manager.status

    def model_spec(self, model: str | None, device: str | None = None) -> str:
        """The spec a model picker and a device picker stand for: ``default`` for the server's own
        configuration, else ``NAME`` or ``NAME@device=cuda,...`` (a typed spec keeps its options)."""
        current = self.manager.settings
        name, options = split_model_spec((model or "").strip() or "default")
        if name == current.model:
            name = "default"
        if device and device != current.device and "device" not in options:
            options["device"] = device
        if name == "default" and all(getattr(current, key) == value for key, value in options.items()):
            return "default"
        return join_model_spec(name, options)

    def picker_values(self, spec: str | None) -> tuple[str, str]:
        """``model_spec``'s inverse: the model picker's value and the device picker's for ``spec``."""
        current = self.manager.settings
        name, options = split_model_spec(spec or "default")
        device = options.pop("device", current.device)
        return join_model_spec(current.model if name == "default" else name, options), device

    def choose_model(self, owner: str, model: str | None, device: str | None = None) -> tuple[str, ModelStatus]:
        """One user's choice of model (theirs alone: others keep theirs): loads it in the background and
        remembers it as where the user's next session starts. Returns its spec and status."""
        from storage.users import set_default_model

        spec = self.model_spec(model, device)
        status = self.manager.load(spec)
        set_default_model(self.store, owner, None if spec == "default" else spec)
        return spec, status

    def user_model(self, owner: str) -> str:
        """The model the user chose last (``default`` until they choose one)."""
        from storage.users import default_model

        return default_model(self.store, owner) or "default"

    def conversation_model(self, owner: str, conversation_id: int | None) -> str | None:
        """The model a saved conversation's latest answer was asked of, or ``None`` if it did not say."""
        if conversation_id is None:
            return None
        return saved_model(self.store.get_conversation(owner, conversation_id))

    def window(self, model: str | None = None) -> int | None:
        """The model's context window, or ``None`` while it loads or after it failed."""
        try:
            return self.manager.get(model).context_window
        except Exception:  # still loading or failed: the window is unknown for now
            return None

    def params(self, model: str | None = None, **values: Any) -> GenerationParams:
        """Validated sampling parameters from a settings form; a blank seed means a fresh one."""
        if isinstance(values.get("seed"), str) and not values["seed"].strip():
            values["seed"] = None
        window = self.window(model)
        return GenerationParams.create(max_new_tokens_limit=window - 1 if window else None, **values)

    def check_send(self, text: str, model: str | None = None, **param_values: Any) -> None:
        """Refuse a message before it is shown as sent: bad text, bad settings or no model yet (which starts
        loading it)."""
        check_user_text(text)
        self.params(model, **param_values)
        self.manager.get(model)

    # -- conversations -------------------------------------------------------------------------

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

    def chat(self, owner: str, conversation_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The conversation and its messages as a chat view indexes them (system prompt excluded)."""
        conversation = self.store.get_conversation(owner, conversation_id)
        return conversation, [m for m in conversation["messages"] if m["role"] != "system"]

    # -- answers -------------------------------------------------------------------------------

    def answer(self, owner: str, conversation_id: int | None, index: int | None, what: str = "answer"
               ) -> dict[str, Any]:
        """Answer ``index`` of the chat view (a message of the conversation), or a ``ParameterError``."""
        if conversation_id is None or index is None:
            raise ParameterError(what, "click a saved answer in the chat first")
        _, messages = self.chat(owner, conversation_id)
        if not 0 <= index < len(messages) or messages[index]["role"] != "assistant":
            raise ParameterError(what, "only answers can be rated, saved as notes or re-run")
        return messages[index]

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

    # -- templates -----------------------------------------------------------------------------

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

    # -- notes ---------------------------------------------------------------------------------

    def save_note(self, owner: str, conversation_id: int | None, index: int | None, text: str, *,
                  title: str = "", tags: str = "") -> int:
        """Save answer ``index`` (or ``text``, the part of it kept) as a note; returns its id."""
        from chatcore.services.notes import save_answer_as_note

        answer = self.answer(owner, conversation_id, index, "note")
        return save_answer_as_note(self.store, owner, answer["id"], selection=text, title=title or None,
                                   tags=split_tags(tags))

    def new_note(self, owner: str, *, title: str, body: str, tags: str) -> int:
        """A note written by hand (no source answer); a blank title is taken from the body. Returns its id."""
        from storage import Store, notes

        if not title.strip() and body.strip():
            title = Store.auto_title(body)
        return notes.add_note(self.store, owner, title=title, body=body, tags=split_tags(tags))

    def notes(self, owner: str, query: str = "", limit: int = 200) -> list[dict[str, Any]]:
        """The owner's notes, newest first, or the search hits for ``query`` (with a ``snippet``), best first."""
        from storage import notes

        if not query.strip():
            return notes.list_notes(self.store, owner, limit=limit)
        return notes.search_notes(self.store, owner, query, limit=limit)

    def note(self, owner: str, note_id: int | None) -> dict[str, Any]:
        from storage import notes

        if note_id is None:
            raise ParameterError("note", "choose a note first")
        return notes.get_note(self.store, owner, note_id)

    def update_note(self, owner: str, note_id: int | None, *, title: str, body: str, tags: str) -> None:
        from storage import notes

        self.note(owner, note_id)
        notes.update_note(self.store, owner, note_id, title=title, body=body, tags=split_tags(tags))

    def delete_note(self, owner: str, note_id: int | None) -> str:
        """Delete a note for good; returns its title."""
        from storage import notes

        title = self.note(owner, note_id)["title"]
        notes.delete_note(self.store, owner, note_id)
        return title

    def export_notes(self, owner: str, directory: Path) -> Path:
        """Every note of the owner as one Markdown document in a fresh folder under ``directory``."""
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

    def pin(self, owner: str, note_id: int | None, conversation_id: int | None, pinned: bool = True) -> None:
        """Pin (or unpin) a note to a conversation."""
        from storage import notes

        if note_id is None:
            raise ParameterError("note", "choose a note first")
        if conversation_id is None:
            raise ParameterError("conversation", "open a saved conversation in the chat first")
        (notes.pin_note if pinned else notes.unpin_note)(self.store, owner, note_id, conversation_id)

    def pinned(self, owner: str, conversation_id: int | None) -> tuple[int, int | None]:
        """How many notes are pinned to a conversation, and the tokens they take (``None`` when unknown)."""
        from chatcore.services.notes import context_tokens, pinned_context

        if conversation_id is None:
            return 0, None
        text, ids = pinned_context(self.store, owner, conversation_id)  # one read for the count and the tokens
        if not ids:
            return 0, None
        try:
            count_tokens = self.manager.get().count_tokens
        except Exception:  # loading, failed, or a backend that cannot count (a remote server)
            return len(ids), None
        return len(ids), context_tokens(text, count_tokens)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self, owner: str, utc_offset_minutes: int = 0) -> dict[str, list[dict[str, Any]]]:
        """Messages per day and role, ratings per day, and decoding speed per model (``storage.stats``)."""
        from storage import stats

        return {
            "messages": stats.messages_per_day(self.store, owner, utc_offset_minutes=utc_offset_minutes),
            "ratings": stats.ratings_per_day(self.store, owner, utc_offset_minutes=utc_offset_minutes),
            "speed": stats.speed_by_model(self.store, owner),
        }


def split_tags(text: str) -> list[str]:
    """``"stats, methods"`` → ``["stats", "methods"]``."""
    return [tag.strip() for tag in (text or "").split(",") if tag.strip()]


def system_prompt(system: str | None) -> str | None:
    """A settings form's system prompt: blank text means none (not "keep the conversation's")."""
    if system is None:
        return None
    return system.strip()

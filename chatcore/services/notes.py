"""Research notes and feedback at the service level: what the web UI and the CLI both call.

Save an answer (or the part of it a user selected) as a note, turn a conversation's pinned
notes into context for the model with its token count, export notes as Markdown files with
YAML front matter, and export rated answers as JSON Lines. No UI code here; storage does the
SQL (``storage.notes``, ``storage.feedback``, ``storage.stats``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from chatcore.core.errors import ContextOverflowError, ParameterError
from storage import Store
from storage import notes as store_notes
from storage.errors import NotFound
from storage.evaluation import battles as arena_battles
from storage.feedback import rated_exchanges

PINNED_HEADING = "Notes pinned to this conversation:"
FILENAME_MAX_CHARS = 80
# Some file systems allow 255 bytes per name; leave room for "-NN.md".
FILENAME_MAX_BYTES = 200
# Device names Windows refuses as file names, with or without an extension.
RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}

CountTokens = Callable[[str], int]


# -- notes from answers --------------------------------------------------------------------------


def save_answer_as_note(
    store: Store,
    owner: str,
    message_id: int,
    *,
    selection: str | None = None,
    title: str | None = None,
    tags: Iterable[str] = (),
) -> int:
    """Save an answer, or ``selection`` (the part of it the user selected), as a note; returns its id.

    The note links back to the answer and copies its model and settings. Without ``title`` the
    note is titled from its first line.
    """
    message = store.get_message(owner, message_id)
    if message["role"] != "assistant":
        raise ParameterError("message_id", f"message {message_id} is not an answer; only answers can be saved as notes")
    body = selection if selection is not None and selection.strip() else message["content"]
    if title is None or not title.strip():
        title = Store.auto_title(body)
    return store_notes.add_note(store, owner, title=title, body=body, tags=tags, source_message_id=message_id)


def save_passage_as_note(
    store: Store,
    owner: str,
    message_id: int,
    n: int,
    *,
    title: str | None = None,
    tags: Iterable[str] = (),
) -> int:
    """Save source ``[n]`` of an answer (its passage) as a note that keeps its file and page; returns its id."""
    from storage.library import message_sources

    sources = {source["n"]: source for source in message_sources(store, owner, message_id)}
    if n not in sources:
        raise ParameterError("n", f"answer {message_id} has no source [{n}]")
    source = sources[n]
    if title is None or not title.strip():
        title = f"{source['filename']}, page {source['page']}: {Store.auto_title(source['text'])}"
    return store_notes.add_note(store, owner, title=title, body=source["text"], tags=tags,
                                source_message_id=message_id, source_document=source["filename"],
                                source_page=source["page"])


def source_citation(note: dict[str, Any]) -> str | None:
    """How an export cites the passage a note quotes: ``file.pdf, page 4``; ``None`` for other notes."""
    if not note.get("source_document"):
        return None
    page = note.get("source_page")
    return f"{note['source_document']}, page {page}" if page else note["source_document"]


def note_source(store: Store, owner: str, note_id: int) -> tuple[int, int]:
    """``(conversation_id, message_id)`` of the answer a note came from, to open it.

    Raises ``NotFound`` with a message saying so when the note has no source or its
    conversation is gone.
    """
    note = store_notes.get_note(store, owner, note_id)
    if note["source_message_id"] is None:
        raise NotFound(f"Note {note_id} was not saved from a conversation.")
    if not note["source_available"]:
        raise NotFound(
            f"The conversation note {note_id} came from (conversation {note['source_conversation_id']}) is gone."
        )
    return note["source_conversation_id"], note["source_message_id"]


# -- pinned notes as context ---------------------------------------------------------------------


def pinned_context(store: Store, owner: str, conversation_id: int) -> tuple[str, list[int]]:
    """The notes pinned to a conversation as text for the system prompt, and their ids.

    ``("", [])`` when nothing is pinned. The text reads::

        Notes pinned to this conversation:

        ## First note's title
        Its body ...
    """
    notes = store_notes.pinned_notes(store, owner, conversation_id)
    if not notes:
        return "", []
    sections = [f"## {note['title']}\n{note['body'].strip()}" for note in notes]
    return "\n\n".join([PINNED_HEADING, *sections]), [note["id"] for note in notes]


def pinned_context_tokens(store: Store, owner: str, conversation_id: int, count_tokens: CountTokens) -> int:
    """Tokens the pinned notes add to the prompt (``count_tokens`` is the backend's, e.g. ``engine.count_tokens``)."""
    return context_tokens(pinned_context(store, owner, conversation_id)[0], count_tokens)


def context_tokens(text: str, count_tokens: CountTokens) -> int:
    """Tokens ``pinned_context``'s text adds to the system prompt (it is joined after a blank line)."""
    return count_tokens("\n\n" + text) if text else 0


def with_pinned_notes(
    store: Store,
    owner: str,
    conversation_id: int,
    system: str | None,
    *,
    count_tokens: CountTokens | None = None,
    budget: int | None = None,
) -> str | None:
    """``system`` with the conversation's pinned notes appended (unchanged when none are pinned).

    The system prompt is never dropped to fit the window, so the notes always reach the model.
    Given ``count_tokens`` and ``budget`` (the window less the answer's tokens), a system prompt
    that can no longer fit because of the notes raises ``ContextOverflowError`` saying so.
    """
    text, note_ids = pinned_context(store, owner, conversation_id)
    if not note_ids:
        return system
    combined = f"{system}\n\n{text}" if system else text
    if count_tokens is not None and budget is not None:
        total = count_tokens(combined)
        if total > budget:
            notes_tokens = count_tokens(text)
            raise ContextOverflowError(
                f"the {len(note_ids)} note{'s' if len(note_ids) != 1 else ''} pinned to conversation "
                f"{conversation_id} take {notes_tokens} tokens; with the system prompt that is {total} tokens, "
                f"more than the {budget} left for the prompt in the model's window; unpin or shorten a note, "
                "or lower max_new_tokens"
            )
    return combined


# -- Markdown export -----------------------------------------------------------------------------


def note_front_matter(note: dict[str, Any]) -> dict[str, Any]:
    """The metadata written above a note's body: title, tags, times, source, model, params."""
    return {
        "id": note["id"],
        "title": note["title"],
        "tags": list(note["tags"]),
        "created": note["created"],
        "updated": note["updated"],
        "source": {
            "conversation_id": note["source_conversation_id"],
            "message_id": note["source_message_id"],
            **({"document": note["source_document"], "page": note["source_page"]} if note.get("source_document")
               else {}),
        },
        "model": note["model"],
        "params": note["params"],
    }


def _front_matter_yaml(note: dict[str, Any]) -> str:
    return yaml.safe_dump(note_front_matter(note), sort_keys=False, allow_unicode=True)


def note_markdown(note: dict[str, Any]) -> str:
    """One note as a Markdown file: YAML front matter between ``---`` lines, then its body."""
    return f"---\n{_front_matter_yaml(note)}---\n\n{note['body'].rstrip()}\n{_cited(note)}"


def _cited(note: dict[str, Any]) -> str:
    """The line under a quoted passage that says where it is from."""
    citation = source_citation(note)
    return f"\n— {citation}\n" if citation else ""


def notes_markdown(notes: list[dict[str, Any]]) -> str:
    """Notes as one Markdown document: a section per note, its metadata in a YAML block."""
    parts = [f"# Notes\n\n{len(notes)} note{'s' if len(notes) != 1 else ''} exported from ChatCore.\n"]
    for note in notes:
        front = _front_matter_yaml(note)
        parts.append(f"## {note['title']}\n\n```yaml\n{front}```\n\n{note['body'].rstrip()}\n{_cited(note)}")
    return "\n".join(parts)


def note_filename(title: str, taken: set[str] | None = None) -> str:
    """A safe ``.md`` file name from a note title, distinct (ignoring case) from the names in ``taken``.

    Letters and digits of any script are kept, every other run of characters becomes ``-``;
    the result has no path separators, no leading dot, is never a reserved device name, and is
    at most ``FILENAME_MAX_CHARS`` characters. The chosen name is added to ``taken``.
    """
    stem = unicodedata.normalize("NFC", title).lower()
    stem = re.sub(r"[^\w]+|_+", "-", stem).strip("-")
    stem = stem[:FILENAME_MAX_CHARS].rstrip("-")
    while len(stem.encode("utf-8")) > FILENAME_MAX_BYTES:
        stem = stem[:-1].rstrip("-")
    if not stem:
        stem = "note"
    if stem in RESERVED_NAMES:
        stem += "-note"
    taken = taken if taken is not None else set()
    name, n = f"{stem}.md", 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}-{n}.md"
    taken.add(name.lower())
    return name


def export_notes(
    store: Store,
    owner: str,
    path: str | Path,
    *,
    single_file: bool = False,
    note_ids: Iterable[int] | None = None,
) -> list[Path]:
    """Write the owner's notes (all of them, or ``note_ids``) as Markdown; returns the files written.

    One file per note into the directory ``path`` (created if needed; a file of the same name
    there is replaced), or with ``single_file`` one document at ``path``. Every file is written
    through a temporary file and a rename, so none is ever half written.
    """
    if note_ids is None:
        notes = store_notes.list_notes(store, owner, limit=-1)
    else:
        notes = [store_notes.get_note(store, owner, note_id) for note_id in note_ids]
    notes.sort(key=lambda note: note["id"])
    path = Path(path)
    if single_file:
        write_atomically(path, notes_markdown(notes))
        return [path]
    path.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written = []
    for note in notes:
        target = path / note_filename(note["title"], taken)
        # note_filename cannot produce a separator or "..": a belt to those braces.
        if target.parent != path or target.name in ("", ".", ".."):
            raise ValueError(f"unsafe file name {target.name!r}")
        write_atomically(target, note_markdown(note))
        written.append(target)
    return written


# -- feedback ------------------------------------------------------------------------------------


def feedback_records(store: Store, owner: str) -> Iterator[dict[str, Any]]:
    """Every rated answer (``"kind": "rating"``, see ``storage.feedback``), then every arena vote
    (``"kind": "arena"``: the prompt, both models and answers, the vote and both reproducibility records)."""
    for exchange in rated_exchanges(store, owner):
        yield {**exchange, "kind": "rating"}  # the key last: lines start as they did before votes joined them
    for battle in arena_battles(store, owner, voted=True):
        yield {"kind": "arena", "id": battle["id"], "prompt": battle["prompt"], "model_a": battle["model_a"],
               "model_b": battle["model_b"], "answer_a": battle["answer_a"], "answer_b": battle["answer_b"],
               "vote": battle["vote"], "created": battle["created"], "voted": battle["voted"],
               "record_a": battle["record_a"], "record_b": battle["record_b"]}


def export_feedback(store: Store, owner: str, path: str | Path) -> int:
    """Write every rating and arena vote to ``path`` as JSON Lines (``feedback_records``); returns how many.

    Written through a temporary file and a rename: readers see the old file or the whole new one.
    """
    count = 0
    with atomic_file(Path(path)) as f:
        for record in feedback_records(store, owner):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


# -- files ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` only when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    with atomic_file(path) as f:
        f.write(text)

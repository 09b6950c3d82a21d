"""chatcore.services.notes: notes from answers, pinned notes in the model's prompt, Markdown and feedback export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.core.chat import build_messages, render_ids
from chatcore.core.errors import ContextOverflowError, ParameterError
from chatcore.core.events import Started
from chatcore.core.params import GenerationParams
from chatcore.services import notes as research
from chatcore.services.chat import ChatService
from storage import NotFound, Store, notes


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "chat.db") as store:
        yield store


@pytest.fixture
def chat(store: Store) -> tuple[int, int]:
    """A conversation with a system prompt and one rated answer: (conversation id, answer id)."""
    cid = store.create_conversation("local", model="tiny", system_prompt="Be brief.")
    store.add_message(cid, "user", "How does attention scale?")
    answer = store.add_message(cid, "assistant", "Quadratically with length.\nSee FlashAttention.",
                               model="tiny", params={"seed": 3, "temperature": 0.5})
    return cid, answer


class Recording:
    """The real tiny engine, remembering the system prompt of each call."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.systems: list[str | None] = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def stream(self, history, params, *, system=None, cancel=None):
        self.systems.append(system)
        return self.engine.stream(history, params, system=system, cancel=cancel)


def test_save_answer_or_selection(store: Store, chat):
    cid, answer = chat
    whole = research.save_answer_as_note(store, "local", answer, tags=["ml"])
    note = notes.get_note(store, "local", whole)
    assert note["title"] == "Quadratically with length."
    assert note["body"] == "Quadratically with length.\nSee FlashAttention."
    assert note["params"] == {"seed": 3, "temperature": 0.5} and note["model"] == "tiny"

    part = research.save_answer_as_note(store, "local", answer, selection="See FlashAttention.", title="Flash")
    note = notes.get_note(store, "local", part)
    assert (note["title"], note["body"], note["source_message_id"]) == ("Flash", "See FlashAttention.", answer)
    assert research.note_source(store, "local", part) == (cid, answer)

    question = store.get_conversation("local", cid)["messages"][0]["id"]
    with pytest.raises(ParameterError):
        research.save_answer_as_note(store, "local", question)
    with pytest.raises(NotFound):
        research.save_answer_as_note(store, "mallory", answer)

    store.delete_conversation("local", cid)
    with pytest.raises(NotFound, match="is gone"):
        research.note_source(store, "local", part)
    plain = notes.add_note(store, "local", title="t", body="b")
    with pytest.raises(NotFound, match="not saved from a conversation"):
        research.note_source(store, "local", plain)


def test_pinned_context_and_its_tokens(store: Store, chat):
    cid, _ = chat
    assert research.pinned_context(store, "local", cid) == ("", [])
    assert research.pinned_context_tokens(store, "local", cid, len) == 0
    a = notes.add_note(store, "local", title="Glossary", body="KV cache: keys and values kept.\n")
    b = notes.add_note(store, "local", title="Goal", body="Write the related-work section.")
    notes.pin_note(store, "local", a, cid)
    notes.pin_note(store, "local", b, cid)
    text, ids = research.pinned_context(store, "local", cid)
    assert ids == [a, b]
    assert text == (
        "Notes pinned to this conversation:\n\n## Glossary\nKV cache: keys and values kept.\n\n"
        "## Goal\nWrite the related-work section."
    )
    assert research.pinned_context_tokens(store, "local", cid, len) == len(text) + 2
    assert research.with_pinned_notes(store, "local", cid, "Be brief.") == "Be brief.\n\n" + text
    assert research.with_pinned_notes(store, "local", cid, None) == text
    with pytest.raises(ContextOverflowError, match="2 notes pinned to conversation"):
        research.with_pinned_notes(store, "local", cid, "Be brief.", count_tokens=len, budget=50)
    with pytest.raises(NotFound):
        research.pinned_context(store, "mallory", cid)


def test_pinned_notes_reach_the_model(tiny_engine, store: Store, chat):
    cid, _ = chat
    backend = Recording(tiny_engine)
    service = ChatService(lambda: backend, store)
    params = GenerationParams.create(max_new_tokens=4, temperature=0)

    def started() -> Started:
        events = service.ask("Summarise.", params, conversation_id=cid, save=False)
        return next(e for e in events if isinstance(e, Started))

    before = started().prompt_tokens
    assert backend.systems[-1] == "Be brief."
    note_id = notes.add_note(store, "local", title="Ptarmigan", body="The ptarmigan turns white in winter.")
    notes.pin_note(store, "local", note_id, cid)
    after = started().prompt_tokens
    added = research.pinned_context_tokens(store, "local", cid, tiny_engine.count_tokens)
    assert added > 0 and after == before + added

    history = [{"role": "user", "content": "How does attention scale?"},
               {"role": "assistant", "content": "Quadratically with length.\nSee FlashAttention."},
               {"role": "user", "content": "Summarise."}]
    ids = render_ids(tiny_engine.tokenizer, build_messages(history, backend.systems[-1]))
    assert len(ids) == after
    rendered = tiny_engine.tokenizer.decode(ids)
    assert "Be brief.\n\nNotes pinned to this conversation:\n\n## Ptarmigan\nThe ptarmigan turns white" in rendered

    # A saved answer records the system prompt it was given, notes included, so it can be reproduced.
    list(service.ask("Again.", params, conversation_id=cid))
    answer = store.get_conversation("local", cid)["messages"][-1]
    assert "The ptarmigan turns white in winter." in answer["params"]["system_prompt"]

    notes.update_note(store, "local", note_id, body="x" * 3000)
    with pytest.raises(ContextOverflowError, match="1 note pinned"):
        list(service.ask("Summarise.", params, conversation_id=cid, save=False))


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Attention scaling", "attention-scaling.md"),
        ("../../etc/passwd", "etc-passwd.md"),
        ("/absolute/path", "absolute-path.md"),
        ("C:\\Windows\\system32", "c-windows-system32.md"),
        ("..", "note.md"),
        ("   ", "note.md"),
        ("CON", "con-note.md"),
        ("nul", "nul-note.md"),
        ("Über naïve_notes!", "über-naïve-notes.md"),
        ("注意力机制", "注意力机制.md"),
        (".hidden", "hidden.md"),
    ],
)
def test_note_filename(title, expected):
    assert research.note_filename(title) == expected


def test_note_filename_is_short_and_unique():
    taken: set[str] = set()
    assert research.note_filename("Same", taken) == "same.md"
    assert research.note_filename("SAME", taken) == "same-2.md"
    assert research.note_filename("same!", taken) == "same-3.md"
    long = research.note_filename("word " * 100)
    assert len(long) <= research.FILENAME_MAX_CHARS + 3 and not long.startswith("-")
    assert len(research.note_filename("𝔘" * 100).encode()) <= 255


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_note_filename_never_escapes(title):
    name = research.note_filename(title)
    assert re.fullmatch(r"[^\W_](?:[\w-]*[^\W_])?(?:-\d+)?\.md", name), name
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert name.removesuffix(".md") not in research.RESERVED_NAMES
    assert len(name.encode()) <= 255


def test_export_one_file_per_note(store: Store, chat, tmp_path: Path):
    cid, answer = chat
    first = research.save_answer_as_note(store, "local", answer, title="../../escape", tags=["ml"])
    notes.add_note(store, "local", title="../../escape", body="Second, same title.\n---\nnot front matter")
    notes.add_note(store, "local", title="CON", body="A reserved name.")
    out = tmp_path / "export"
    written = research.export_notes(store, "local", out)
    assert [p.name for p in written] == ["escape.md", "escape-2.md", "con-note.md"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".md") == sorted(
        p.name for p in written
    )
    assert all(p.parent == out for p in written)

    text = written[0].read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    note = notes.get_note(store, "local", first)
    assert meta == {
        "id": first, "title": "../../escape", "tags": ["ml"], "created": note["created"],
        "updated": note["updated"], "source": {"conversation_id": cid, "message_id": answer},
        "model": "tiny", "params": {"seed": 3, "temperature": 0.5},
    }
    assert body == "\nQuadratically with length.\nSee FlashAttention.\n"
    assert written[1].read_text(encoding="utf-8").endswith("\n\nSecond, same title.\n---\nnot front matter\n")

    single = tmp_path / "notes.md"
    assert research.export_notes(store, "local", single, single_file=True) == [single]
    document = single.read_text(encoding="utf-8")
    assert document.startswith("# Notes\n\n3 notes exported") and document.count("\n## ") == 3
    assert not list(tmp_path.glob(".*.tmp"))
    assert research.export_notes(store, "mallory", tmp_path / "theirs") == []


def test_feedback_export_is_jsonl_and_atomic(store: Store, chat, tmp_path: Path):
    cid, answer = chat
    store.rate_message("local", answer, 1, "clear")
    path = tmp_path / "feedback.jsonl"
    path.write_text("old\n")
    assert research.export_feedback(store, "local", path) == 1
    (row,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert row["prompt"] == "How does attention scale?" and row["rating"] == 1 and row["comment"] == "clear"
    assert row["settings"] == {"model": "tiny", "params": {"seed": 3, "temperature": 0.5}}
    assert (row["conversation_id"], row["message_id"]) == (cid, answer)

    with pytest.raises(RuntimeError):
        with research.atomic_file(path) as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text().startswith('{"prompt"')
    assert not list(tmp_path.glob(".*.tmp"))

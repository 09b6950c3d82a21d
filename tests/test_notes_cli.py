"""``chatcore notes`` and ``chatcore feedback export`` through Click's CliRunner, on a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import chatcore.cli.notes  # noqa: F401  (registers the commands even before commands.py lists them)
from chatcore.cli import main
from storage import Store, notes


@pytest.fixture
def answer(home: Path) -> tuple[int, int]:
    """A saved conversation with one answer: (conversation id, answer id)."""
    with Store(home / "chatcore.db") as store:
        cid = store.create_conversation(model="tiny", system_prompt="Be brief.")
        store.add_message(cid, "user", "Tell me about kumquats")
        mid = store.add_message(cid, "assistant", "Kumquats are small citrus fruits.\nEat the peel.",
                                model="tiny", params={"seed": 5})
    return cid, mid


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_add_search_and_export_as_markdown(home: Path, tmp_path: Path):
    """The issue's walk-through: two notes, one found by a word of its body, both exported."""
    first = run("notes", "add", "--title", "Attention scaling", "--tag", "ml", "--tag", "reading",
                "--body", "Self-attention costs grow quadratically with sequence length.")
    assert first.exit_code == 0 and first.stdout == "Added note 1.\n"
    second = run("notes", "add", "--title", "Kumquat facts", "--body", "-", input="Kumquats have a sweet peel.\n")
    assert second.stdout == "Added note 2.\n"

    found = run("notes", "search", "quadratically")
    assert found.stdout.splitlines() == [
        "     1  Attention scaling",
        "        Self-attention costs grow quadratically with sequence length.",
    ]
    hits = json.loads(run("notes", "search", "peel", "--json").stdout)
    assert [h["id"] for h in hits] == [2] and "\ue000peel\ue001" in hits[0]["snippet"]

    out = tmp_path / "notes"
    exported = run("notes", "export", "-o", str(out))
    assert exported.stdout == f"Exported 2 notes to {out}.\n"
    assert sorted(p.name for p in out.iterdir()) == ["attention-scaling.md", "kumquat-facts.md"]
    text = (out / "attention-scaling.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["title"] == "Attention scaling" and meta["tags"] == ["ml", "reading"]
    assert text.endswith("\n---\n\nSelf-attention costs grow quadratically with sequence length.\n")
    assert (out / "kumquat-facts.md").read_text(encoding="utf-8").endswith("\n\nKumquats have a sweet peel.\n")

    single = tmp_path / "all.md"
    assert run("notes", "export", "-o", str(single), "--single-file").exit_code == 0
    assert single.read_text(encoding="utf-8").count("\n## ") == 2


def test_list_show_edit_delete(home: Path):
    run("notes", "add", "--title", "One", "--tag", "a", "--body", "first body")
    run("notes", "add", "--title", "Two", "--body", "second body")
    lines = run("notes", "list").stdout.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "TITLE"]
    assert lines[1].split()[0] == "2" and lines[1].endswith("  Two")
    assert lines[2].split()[0] == "1" and lines[2].endswith("  One  [a]")
    assert [n["id"] for n in json.loads(run("notes", "list", "--tag", "a", "--json").stdout)] == [1]
    assert "(1 of 2; next: --page 2)" in run("notes", "list", "--limit", "1").stdout

    assert run("notes", "edit", "1", "--title", "Uno", "--tag", "b", "--tag", "c").stdout == "Updated note 1.\n"
    shown = run("notes", "show", "1").stdout.splitlines()
    assert shown[0] == "Uno" and shown[1].startswith("note 1 · updated ") and shown[1].endswith(" · tags b, c")
    assert shown[-1] == "first body"
    assert json.loads(run("notes", "edit", "1", "--no-tags", "--json").stdout)["tags"] == []
    assert run("notes", "search", "second").stdout.splitlines()[0].endswith("Two")
    assert run("notes", "edit", "2", "--body", "-", input="changed text").exit_code == 0
    assert run("notes", "search", "second").stdout == "No matches.\n"

    nothing = CliRunner().invoke(main, ["notes", "edit", "1"])
    assert nothing.exit_code == 2 and "Nothing to change" in nothing.output

    assert run("notes", "delete", "2").stdout == "Deleted note 2.\n"
    missing = CliRunner().invoke(main, ["notes", "show", "2"])
    assert missing.exit_code == 1 and missing.stderr == "Error: No note 2.\n"
    assert CliRunner().invoke(main, ["notes", "delete", "2"]).exit_code == 1
    empty = CliRunner().invoke(main, ["notes", "add", "--title", " ", "--body", "x"])
    assert empty.exit_code == 1 and "title cannot be empty" in empty.stderr


def test_from_message_pin_and_gone_source(home: Path, answer):
    cid, mid = answer
    added = json.loads(run("notes", "add", "--from-message", str(mid), "--tag", "fruit", "--json").stdout)
    assert added["title"] == "Kumquats are small citrus fruits."
    assert added["body"] == "Kumquats are small citrus fruits.\nEat the peel."
    assert (added["source_conversation_id"], added["source_message_id"]) == (cid, mid)
    assert added["model"] == "tiny" and added["params"] == {"seed": 5}
    part = json.loads(run("notes", "add", "--from-message", str(mid), "--body", "Eat the peel.", "--json").stdout)
    assert part["body"] == "Eat the peel." and part["title"] == "Eat the peel."

    assert run("notes", "pin", "1", "--conversation", str(cid)).stdout == f"Pinned note 1 to conversation {cid}.\n"
    assert [n["id"] for n in json.loads(run("notes", "list", "--conversation", str(cid), "--json").stdout)] == [1]
    shown = run("notes", "show", "1").stdout
    assert f"From conversation {cid}, message {mid} (chatcore history show {cid})" in shown
    assert f"Pinned to conversation {cid}" in shown
    assert run("notes", "unpin", "1", "--conversation", str(cid)).exit_code == 0
    again = CliRunner().invoke(main, ["notes", "unpin", "1", "--conversation", str(cid)])
    assert again.exit_code == 1 and "is not pinned" in again.stderr

    question = CliRunner().invoke(main, ["notes", "add", "--from-message", str(mid - 1)])
    assert question.exit_code == 1 and "only answers can be saved" in question.stderr
    usage = CliRunner().invoke(main, ["notes", "add", "--title", "x"])
    assert usage.exit_code == 2

    run("history", "delete", str(cid))
    assert f"From conversation {cid}, message {mid} (gone)" in run("notes", "show", "1").stdout


def test_feedback_export(home: Path, answer, tmp_path: Path):
    cid, mid = answer
    out = tmp_path / "feedback.jsonl"
    assert run("feedback", "export", "-o", str(out)).stdout == f"Exported 0 rated answers to {out}.\n"
    assert out.read_text() == ""
    with Store(home / "chatcore.db") as store:
        store.rate_message("local", mid, 1, "useful")
        assert notes.count_notes(store, "local") == 0
    assert run("feedback", "export", "-o", str(out)).stdout == f"Exported 1 rated answer to {out}.\n"
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["prompt"] == "Tell me about kumquats" and row["answer"].startswith("Kumquats are")
    assert (row["rating"], row["comment"]) == (1, "useful")
    assert row["settings"] == {"model": "tiny", "params": {"seed": 5}}
    assert (row["conversation_id"], row["message_id"]) == (cid, mid) and row["created"]

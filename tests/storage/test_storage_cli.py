"""``chatcore history``, ``export`` and ``import`` through Click's CliRunner, on a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatcore.cli import main
from storage import Store


@pytest.fixture
def saved(home: Path) -> tuple[int, int]:
    """Two conversations in the CLI's database: a chat about kumquats and an empty one."""
    with Store(home / "chatcore.db") as store:
        first = store.create_conversation(model="tiny", system_prompt="Be brief.")
        store.add_message(first, "user", "Tell me about kumquats")
        answer = store.begin_assistant_message(first, model="tiny")
        store.finish_message(answer, "Kumquats are small citrus fruits.", finish_reason="stop",
                             completion_tokens=6, tokens_per_s=12.5)
        second = store.create_conversation(title="Empty one")
    return first, second


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list(saved):
    first, second = saved
    result = run("history", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "MSGS", "TITLE"]
    assert lines[1].split()[0] == str(second) and lines[1].endswith("   0  Empty one")
    assert lines[2].split()[0] == str(first) and lines[2].endswith("   2  Tell me about kumquats")

    data = json.loads(run("history", "list", "--json").stdout)
    assert [c["id"] for c in data] == [second, first]
    assert data[1]["message_count"] == 2

    paged = run("history", "list", "--limit", "1")
    assert "(1 of 2; next: --page 2)" in paged.stdout
    assert json.loads(run("history", "list", "--limit", "1", "--page", "2", "--json").stdout)[0]["id"] == first


def test_list_empty(home):
    assert run("history", "list").stdout == "No conversations.\n"
    assert json.loads(run("history", "list", "--json").stdout) == []


def test_show(saved):
    first, _ = saved
    result = run("history", "show", str(first))
    assert result.exit_code == 0
    assert result.stdout.startswith("Tell me about kumquats\nconversation ")
    assert "[System prompt]\nBe brief.\n" in result.stdout
    assert "[User]\nTell me about kumquats\n" in result.stdout
    assert "[Assistant · tiny · 6 tokens · 12.5 tokens/s]\nKumquats are small citrus fruits.\n" in result.stdout
    data = json.loads(run("history", "show", str(first), "--json").stdout)
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]


def test_search(saved):
    first, _ = saved
    result = run("history", "search", "kumquat")
    assert result.exit_code == 0
    assert f"{first:>6}  Tell me about kumquats  [title]" in result.stdout
    assert "Kumquats are small citrus fruits." in result.stdout  # markers not shown when piped
    hits = json.loads(run("history", "search", "kumquat", "--json").stdout)
    assert {h["message_id"] for h in hits} >= {None}
    assert any("\ue000Kumquats\ue001" in h["snippet"] for h in hits)
    assert run("history", "search", 'AND( "').stdout == "No matches.\n"


def test_rename_delete_restore(saved):
    first, second = saved
    assert run("history", "rename", str(second), "Renamed").stdout == (
        f"Renamed conversation {second} to 'Renamed'.\n"
    )
    assert json.loads(run("history", "rename", str(second), "Again", "--json").stdout)["title"] == "Again"

    result = run("history", "delete", str(first))
    assert result.stdout == (
        f"Deleted conversation {first}. Undo with: chatcore history restore {first}\n"
    )
    assert [c["id"] for c in json.loads(run("history", "list", "--json").stdout)] == [second]
    assert run("history", "restore", str(first)).stdout == f"Restored conversation {first}.\n"
    assert json.loads(run("history", "delete", str(first), "--json").stdout) == {"id": first, "deleted": True}
    assert json.loads(run("history", "restore", str(first), "--json").stdout) == {"id": first, "deleted": False}


@pytest.mark.parametrize(
    "args, message",
    [
        (["history", "show", "999"], "Error: No conversation 999.\n"),
        (["history", "rename", "999", "x"], "Error: No conversation 999.\n"),
        (["history", "delete", "999"], "Error: No conversation 999.\n"),
        (["history", "restore", "999"], "Error: No deleted conversation 999 to restore.\n"),
        (["history", "rename", "1", " "], "Error: A title cannot be empty.\n"),
        (["export", "--conversation", "999", "--format", "json", "-o", "x.json"], "Error: No conversation 999.\n"),
    ],
)
def test_errors_are_one_clean_line(saved, args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr == message
    assert result.stdout == ""


def test_export_then_import_round_trip(saved, tmp_path: Path):
    out = tmp_path / "exports" / "all.json"
    result = run("export", "--all", "--format", "json", "-o", str(out))
    assert result.stdout == f"Exported 2 conversations to {out}.\n"
    document = json.loads(out.read_text())
    assert [c["title"] for c in document["conversations"]] == ["Tell me about kumquats", "Empty one"]
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind

    result = run("import", str(out))
    assert result.exit_code == 0
    assert result.stdout.startswith("Imported 2 conversations: ")
    assert len(json.loads(run("history", "list", "--json").stdout)) == 4
    assert len(json.loads(run("import", str(out), "--json").stdout)["imported"]) == 2


def test_export_markdown(saved, tmp_path: Path):
    first, _ = saved
    out = tmp_path / "one.md"
    assert run("export", "--conversation", str(first), "--format", "md", "-o", str(out)).exit_code == 0
    text = out.read_text()
    assert text.startswith("# Tell me about kumquats\n")
    assert "Kumquats are small citrus fruits." in text
    assert run("export", "--all", "--format", "md", "-o", "-").stdout.count("\n---\n") == 1


def test_export_needs_exactly_one_selection(saved, tmp_path: Path):
    for args in ([], ["--all", "--conversation", "1"]):
        result = run("export", *args, "--format", "json", "-o", str(tmp_path / "x.json"))
        assert result.exit_code == 2
        assert "Give either --all or --conversation ID." in result.stderr


def test_bad_import_writes_nothing(saved, home: Path, tmp_path: Path, dump):
    bad = tmp_path / "bad.json"
    document = {"format": "chatcore-export", "version": 1, "conversations": [
        {"id": 1, "messages": [{"id": 1, "role": "robot", "content": "x"}]}]}
    bad.write_text(json.dumps(document))
    with Store(home / "chatcore.db") as store:
        before = dump(store)
    result = run("import", str(bad))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: Import refused, nothing was written. "
        "conversations[0].messages[0].role: must be one of system, user, assistant\n"
    )
    bad.write_text('{"format": "chatcore-export", "version": 1, "conver')
    result = run("import", str(bad))
    assert result.exit_code == 1
    assert "malformed JSON at line 1 column" in result.stderr and "truncated" in result.stderr
    assert len(json.loads(run("history", "list", "--json").stdout)) == 2
    with Store(home / "chatcore.db") as store:
        assert dump(store) == before
    assert run("import", str(tmp_path / "missing.json")).exit_code == 2

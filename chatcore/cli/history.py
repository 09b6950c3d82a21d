"""``chatcore history``, ``chatcore export`` and ``chatcore import``: the saved conversations.

Glue only: open the store, call one method, print the result for a person or, with ``--json``,
for a program. Storage errors become one clean line on stderr and exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from chatcore.cli.common import (
    echo_json,
    echo_next_page,
    json_option,
    local_time,
    open_store,
    snippet_line,
    storage_errors,
)
from chatcore.cli.group import main
from chatcore.services.notes import write_atomically
from storage import LOCAL_OWNER, MAX_IMPORT_BYTES, ImportValidationError
from storage.transfer import message_heading


@main.group()
def history() -> None:
    """List, show, search, rename, delete and restore saved conversations."""


@history.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--page", default=1, show_default=True, type=click.IntRange(1), help="Page number.")
@click.option("--archived", is_flag=True, help="Include archived conversations.")
@json_option
@storage_errors
def list_(limit: int, page: int, archived: bool, as_json: bool) -> None:
    """Conversations, most recently updated first."""
    store = open_store()
    conversations = store.list_conversations(
        LOCAL_OWNER, limit=limit, offset=(page - 1) * limit, include_archived=archived
    )
    if as_json:
        echo_json(conversations)
        return
    if not conversations:
        click.echo("No conversations." if page == 1 else "No conversations on this page.")
        return
    click.echo(f"{'ID':>6}  {'UPDATED':16}  {'MSGS':>4}  TITLE")
    for c in conversations:
        title = c["title"] or "Untitled"
        if c["archived"]:
            title += " (archived)"
        click.echo(f"{c['id']:>6}  {local_time(c['updated']):16}  {c['message_count']:>4}  {title}")
    total = store.count_conversations(LOCAL_OWNER, include_archived=archived)
    echo_next_page(page, limit, len(conversations), total)


@history.command()
@click.argument("conversation_id", type=int)
@json_option
@storage_errors
def show(conversation_id: int, as_json: bool) -> None:
    """Print one conversation."""
    conversation = open_store().get_conversation(LOCAL_OWNER, conversation_id)
    if as_json:
        echo_json(conversation)
        return
    click.echo(click.style(conversation["title"] or "Untitled", bold=True))
    facts = [f"conversation {conversation['id']}", f"updated {local_time(conversation['updated'])}"]
    if conversation["model"]:
        facts.append(f"model {conversation['model']}")
    if conversation["parent_conversation_id"] is not None:
        facts.append(f"forked from {conversation['parent_conversation_id']}")
    if conversation["archived"]:
        facts.append("archived")
    click.echo(" · ".join(facts))
    if conversation["system_prompt"]:
        click.echo(f"\n[System prompt]\n{conversation['system_prompt']}")
    for message in conversation["messages"]:
        click.echo("\n" + click.style(f"[{message_heading(message)}]", bold=True))
        click.echo(message["content"])


@history.command()
@click.argument("query")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@storage_errors
def search(query: str, limit: int, as_json: bool) -> None:
    """Full-text search over messages and titles (every word must match; end a word with * for a prefix).

    With --json, snippets mark matches with U+E000 and U+E001.
    """
    hits = open_store().search(LOCAL_OWNER, query, limit=limit)
    if as_json:
        echo_json(hits)
        return
    if not hits:
        click.echo("No matches.")
        return
    for hit in hits:
        where = f"message {hit['message_id']} ({hit['role']})" if hit["message_id"] else "title"
        click.echo(f"{hit['conversation_id']:>6}  {hit['conversation_title'] or 'Untitled'}  [{where}]")
        click.echo(f"        {snippet_line(hit['snippet'])}")


@history.command()
@click.argument("conversation_id", type=int)
@click.argument("title")
@json_option
@storage_errors
def rename(conversation_id: int, title: str, as_json: bool) -> None:
    """Give a conversation a new title."""
    store = open_store()
    store.rename_conversation(LOCAL_OWNER, conversation_id, title)
    conversation = store.get_conversation(LOCAL_OWNER, conversation_id)
    if as_json:
        del conversation["messages"]
        echo_json(conversation)
    else:
        click.echo(f"Renamed conversation {conversation_id} to {conversation['title']!r}.")


@history.command()
@click.argument("conversation_id", type=int)
@json_option
@storage_errors
def delete(conversation_id: int, as_json: bool) -> None:
    """Delete a conversation (undo with ``history restore``)."""
    open_store().delete_conversation(LOCAL_OWNER, conversation_id)
    if as_json:
        echo_json({"id": conversation_id, "deleted": True})
    else:
        click.echo(
            f"Deleted conversation {conversation_id}. "
            f"Undo with: chatcore history restore {conversation_id}"
        )


@history.command()
@click.argument("conversation_id", type=int)
@json_option
@storage_errors
def restore(conversation_id: int, as_json: bool) -> None:
    """Bring back a deleted conversation."""
    open_store().restore_conversation(LOCAL_OWNER, conversation_id)
    if as_json:
        echo_json({"id": conversation_id, "deleted": False})
    else:
        click.echo(f"Restored conversation {conversation_id}.")


@history.command()
@click.option("--older-than-days", default=30.0, show_default=True, type=click.FloatRange(0))
@json_option
@storage_errors
def purge(older_than_days: float, as_json: bool) -> None:
    """Erase for good conversations deleted more than N days ago."""
    purged = open_store().purge_deleted(LOCAL_OWNER, older_than_days=older_than_days)
    if as_json:
        echo_json({"purged": purged})
    else:
        click.echo(f"Purged {purged} deleted conversation{'s' if purged != 1 else ''}.")


@main.command("export")
@click.option("--all", "export_all", is_flag=True, help="Export every conversation.")
@click.option("--conversation", "conversation_ids", type=int, multiple=True, metavar="ID",
              help="Export this conversation (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), required=True,
              help="File to write ('-' for standard output).")
@storage_errors
def export(export_all: bool, conversation_ids: tuple[int, ...], fmt: str, output: str) -> None:
    """Export conversations as Markdown or JSON (see storage/EXPORT_FORMAT.md)."""
    if export_all == bool(conversation_ids):
        raise click.UsageError("Give either --all or --conversation ID.")
    store = open_store()
    ids = None if export_all else list(conversation_ids)
    if fmt == "json":
        document = store.export_json(LOCAL_OWNER, ids)
        count = len(document["conversations"])
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    else:
        count = len(ids) if ids is not None else store.count_conversations(LOCAL_OWNER, include_archived=True)
        text = store.export_markdown(LOCAL_OWNER, ids)
    if output == "-":
        click.echo(text, nl=False)
        return
    write_atomically(Path(output), text)
    click.echo(f"Exported {count} conversation{'s' if count != 1 else ''} to {output}.")


@main.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@storage_errors
def import_(path: Path, as_json: bool) -> None:
    """Import conversations from a ChatCore JSON export; all of them or, on any error, none."""
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise ImportValidationError("", f"{path} is {size:,} bytes; the limit is 50 MB")
    ids = open_store().import_json(LOCAL_OWNER, path.read_bytes())
    if as_json:
        echo_json({"imported": ids})
    else:
        listed = ", ".join(map(str, ids))
        click.echo(f"Imported {len(ids)} conversation{'s' if len(ids) != 1 else ''}"
                   + (f": {listed}." if ids else "."))

"""``chatcore notes`` (research notes) and ``chatcore feedback export`` (rated answers).

Glue only, as ``chatcore history``: open the store, call ``storage.notes`` or
``chatcore.services.notes``, print for a person or, with ``--json``, for a program.
"""

from __future__ import annotations

import sys
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
from chatcore.services import notes as note_service
from storage import LOCAL_OWNER
from storage import notes as store_notes

body_help = "The note's Markdown text ('-' reads standard input)."


def _read_body(body: str | None) -> str | None:
    return sys.stdin.read() if body == "-" else body


def _print_note_line(note: dict) -> None:
    tags = f"  [{', '.join(note['tags'])}]" if note["tags"] else ""
    click.echo(f"{note['id']:>6}  {local_time(note['updated']):16}  {note['title']}{tags}")


@main.group()
def notes() -> None:
    """Research notes: save answers, search, pin to conversations, export as Markdown."""


@notes.command()
@click.option("--title", help="Title (from a saved answer: its first line when omitted).")
@click.option("--body", help=body_help)
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--from-message", "message_id", type=int, metavar="ID",
              help="Save this answer; --body then keeps only the part given.")
@json_option
@storage_errors
def add(title: str | None, body: str | None, tags: tuple[str, ...], message_id: int | None, as_json: bool) -> None:
    """Add a note, or save an answer as one with --from-message."""
    text = _read_body(body)
    store = open_store()
    if message_id is not None:
        note_id = note_service.save_answer_as_note(store, LOCAL_OWNER, message_id, selection=text, title=title, tags=tags)
    else:
        if title is None or text is None:
            raise click.UsageError("Give --title and --body, or --from-message ID.")
        note_id = store_notes.add_note(store, LOCAL_OWNER, title=title, body=text, tags=tags)
    if as_json:
        echo_json(store_notes.get_note(store, LOCAL_OWNER, note_id))
    else:
        click.echo(f"Added note {note_id}.")


@notes.command("list")
@click.option("--tag", help="Only notes with this tag.")
@click.option("--conversation", "conversation_id", type=int, metavar="CID",
              help="Only the notes pinned to this conversation.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--page", default=1, show_default=True, type=click.IntRange(1), help="Page number.")
@json_option
@storage_errors
def list_(tag: str | None, conversation_id: int | None, limit: int, page: int, as_json: bool) -> None:
    """Notes, most recently updated first."""
    store = open_store()
    if conversation_id is not None:
        found = store_notes.pinned_notes(store, LOCAL_OWNER, conversation_id)
    else:
        found = store_notes.list_notes(store, LOCAL_OWNER, tag=tag, limit=limit, offset=(page - 1) * limit)
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("No notes." if page == 1 else "No notes on this page.")
        return
    click.echo(f"{'ID':>6}  {'UPDATED':16}  TITLE")
    for note in found:
        _print_note_line(note)
    if conversation_id is None:  # the pinned notes come whole, on one page
        echo_next_page(page, limit, len(found), store_notes.count_notes(store, LOCAL_OWNER, tag=tag))


@notes.command()
@click.argument("note_id", type=int)
@json_option
@storage_errors
def show(note_id: int, as_json: bool) -> None:
    """Print one note, with where it came from."""
    note = store_notes.get_note(open_store(), LOCAL_OWNER, note_id)
    if as_json:
        echo_json(note)
        return
    click.echo(click.style(note["title"], bold=True))
    facts = [f"note {note['id']}", f"updated {local_time(note['updated'])}"]
    if note["tags"]:
        facts.append("tags " + ", ".join(note["tags"]))
    if note["model"]:
        facts.append(f"model {note['model']}")
    click.echo(" · ".join(facts))
    if note["source_message_id"] is not None:
        where = f"conversation {note['source_conversation_id']}, message {note['source_message_id']}"
        if note["source_available"]:
            click.echo(f"From {where} (chatcore history show {note['source_conversation_id']})")
        else:
            click.echo(f"From {where} (gone)")
    if note["pinned_to"]:
        click.echo("Pinned to conversation " + ", ".join(map(str, note["pinned_to"])))
    click.echo("\n" + note["body"].rstrip())


@notes.command()
@click.argument("query")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@storage_errors
def search(query: str, limit: int, as_json: bool) -> None:
    """Full-text search over titles, bodies and tags (every word must match; end a word with * for a prefix).

    With --json, snippets mark matches with U+E000 and U+E001.
    """
    hits = store_notes.search_notes(open_store(), LOCAL_OWNER, query, limit=limit)
    if as_json:
        echo_json(hits)
        return
    if not hits:
        click.echo("No matches.")
        return
    for hit in hits:
        click.echo(f"{hit['id']:>6}  {hit['title']}")
        click.echo("        " + snippet_line(hit["snippet"]))


@notes.command()
@click.argument("note_id", type=int)
@click.option("--title", help="New title.")
@click.option("--body", help=body_help)
@click.option("--tag", "tags", multiple=True, help="Replace the tags with these (repeatable).")
@click.option("--no-tags", is_flag=True, help="Remove every tag.")
@json_option
@storage_errors
def edit(note_id: int, title: str | None, body: str | None, tags: tuple[str, ...], no_tags: bool,
         as_json: bool) -> None:
    """Change a note's title, body or tags."""
    if tags and no_tags:
        raise click.UsageError("Give --tag or --no-tags, not both.")
    new_tags = [] if no_tags else list(tags) if tags else None
    if title is None and body is None and new_tags is None:
        raise click.UsageError("Nothing to change: give --title, --body, --tag or --no-tags.")
    store = open_store()
    store_notes.update_note(store, LOCAL_OWNER, note_id, title=title, body=_read_body(body), tags=new_tags)
    if as_json:
        echo_json(store_notes.get_note(store, LOCAL_OWNER, note_id))
    else:
        click.echo(f"Updated note {note_id}.")


@notes.command()
@click.argument("note_id", type=int)
@json_option
@storage_errors
def delete(note_id: int, as_json: bool) -> None:
    """Delete a note for good."""
    store_notes.delete_note(open_store(), LOCAL_OWNER, note_id)
    if as_json:
        echo_json({"id": note_id, "deleted": True})
    else:
        click.echo(f"Deleted note {note_id}.")


conversation_option = click.option("--conversation", "conversation_id", type=int, required=True, metavar="CID",
                                   help="The conversation.")


@notes.command()
@click.argument("note_id", type=int)
@conversation_option
@storage_errors
def pin(note_id: int, conversation_id: int) -> None:
    """Pin a note to a conversation: the model sees it in every later answer there."""
    store_notes.pin_note(open_store(), LOCAL_OWNER, note_id, conversation_id)
    click.echo(f"Pinned note {note_id} to conversation {conversation_id}.")


@notes.command()
@click.argument("note_id", type=int)
@conversation_option
@storage_errors
def unpin(note_id: int, conversation_id: int) -> None:
    """Unpin a note from a conversation."""
    store_notes.unpin_note(open_store(), LOCAL_OWNER, note_id, conversation_id)
    click.echo(f"Unpinned note {note_id} from conversation {conversation_id}.")


@notes.command("export")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Directory for one file per note (or, with --single-file, the file).")
@click.option("--single-file", is_flag=True, help="Write one Markdown document.")
@storage_errors
def export(output: Path, single_file: bool) -> None:
    """Export every note as Markdown with YAML front matter."""
    if single_file and output.is_dir():
        raise click.UsageError(f"{output} is a directory; --single-file needs a file name.")
    if not single_file and output.exists() and not output.is_dir():
        raise click.UsageError(f"{output} is a file; give a directory, or add --single-file.")
    store = open_store()
    count = store_notes.count_notes(store, LOCAL_OWNER)
    note_service.export_notes(store, LOCAL_OWNER, output, single_file=single_file)
    click.echo(f"Exported {count} note{'s' if count != 1 else ''} to {output}.")


@main.group()
def feedback() -> None:
    """Rated answers, for evaluation."""


@feedback.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSON Lines file to write.")
@storage_errors
def feedback_export(output: Path) -> None:
    """Write every rated answer with its question and settings as JSON Lines."""
    count = note_service.export_feedback(open_store(), LOCAL_OWNER, output)
    click.echo(f"Exported {count} rated answer{'s' if count != 1 else ''} to {output}.")

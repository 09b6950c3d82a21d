"""``chatcore docs``: the researcher's library from the terminal (add, list, show, search, remove, jobs).

Glue only, as ``chatcore notes``: open the store, call :class:`chatcore.services.library.Library` as the
``local`` user, print for a person or, with ``--json``, for a program. Jobs run in the foreground with a
progress bar on stderr; Ctrl-C cancels them cleanly.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import click

from chatcore.cli.common import echo_json, json_option, local_time, open_store, storage_errors
from chatcore.cli.group import main
from chatcore.core.settings import Settings
from chatcore.services.library import JobProgress, Library, Passage
from chatcore.services.library.extract import KINDS
from storage import LOCAL_OWNER
from storage import library as store_library

# How often the foreground loop redraws the bar and lets Ctrl-C in (seconds).
_POLL_S = 0.1
_BAR_STEPS = 1000


def encoder(name: str) -> Any:
    """The embedding model ``name``, imported at first use: torch loads only for a collection that has one."""
    from chatcore.engine.embeddings import load_encoder

    return load_encoder(name)


def library_for(settings: Settings, store: Any) -> Library:
    """The library over ``store``, with the settings' limits."""
    return Library.from_settings(settings, store, encoder_for=encoder)


def open_library() -> Library:
    """The library over the command's store (closed when the command ends)."""
    return library_for(click.get_current_context().find_object(Settings) or Settings(), open_store())


def supported_files(paths: tuple[Path, ...], recursive: bool) -> list[Path]:
    """The files named, and the supported files inside the directories named (hidden ones skipped)."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = path.rglob("*") if recursive else path.iterdir()
        inside = sorted(p for p in found if p.is_file() and p.suffix.lower() in KINDS
                        and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not inside:
            click.secho(f"{path}: no supported files inside ({', '.join(sorted(KINDS))})"
                        + ("" if recursive else "; --recursive looks in subdirectories"), err=True)
        files += inside
    return files


@contextlib.contextmanager
def ctrl_c_sets(event: threading.Event) -> Iterator[None]:
    """While the block runs, Ctrl-C sets ``event`` instead of raising; a second Ctrl-C aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_in_foreground(library: Library, job_id: int, verb: str, cancel: threading.Event) -> JobProgress:
    """Run a job on a worker thread with a progress bar on stderr until it ends or ``cancel`` is set.

    ``cancel`` (set by Ctrl-C, see :func:`ctrl_c_sets`) makes the worker leave what it was reading as
    ``cancelled``, never half-written.
    """
    latest: list[JobProgress] = [library.job(LOCAL_OWNER, job_id)]
    failure: list[BaseException] = []

    def work() -> None:
        try:
            latest.append(library.run_job(LOCAL_OWNER, job_id, cancel=cancel, on_progress=latest.append))
        except BaseException as exc:  # recorded on the job row; reported below
            failure.append(exc)

    worker = threading.Thread(target=work, name=f"docs-job-{job_id}", daemon=True)
    told = False
    with click.progressbar(length=_BAR_STEPS, label=verb, file=sys.stderr, show_eta=False, show_percent=True,
                           item_show_func=lambda p: p.describe() if p is not None else None) as bar:
        worker.start()
        while worker.is_alive():
            worker.join(_POLL_S)
            if cancel.is_set() and not told:
                told = True
                library.cancel_job(LOCAL_OWNER, job_id)
            progress = latest[-1]
            bar.update(int(progress.fraction * _BAR_STEPS) - bar.pos, progress)
    if failure and not cancel.is_set():
        raise click.ClickException(f"the job stopped: {failure[0]}")
    return library.job(LOCAL_OWNER, job_id)


def _file_line(name: str, status: str, detail: str) -> str:
    mark = {"ready": "indexed"}.get(status, status)
    if detail.startswith(name):  # the reasons the library gives name the file already
        return f"  {mark:10} {detail}"
    return f"  {mark:10} {name}" + (f": {detail}" if detail else "")


def _outcomes(library: Library, outcomes: list[Any]) -> list[dict[str, Any]]:
    """Each file handed in, with its final status and the reason when it was not indexed."""
    rows = []
    for outcome in outcomes:
        row = {"filename": outcome.filename, "document_id": outcome.document_id, "status": outcome.status,
               "message": outcome.message or None}
        if outcome.status in ("added", "requeued") and outcome.document_id is not None:
            document = library.document(LOCAL_OWNER, outcome.document_id)
            row["status"] = document["status"]
            if document["status"] == "ready":
                row["pages"], row["chunks"] = document["pages"], document["chunks"]
                row["warnings"] = document["warnings"]
            else:
                row["message"] = document["error"]
        rows.append(row)
    return rows


def _detail(row: dict[str, Any]) -> str:
    if row["status"] == "ready":
        pages = f"{row['pages']} page{'s' if row['pages'] != 1 else ''}, {row['chunks']} passages"
        return pages + "".join(f"; warning: {w}" for w in row.get("warnings") or [])
    return row["message"] or ""


@main.group()
def docs() -> None:
    """The library: add papers and notes as documents, search them, answer from them (`chatcore ask --docs`)."""


@docs.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--collection", default=store_library.DEFAULT_COLLECTION, show_default=True,
              help="The collection to add them to (created if new).")
@click.option("--recursive", "-r", is_flag=True, help="Also add the supported files in subdirectories.")
@json_option
@storage_errors
def add(paths: tuple[Path, ...], collection: str, recursive: bool, as_json: bool) -> None:
    """Add files (PDF, DOCX, HTML, Markdown, text) and index them, with a progress bar; Ctrl-C cancels.

    A directory adds the supported files directly inside it (with --recursive, in its subdirectories too).
    A file that cannot be indexed is listed with its reason and does not stop the others; the exit status
    is 1 if any file failed, 130 if cancelled.
    """
    files = supported_files(paths, recursive)
    if not files:
        raise click.ClickException("no files to add")
    library = open_library()
    cancel = threading.Event()
    with ctrl_c_sets(cancel):  # from here on, Ctrl-C cancels the job (or, before it exists, all of it)
        job_id, outcomes = library.add_paths(LOCAL_OWNER, files, collection)
        queued = sum(o.status in ("added", "requeued") for o in outcomes)
        click.echo(f"Indexing {queued} of {len(outcomes)} file{'s' if len(outcomes) != 1 else ''} into collection "
                   f"{collection!r} (job {job_id}; Ctrl-C cancels)…", err=True)
        progress = run_in_foreground(library, job_id, "Indexing", cancel)
    interrupted = cancel.is_set()
    rows = _outcomes(library, outcomes)
    failed = [r for r in rows if r["status"] in ("refused", "failed")]
    if as_json:
        echo_json({"job_id": job_id, "status": progress.status, "collection": collection, "files": rows})
    else:
        for row in rows:
            click.echo(_file_line(row["filename"], row["status"], _detail(row)))
        click.echo(progress.describe().capitalize() + f" (job {job_id}).")
    if interrupted:
        click.echo("Cancelled: files not yet indexed are left cancelled; add them again to index them.", err=True)
        sys.exit(130)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} file{'s' if len(rows) != 1 else ''} "
                                   "could not be indexed (reasons above)")


@docs.command("list")
@click.option("--collection", help="Only this collection's documents.")
@json_option
@storage_errors
def list_(collection: str | None, as_json: bool) -> None:
    """Documents, newest first, with their collection, pages and status."""
    library = open_library()
    if collection is not None:
        store_library.get_collection(library.store, LOCAL_OWNER, collection)  # a wrong name is an error, not "none"
    documents = library.documents(LOCAL_OWNER, collection)
    if as_json:
        echo_json(documents)
        return
    if not documents:
        click.echo("No documents. Add some with: chatcore docs add PATH...")
        return
    click.echo(f"{'ID':>5}  {'STATUS':9}  {'PAGES':>5}  {'COLLECTION':14}  FILE")
    for d in documents:
        click.echo(f"{d['id']:>5}  {d['status']:9}  {d['pages'] or '':>5}  {d['collection'][:14]:14}  {d['filename']}"
                   + (f"  ({d['title']})" if d["title"] else ""))


@docs.command()
@click.argument("document_id", type=int)
@json_option
@storage_errors
def show(document_id: int, as_json: bool) -> None:
    """One document: metadata, pages, passages, status, warnings, extractor and SHA-256."""
    document = open_library().document(LOCAL_OWNER, document_id)
    if as_json:
        echo_json(document)
        return
    click.echo(click.style(document["title"] or document["filename"], bold=True))
    facts = [
        ("document", str(document["id"])), ("file", document["filename"]), ("collection", document["collection"]),
        ("status", document["status"] + (f" ({document['error']})" if document["error"] else "")),
        ("kind", document["kind"]), ("size", f"{document['size']:,} bytes"),
        ("pages", str(document["pages"] or "")), ("passages", str(document["chunks"])),
        ("authors", ", ".join(document["authors"])), ("year", str(document["year"] or "")),
        ("doi", document["doi"] or ""), ("extractor", document["extractor"] or ""),
        ("sha256", document["sha256"]), ("added", local_time(document["created"])),
    ]
    for name, value in facts:
        if value:
            click.echo(f"{name:>10}  {value}")
    for warning in document["warnings"]:
        click.echo(f"{'warning':>10}  {warning}")


def echo_passage(n: int, passage: Passage, text: str | None = None) -> None:
    """``[n] file, page p`` then the passage's text, indented."""
    click.echo(click.style(f"[{n}] {passage.where}", bold=True) + f"  (document {passage.document_id})")
    for line in (text if text is not None else passage.text).splitlines():
        click.echo("    " + line)


@docs.command()
@click.argument("query")
@click.option("--collection", "collections", multiple=True, help="Search only this collection (repeatable).")
@click.option("--limit", default=5, show_default=True, type=click.IntRange(1, 100))
@json_option
@storage_errors
def search(query: str, collections: tuple[str, ...], limit: int, as_json: bool) -> None:
    """The passages that best answer QUERY, with their file and page."""
    from chatcore.services.library import ALL, Scope

    scope = Scope(collections=collections) if collections else ALL
    passages = open_library().search(LOCAL_OWNER, query, scope, k=limit)
    if as_json:
        echo_json([{"n": n, **p.to_dict()} for n, p in enumerate(passages, start=1)])
        return
    if not passages:
        click.echo("No passages match.")
        return
    for n, passage in enumerate(passages, start=1):
        echo_passage(n, passage)


@docs.command()
@click.argument("document_id", type=int)
@json_option
@storage_errors
def remove(document_id: int, as_json: bool) -> None:
    """Remove a document from lists, searches and answers (undo with ``docs restore``)."""
    library = open_library()
    document = library.document(LOCAL_OWNER, document_id)
    library.delete(LOCAL_OWNER, document_id)
    if as_json:
        echo_json({"id": document_id, "deleted": True})
    else:
        click.echo(f"Removed document {document_id} ({document['filename']}). "
                   f"Undo with: chatcore docs restore {document_id}")


@docs.command()
@click.argument("document_id", type=int)
@json_option
@storage_errors
def restore(document_id: int, as_json: bool) -> None:
    """Bring back a removed document."""
    library = open_library()
    library.restore(LOCAL_OWNER, document_id)
    if as_json:
        echo_json({"id": document_id, "deleted": False})
    else:
        click.echo(f"Restored document {document_id} ({library.document(LOCAL_OWNER, document_id)['filename']}).")


@docs.command()
@json_option
@storage_errors
def resume(as_json: bool) -> None:
    """Finish the jobs a crash or restart interrupted (idle for 30 s), here in the foreground."""
    library = open_library()
    resumed = library.resume_interrupted(LOCAL_OWNER, background=False)
    jobs = [library.job(LOCAL_OWNER, job_id) for job_id in resumed]
    if as_json:
        echo_json([_job_dict(job) for job in jobs])
        return
    if not jobs:
        click.echo("No interrupted jobs.")
    for job in jobs:
        click.echo(f"Job {job.job_id}: {job.describe()}.")


def _job_dict(job: JobProgress) -> dict[str, Any]:
    return {"id": job.job_id, "kind": job.kind, "status": job.status, "total": job.total, "done": job.done,
            "failed": job.failed, "error": job.error, "fraction": job.fraction, "describe": job.describe()}


@docs.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
@storage_errors
def jobs(limit: int, as_json: bool) -> None:
    """Ingest and embedding jobs, newest first."""
    library = open_library()
    rows = store_library.list_jobs(library.store, LOCAL_OWNER, limit=limit)
    found = [(row, library.job(LOCAL_OWNER, row["id"])) for row in rows]
    if as_json:
        echo_json([{**_job_dict(job), "created": row["created"], "updated": row["updated"]} for row, job in found])
        return
    if not found:
        click.echo("No jobs.")
        return
    click.echo(f"{'ID':>5}  {'KIND':6}  {'STARTED':16}  PROGRESS")
    for row, job in found:
        click.echo(f"{job.job_id:>5}  {job.kind:6}  {local_time(row['created']):16}  {job.describe()}")


@docs.command()
@click.argument("model")
@click.option("--collection", required=True, help="The collection whose passages to embed.")
@storage_errors
def embed(model: str, collection: str) -> None:
    """Give a collection an embedding MODEL for hybrid search and embed its passages ('none': BM25 only).

    MODEL is a Hugging Face id (e.g. BAAI/bge-small-en-v1.5) or a local directory.
    """
    library = open_library()
    store_library.get_collection(library.store, LOCAL_OWNER, collection)  # before loading any model
    chosen = None if model.lower() == "none" else model
    if chosen:
        click.echo(f"Loading {chosen}…", err=True)
    job_id = library.set_embedding_model(LOCAL_OWNER, collection, chosen, background=False)
    if job_id is None:
        click.echo(f"Collection {collection!r} now uses BM25 search only.")
        return
    cancel = threading.Event()
    with ctrl_c_sets(cancel):
        progress = run_in_foreground(library, job_id, "Embedding", cancel)
    if cancel.is_set():
        click.echo(f"Cancelled after {progress.done} of {progress.total} passages; run the command again to "
                   "embed the rest (search meanwhile uses what is embedded).", err=True)
        sys.exit(130)
    click.echo(f"Collection {collection!r} now uses {chosen}: {progress.describe()}.")


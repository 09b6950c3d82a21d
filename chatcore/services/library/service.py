"""The library service: add files as background jobs with progress and cancel, list, search, cite, show pages.

Every front end (the Library tab, ``chatcore docs``, the API's ``chatcore`` field) goes through :class:`Library`.

A job indexes its documents one at a time; each document's pages and chunks are written in one transaction
with its ``ready`` status, so a crash leaves it ``queued`` or ``indexing``, never half-indexed. A job whose
worker stopped beating (a restart, ``kill -9``) is taken up again by :meth:`Library.resume_interrupted`, which
the server calls at start and ``chatcore docs resume`` calls by hand. One bad file fails alone, with its reason.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from chatcore.core.errors import ChatCoreError, ModelError, ParameterError
from chatcore.services.library.chunking import ChunkSettings, chunk_page
from chatcore.services.library.citations import Evidence, evidence
from chatcore.services.library.extract import (
    Cancelled,
    Refused,
    check_content,
    check_filename,
    extract,
    kind_of,
    render_page,
)
from chatcore.services.library.retrieval import ALL, Passage, Retriever, Scope
from storage import Store
from storage import library as db
from storage.errors import NotFound

log = logging.getLogger(__name__)

# A running job touches its row at least this often; one untouched for STALE_S has no worker left.
BEAT_S = 1.0
STALE_S = 30.0
EMBED_BATCH = 64
MAX_FILES_PER_ADD = 500

ProgressCallback = Callable[["JobProgress"], None]


@dataclass
class AddOutcome:
    """What happened to one file handed to :meth:`Library.add`."""

    filename: str
    status: str  # added, requeued, unchanged, refused
    document_id: int | None = None
    message: str = ""


@dataclass
class JobProgress:
    """A job as a progress bar: documents done of total, and the pages of the one being read."""

    job_id: int
    kind: str
    status: str
    total: int
    done: int
    failed: int
    error: str | None = None
    current: str | None = None  # the file being read
    current_pages: tuple[int, int] | None = None  # (read, of)
    documents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """0 to 1, counting the pages of the document in progress."""
        if self.status == "done" or not self.total:
            return 1.0 if self.status != "running" else 0.0  # done: a file removed meanwhile leaves no gap
        partial = self.current_pages[0] / self.current_pages[1] if self.current_pages and self.current_pages[1] else 0
        return min(1.0, (self.done + self.failed + partial) / self.total)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def describe(self) -> str:
        """One line: ``indexing 2 of 5 files · paper.pdf page 40 of 300`` or how it ended."""
        noun = "files" if self.kind == "ingest" else "passages"
        if self.status == "running":
            line = f"{'indexing' if self.kind == 'ingest' else 'embedding'} {self.done + self.failed} of {self.total} {noun}"
            if self.current and self.current_pages:
                line += f" · {self.current} page {self.current_pages[0]} of {self.current_pages[1]}"
            return line
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.status}: {self.done} of {self.total} {noun} {'indexed' if self.kind == 'ingest' else 'embedded'}{failed}"


class Library:
    """The owner's documents in the store: ingest, retrieval, evidence and pages."""

    def __init__(self, store: Store, *, max_bytes: int = 200 * 2**20, max_pages: int = 5000,
                 chunking: ChunkSettings = ChunkSettings(), encoder_for: Callable[[str], Any] | None = None) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_pages = max_pages
        self.chunking = chunking
        if encoder_for is None:
            from chatcore.engine.embeddings import load_encoder

            encoder_for = load_encoder
        self.encoder_for = encoder_for
        self.retriever = Retriever(store, encoder_for)
        self._cancels: dict[int, threading.Event] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, store: Store, **options: Any) -> "Library":
        """A library with the limits in ``settings`` (``library_max_mb``, ``library_max_pages``)."""
        options.setdefault("chunking", ChunkSettings(chars=settings.library_chunk_chars,
                                                     overlap=settings.library_chunk_overlap))
        return cls(store, max_bytes=int(settings.library_max_mb * 2**20), max_pages=settings.library_max_pages,
                   **options)

    # -- collections --------------------------------------------------------------------------------

    def collections(self, owner: str) -> list[dict[str, Any]]:
        return db.list_collections(self.store, owner)

    def set_embedding_model(self, owner: str, collection: str, model: str | None, *,
                            background: bool = True) -> int | None:
        """Record the collection's embedding model and start the job that embeds its passages; returns its id.

        The model is loaded and tried on a sentence first, so a wrong name (or a model that loads but cannot
        embed) fails here and the collection keeps its old model.
        """
        if model:
            encoder = self.encoder_for(model)
            try:
                encoder.encode(["A sentence to check that the model embeds text."])
            except Exception as exc:
                raise ModelError(f"the embedding model {model!r} loads but cannot embed text "
                                 f"({type(exc).__name__}: {exc})") from exc
        db.set_embedding_model(self.store, owner, collection, model or None)
        self.retriever.forget()
        if not model:
            return None
        row = db.get_collection(self.store, owner, collection)
        job_id = db.create_job(self.store, owner, "embed", collection_id=row["id"],
                               total=db.count_chunks_missing_vectors(self.store, row["id"], model))
        if background:
            self.start_job(owner, job_id)
        return job_id

    # -- ingest ----------------------------------------------------------------------------------------

    def add(self, owner: str, files: Sequence[tuple[str, bytes]], collection: str = db.DEFAULT_COLLECTION,
            ) -> tuple[int, list[AddOutcome]]:
        """Store files and queue them in a new ingest job (run it with :meth:`run_job` or :meth:`start_job`).

        A refused file (bad name, empty, too big, not what its extension says) is recorded as failed with its
        reason and does not stop the others.
        """
        if len(files) > MAX_FILES_PER_ADD:
            raise ChatCoreError(f"{len(files)} files at once is more than {MAX_FILES_PER_ADD}; add them in parts")
        target = db.ensure_collection(self.store, owner, collection)
        job_id = db.create_job(self.store, owner, "ingest", collection_id=target["id"])
        outcomes = []
        settings = self.chunking.to_dict()
        for filename, content in files:
            try:
                check_filename(filename)
            except Refused as exc:  # a name with path parts is never stored, not even as a failed record
                outcomes.append(AddOutcome(str(filename), "refused", None, str(exc)))
                continue
            try:
                kind = kind_of(filename)
                check_content(filename, kind, content, max_bytes=self.max_bytes)
            except Refused as exc:
                document_id = db.add_failed_document(self.store, owner, target["id"], filename=filename,
                                                     content=content, kind="unknown", error=str(exc), job_id=job_id)
                outcomes.append(AddOutcome(str(filename), "refused", document_id, str(exc)))
                continue
            document_id, status = db.add_document(self.store, owner, target["id"], filename=filename,
                                                  content=content, kind=kind, settings=settings, job_id=job_id)
            message = {"unchanged": "already in the library with these settings"}.get(status, "")
            outcomes.append(AddOutcome(filename, status, document_id, message))
        queued = sum(o.status in ("added", "requeued") for o in outcomes)
        refused = sum(o.status == "refused" for o in outcomes)
        db.update_job(self.store, job_id, total=queued + refused, failed=refused)
        return job_id, outcomes

    def add_paths(self, owner: str, paths: Iterable[str | Path], collection: str = db.DEFAULT_COLLECTION,
                  ) -> tuple[int, list[AddOutcome]]:
        """:meth:`add` for files on disk, stored under their base names; unreadable paths are refused alone."""
        files, unreadable = [], []
        for path in map(Path, paths):
            try:
                files.append((path.name, path.read_bytes()))
            except OSError as exc:
                unreadable.append(AddOutcome(path.name or str(path), "refused", None,
                                             f"{path}: {exc.strerror or exc}"))
        job_id, outcomes = self.add(owner, files, collection)
        if unreadable:
            job = db.get_job(self.store, owner, job_id)
            db.update_job(self.store, job_id, total=job["total"] + len(unreadable),
                          failed=job["failed"] + len(unreadable))
        return job_id, outcomes + unreadable

    def start_job(self, owner: str, job_id: int) -> None:
        """Run a job on a background thread; :meth:`job` reports its progress, :meth:`cancel_job` stops it."""
        db.get_job(self.store, owner, job_id)
        thread = threading.Thread(target=self._run_logged, args=(owner, job_id), name=f"library-job-{job_id}",
                                  daemon=True)
        with self._lock:
            if job_id in self._threads and self._threads[job_id].is_alive():
                return  # already running here (a second click, a resume): one worker per job
            self._threads[job_id] = thread
        thread.start()

    def wait(self, job_id: int, timeout: float | None = None) -> None:
        """Block until a background job's thread ends (tests, and the CLI's foreground runs)."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)

    def cancel_job(self, owner: str, job_id: int) -> JobProgress:
        """Stop a running job: the document being read is left un-indexed (``cancelled``), the rest too."""
        job = db.get_job(self.store, owner, job_id)
        if job["status"] == "running":
            with self._lock:
                event = self._cancels.get(job_id)
            if event is not None:
                event.set()
            # A worker in another process sees this at its next beat.
            db.update_job(self.store, job_id, status="cancelled")
            # With no worker at all (never started, or gone), its files would stay queued for good.
            self._stop_unfinished(owner, job_id, "cancelled", "cancelled before it was indexed")
        return self.job(owner, job_id)

    def job(self, owner: str, job_id: int) -> JobProgress:
        """A job's progress; another owner's id is ``NotFound`` like a missing one."""
        row = db.get_job(self.store, owner, job_id)
        documents = db.list_documents(self.store, owner, job_id=job_id)
        current = next((d for d in documents if d["status"] == "indexing"), None)
        return JobProgress(
            job_id=row["id"], kind=row["kind"], status=row["status"], total=row["total"], done=row["done"],
            failed=row["failed"], error=row["error"], current=current["filename"] if current else None,
            current_pages=(current["progress"], current["pages"] or 0) if current and current["pages"] else None,
            documents=documents,
        )

    def active_jobs(self, owner: str) -> list[JobProgress]:
        """The owner's running jobs, newest first."""
        return [self.job(owner, row["id"]) for row in db.list_jobs(self.store, owner, status="running")]

    def run_job(self, owner: str, job_id: int, *, cancel: threading.Event | None = None,
                on_progress: ProgressCallback | None = None) -> JobProgress:
        """Run a job here until it ends; ``cancel`` stops it, ``on_progress`` hears about it at each beat."""
        job = db.get_job(self.store, owner, job_id)
        if job["status"] != "running":  # run again, a cancelled job would end "done: 0 of 3 files indexed"
            return self.job(owner, job_id)
        cancel = cancel or threading.Event()
        with self._lock:
            self._cancels[job_id] = cancel
        try:
            if job["kind"] == "ingest":
                self._ingest(owner, job, cancel, on_progress)
            else:
                self._embed(owner, job, cancel, on_progress)
        except BaseException as exc:
            db.update_job(self.store, job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            self._stop_unfinished(owner, job_id, "failed", f"its job stopped ({type(exc).__name__}: {exc})")
            raise
        finally:
            with self._lock:
                self._cancels.pop(job_id, None)
        self.retriever.forget()
        progress = self.job(owner, job_id)
        _report(on_progress, progress)
        return progress

    def resume_interrupted(self, owner: str | None = None, *, background: bool = True) -> list[int]:
        """Take up jobs whose worker is gone (no beat for ``STALE_S``); returns their ids."""
        cutoff = (datetime.now(timezone.utc) - timedelta(seconds=STALE_S)).isoformat()
        resumed = []
        for job in db.interrupted_jobs(self.store):
            if (owner is not None and job["owner"] != owner) or job["updated"] > cutoff:
                continue
            with self._lock:
                if job["id"] in self._threads and self._threads[job["id"]].is_alive():
                    continue
            if not db.claim_stale_job(self.store, job["id"], cutoff):
                continue  # another process took it up between the list and here
            resumed.append(job["id"])
            if background:
                self.start_job(job["owner"], job["id"])
            else:
                self.run_job(job["owner"], job["id"])
        return resumed

    def reindex_outdated(self, owner: str | None = None, *, background: bool = True) -> list[int]:
        """Queue every ready document indexed with other chunk settings than this library's; returns the job ids.

        One job per owner and collection, so progress and cancel work as for an add.
        """
        settings = self.chunking.to_dict()
        groups: dict[tuple[str, int], list[int]] = {}
        for document in db.documents_with_other_settings(self.store, settings, owner):
            groups.setdefault((document["owner"], document["collection_id"]), []).append(document["id"])
        jobs = []
        for (doc_owner, collection_id), ids in groups.items():
            job_id = db.create_job(self.store, doc_owner, "ingest", collection_id=collection_id, total=len(ids))
            db.requeue_documents(self.store, ids, settings, job_id)
            jobs.append(job_id)
            if background:
                self.start_job(doc_owner, job_id)
            else:
                self.run_job(doc_owner, job_id)
        return jobs

    def _stop_unfinished(self, owner: str, job_id: int, status: str, reason: str) -> None:
        """Mark the job's documents still queued or indexing as ``status``: adding them again requeues them."""
        for document in db.unfinished_documents(self.store, owner, job_id=job_id):
            db.stop_document(self.store, document["id"], status, reason)

    def _run_logged(self, owner: str, job_id: int) -> None:
        try:
            self.run_job(owner, job_id)
        except Exception:  # recorded on the job row by run_job; the thread only logs it
            log.exception("library job %s failed", job_id)

    def _ingest(self, owner: str, job: dict[str, Any], cancel: threading.Event,
                on_progress: ProgressCallback | None) -> None:
        job_id = job["id"]
        beat = _Beat(self, owner, job_id, cancel, on_progress)
        pending = db.unfinished_documents(self.store, owner, job_id=job_id)
        done, failed = job["done"], job["failed"]
        for document in pending:
            if cancel.is_set():
                break
            outcome = self._index_one(owner, document, job_id, cancel, beat)
            done += outcome == "ready"
            failed += outcome == "failed"
            db.update_job(self.store, job_id, done=done, failed=failed)
            beat(force=True)
        if cancel.is_set():
            self._stop_unfinished(owner, job_id, "cancelled", "cancelled before it was indexed")
            db.update_job(self.store, job_id, status="cancelled")
            return
        collection = db.collection_by_id(self.store, owner, job["collection_id"])
        if collection is not None and collection["embedding_model"]:
            self._embed_collection(owner, collection["id"], collection["embedding_model"], cancel, beat=None)
        db.update_job(self.store, job_id, status="done")

    def _index_one(self, owner: str, document: dict[str, Any], job_id: int, cancel: threading.Event,
                   beat: "_Beat") -> str:
        """Index one document; returns its final status. Its failure is its own: the job goes on."""
        document_id, filename = document["id"], document["filename"]
        db.begin_indexing(self.store, document_id, job_id)
        try:
            content = db.document_content(self.store, owner, document_id)
            last = [0.0]

            def progress(read: int, total: int) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.25 or read == total:
                    last[0] = now
                    db.set_progress(self.store, document_id, read, total)
                    beat()

            extracted = extract(filename, document["kind"], content, max_pages=self.max_pages, progress=progress,
                                cancel=cancel)
            settings = ChunkSettings(**{k: v for k, v in document["settings"].items()
                                        if k in ChunkSettings.__dataclass_fields__})
            chunks = [(number, start, end, text[start:end])
                      for number, text in enumerate(extracted.pages, start=1)
                      for start, end in chunk_page(text, settings)]
            if cancel.is_set():
                raise Cancelled(filename)
            db.finish_indexing(self.store, document_id, pages=extracted.pages, chunks=chunks,
                               metadata=extracted.metadata, extractor=extracted.extractor, warnings=extracted.warnings)
            return "ready"
        except Cancelled:
            db.stop_document(self.store, document_id, "cancelled", "cancelled while it was being read")
            return "cancelled"
        except Refused as exc:
            db.stop_document(self.store, document_id, "failed", str(exc))
            return "failed"
        except Exception as exc:  # a damaged file can break an extractor in ways no one lists; keep going
            log.exception("indexing %s failed", filename)
            db.stop_document(self.store, document_id, "failed", f"could not be read ({type(exc).__name__}: {exc})")
            return "failed"

    def _embed(self, owner: str, job: dict[str, Any], cancel: threading.Event,
               on_progress: ProgressCallback | None) -> None:
        collection = db.collection_by_id(self.store, owner, job["collection_id"])
        if collection is None or not collection["embedding_model"]:
            db.update_job(self.store, job["id"], status="done")
            return
        beat = _Beat(self, owner, job["id"], cancel, on_progress)
        self._embed_collection(owner, collection["id"], collection["embedding_model"], cancel, beat, job["id"])
        db.update_job(self.store, job["id"], status="cancelled" if cancel.is_set() else "done")

    def _embed_collection(self, owner: str, collection_id: int, model: str, cancel: threading.Event,
                          beat: "_Beat | None", job_id: int | None = None) -> None:
        encoder = self.encoder_for(model)
        done = 0
        while not cancel.is_set():
            batch = db.chunks_missing_vectors(self.store, collection_id, model, limit=EMBED_BATCH)
            if not batch:
                break
            vectors = np.asarray(encoder.encode([row["text"] for row in batch]), dtype="<f4")
            db.put_vectors(self.store, model, [(row["chunk_id"], vector.tobytes())
                                               for row, vector in zip(batch, vectors)])
            done += len(batch)
            if job_id is not None:
                db.update_job(self.store, job_id, done=done)
            if beat is not None:
                beat(force=True)

    # -- documents ------------------------------------------------------------------------------------

    def documents(self, owner: str, collection: str | None = None) -> list[dict[str, Any]]:
        return db.list_documents(self.store, owner, collection=collection)

    def document(self, owner: str, document_id: int) -> dict[str, Any]:
        return db.get_document(self.store, owner, document_id)

    def delete(self, owner: str, document_id: int) -> None:
        """Hide a document from lists and answers; :meth:`restore` undoes it."""
        document = db.get_document(self.store, owner, document_id)
        if document["status"] == "queued":
            # Its job skips deleted documents: restored later, it would wait for a job that has ended.
            db.stop_document(self.store, document_id, "cancelled", "removed before it was indexed; add it again")
        db.delete_document(self.store, owner, document_id)
        self.retriever.forget()

    def restore(self, owner: str, document_id: int) -> None:
        db.restore_document(self.store, owner, document_id)
        self.retriever.forget()

    def page_text(self, owner: str, document_id: int, page: int) -> str:
        return db.page_text(self.store, owner, document_id, page)

    def page_image(self, owner: str, document_id: int, page: int, *, scale: float = 1.5) -> Any:
        """A PDF page rendered as a PIL image; ``NotFound`` for another owner's document or a non-PDF."""
        document = db.get_document(self.store, owner, document_id)
        if document["kind"] != "pdf":
            raise NotFound(f"document {document_id} is not a PDF: it has no page images")
        if not 1 <= page <= (document["pages"] or 0):
            db.page_text(self.store, owner, document_id, page)  # raises the same NotFound as a missing page's text
        return render_page(document["filename"], db.document_content(self.store, owner, document_id), page,
                           scale=scale)

    # -- retrieval --------------------------------------------------------------------------------------

    def search(self, owner: str, question: str, scope: Scope = ALL, *, k: int = 5) -> list[Passage]:
        """The ``k`` passages that best answer ``question`` within ``scope``, best first."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ParameterError("k", f"the number of passages must be a whole number of at least 1, not {k!r}")
        return self.retriever.search(owner, question, scope, k=k)

    def evidence(self, owner: str, question: str, scope: Scope = ALL, *, k: int = 5) -> list[Evidence]:
        """Evidence mode: ranked passages with their best sentences marked; the model is not asked."""
        return evidence(question, self.search(owner, question, scope, k=k))

    def scope(self, owner: str, conversation_id: int) -> Scope | None:
        return Scope.from_dict(db.conversation_scope(self.store, owner, conversation_id))

    def set_scope(self, owner: str, conversation_id: int, scope: Scope | None) -> None:
        if scope is not None:
            self.retriever.resolve(owner, scope)  # unknown collection names fail before anything is saved
        db.set_conversation_scope(self.store, owner, conversation_id, scope.to_dict() if scope else None)


class _Beat:
    """A job's heartbeat: touches its row, reports progress, and notices a cancel from another process."""

    def __init__(self, library: Library, owner: str, job_id: int, cancel: threading.Event,
                 on_progress: ProgressCallback | None) -> None:
        self.library, self.owner, self.job_id, self.cancel, self.on_progress = library, owner, job_id, cancel, on_progress
        self.last = 0.0

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < BEAT_S:
            return
        self.last = now
        row = db.get_job(self.library.store, self.owner, self.job_id)
        if row["status"] == "cancelled":
            self.cancel.set()
            return
        db.update_job(self.library.store, self.job_id, error=None)  # the touch: updated = now
        if self.on_progress is not None:
            _report(self.on_progress, self.library.job(self.owner, self.job_id))


def _report(on_progress: ProgressCallback | None, progress: JobProgress) -> None:
    """Tell the caller; a progress display that breaks (a closed page) is logged, never blamed on a file."""
    if on_progress is None:
        return
    try:
        on_progress(progress)
    except Exception:
        log.exception("a progress callback of library job %s failed", progress.job_id)

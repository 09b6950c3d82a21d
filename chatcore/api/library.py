"""The library over HTTP: ``/v1/library`` (documents, upload, jobs, search) and the ``chatcore`` field's checks.

Endpoints (same keys as ``/v1``; each runs as the key's owner, and another owner's id answers exactly as a
missing one, 404 with the same message):

- ``GET /v1/library/collections``: the owner's collections with their document and passage counts.
- ``GET /v1/library/documents[?collection=NAME]``: documents, newest first.
- ``POST /v1/library/documents``: ``multipart/form-data`` with one or more files (fields ``file`` or ``files``)
  and an optional ``collection`` (default ``default``). The files are stored and indexed by a background job:
  202 with ``job_id``, the job's progress and each file's outcome (``added``, ``requeued``, ``unchanged``, or
  ``refused`` with the reason; one bad file never stops the others).
- ``GET /v1/library/documents/{id}``; ``DELETE /v1/library/documents/{id}`` (hidden from lists and answers,
  undone by ``POST /v1/library/documents/{id}/restore``).
- ``GET /v1/library/jobs/{id}`` (progress: ``fraction``, ``description``, each document's status and pages
  read; ``finished`` once nothing more will change) and ``POST /v1/library/jobs/{id}/cancel``.
- ``GET /v1/library/search?q=...&collection=NAME&k=5``: the passages that best answer ``q`` (``collection``
  repeatable), each with ``document``, ``page``, ``char_start``, ``char_end`` and ``text``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from chatcore.api.errors import APIError
from chatcore.api.protocol import (
    AssistantMessage,
    ChatCompletionResponse,
    ChatCoreExtension,
    Choice,
    LibraryOptions,
    Usage,
)
from chatcore.api.streams import Reply, numbered
from chatcore.core.errors import ChatCoreError
from chatcore.services.chat import check_user_text
from chatcore.services.library import ALL, AddOutcome, Evidence, JobProgress, Library, Scope
from chatcore.services.library.scopes import EmptyScope, check_scope
from storage.errors import InvalidValue, NotFound
from storage.library import DEFAULT_COLLECTION

MAX_SEARCH_K = 50
_HIDDEN = ("owner", "settings")  # the owner is the caller; chunking settings are an implementation detail


def document_json(document: dict[str, Any]) -> dict[str, Any]:
    """A document as the API shows it."""
    return {"object": "library.document", **{k: v for k, v in document.items() if k not in _HIDDEN}}


def job_json(job: JobProgress) -> dict[str, Any]:
    """A job's progress as the API shows it.

    ``finished`` is true once nothing more will change: a cancelled job's status says so at once, but its
    worker may still be leaving the document it was reading as ``cancelled``.
    """
    settled = all(d["status"] not in ("queued", "indexing") for d in job.documents)
    return {
        "object": "library.job", "id": job.job_id, "kind": job.kind, "status": job.status,
        "finished": job.finished and settled, "total": job.total,
        "done": job.done, "failed": job.failed, "error": job.error, "fraction": round(job.fraction, 4),
        "description": job.describe(), "current": job.current,
        "current_pages": list(job.current_pages) if job.current_pages else None,
        "documents": [{"id": d["id"], "filename": d["filename"], "status": d["status"], "error": d["error"],
                       "pages": d["pages"], "pages_read": d["progress"]} for d in job.documents],
    }


def too_big(filename: str, size: int, limit: int) -> str:
    """The library's own words for a file over its size limit."""
    return (f"{filename} is {size / 2**20:.1f} MiB, over the limit of {limit / 2**20:.0f} MiB "
            "(set CHATCORE_LIBRARY_MAX_MB to raise it)")


def parse_id(value: str, what: str) -> int:
    """A path's numeric id; anything else is the same 404 as a missing id."""
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < 1 or str(number) != value:
        raise APIError(404, f"no {what} {value}", code=f"{what}_not_found")
    return number


def not_found(exc: NotFound, what: str, param: str | None = None) -> APIError:
    return APIError(404, str(exc), param=param, code=f"{what}_not_found")


async def owned(what: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` off the event loop; a ``NotFound`` (another owner's id, or none) as the same 404."""
    try:
        return await run_in_threadpool(call, *args)
    except NotFound as exc:
        raise not_found(exc, what) from None


def resolve_scope(library: Library | None, owner: str, options: LibraryOptions) -> Scope:
    """The scope the request's ``chatcore`` field names, checked (blocking: call off the loop).

    404 for an unknown collection or a document id that is missing or another owner's (alike); 400 when
    nothing in the scope is indexed yet.
    """
    if library is None:
        raise APIError(400, "this server keeps no history, so it has no library to answer from", param="chatcore")
    scope = options.scope()
    try:
        check_scope(library, owner, scope)
    except NotFound as exc:
        field = "collections" if options.collections is not None else "documents"
        raise not_found(exc, field[:-1], f"chatcore.{field}") from None
    except EmptyScope as exc:
        raise APIError(400, f"{exc}: add documents with POST /v1/library/documents", param="chatcore",
                       code="no_documents") from None
    return scope


def evidence_text(found: list[Evidence], scope: Scope) -> str:
    """Evidence as an assistant message any client can show: ``[n] file, page p`` and the passage, best sentences in bold."""
    if not found:
        return f"No passages in {scope.describe()} match the question."
    blocks = []
    for item in found:
        text, out, last = item.passage.text, [], 0
        for start, end in item.highlights:
            out += [text[last:start], f"**{text[start:end].strip()}**"]
            last = end
        out.append(text[last:])
        blocks.append(f"[{item.n}] {item.passage.where}\n{''.join(out)}")
    return "\n\n".join(blocks)


def evidence_completion(reply: Reply, found: list[Evidence], scope: Scope) -> ChatCompletionResponse:
    """Evidence mode's answer: a ``chat.completion`` whose text lists the passages; nothing was generated."""
    reply.scope = scope.to_dict()
    extension = ChatCoreExtension(scope=reply.scope, sources=numbered([e.passage for e in found]),
                                  evidence=[e.to_dict() for e in found])
    return ChatCompletionResponse(
        id=reply.id, created=reply.created, model=reply.model,
        choices=[Choice(message=AssistantMessage(content=evidence_text(found, scope)), finish_reason="stop")],
        usage=Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0), chatcore=extension)


class LibraryServing:
    """The ``/v1/library`` endpoints over one library; ``authenticate`` says who a request runs as."""

    def __init__(self, library: Library | None, authenticate: Callable[[Request], Awaitable[str]]) -> None:
        self.library = library
        self.authenticate = authenticate

    async def _owner(self, raw: Request) -> tuple[str, Library]:
        owner = await self.authenticate(raw)
        if self.library is None:
            raise APIError(404, "this server keeps no history, so it has no library", code="no_library")
        return owner, self.library

    async def collections(self, raw: Request) -> Response:
        owner, library = await self._owner(raw)
        rows = await run_in_threadpool(library.collections, owner)
        return JSONResponse({"object": "list", "data": [{"object": "library.collection", **r} for r in rows]})

    async def list_documents(self, raw: Request) -> Response:
        owner, library = await self._owner(raw)
        collection = raw.query_params.get("collection")

        def listing() -> list[dict[str, Any]]:
            if collection is not None:
                try:
                    library.retriever.resolve(owner, Scope(collections=(collection,)))
                except NotFound as exc:
                    raise not_found(exc, "collection", "collection") from None
            return library.documents(owner, collection)

        documents = await run_in_threadpool(listing)
        return JSONResponse({"object": "list", "data": [document_json(d) for d in documents]})

    async def upload(self, raw: Request) -> Response:
        """Store the files, queue them in a job that runs in the background; 202 with each file's outcome."""
        owner, library = await self._owner(raw)
        kind = raw.headers.get("content-type", "")
        if not kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise APIError(400, "send the files as multipart/form-data (fields 'file' or 'files', and 'collection')",
                           param="file")
        try:
            form = await raw.form(max_files=1000)
        except Exception as exc:  # a malformed or over-long multipart body
            raise APIError(400, f"the multipart body could not be read: {exc}", param="file") from None
        try:
            uploads = [item for key in ("file", "files") for item in form.getlist(key) if not isinstance(item, str)]
            texts = [key for key in ("file", "files") for item in form.getlist(key) if isinstance(item, str)]
            if texts:
                raise APIError(400, f"the field {texts[0]!r} must be a file, not text", param=texts[0])
            if not uploads:
                raise APIError(400, "no files: send one or more in the field 'file' (or 'files')", param="file")
            collection = form.get("collection") or DEFAULT_COLLECTION
            if not isinstance(collection, str):
                raise APIError(400, "collection must be text", param="collection")
            files, oversized = [], []
            for upload in uploads:
                name = upload.filename or ""
                if upload.size is not None and upload.size > library.max_bytes:  # never read into memory
                    oversized.append(AddOutcome(name, "refused", None, too_big(name, upload.size, library.max_bytes)))
                else:
                    files.append((name, await upload.read()))
        finally:
            await form.close()

        def add() -> tuple[int, list[Any], JobProgress]:
            try:
                job_id, outcomes = library.add(owner, files, collection)
                outcomes += oversized
            except InvalidValue as exc:
                raise APIError(400, str(exc), param="collection") from None
            except ChatCoreError as exc:  # too many files at once
                raise APIError(400, str(exc), param="file") from None
            library.start_job(owner, job_id)
            return job_id, outcomes, library.job(owner, job_id)

        job_id, outcomes, job = await run_in_threadpool(add)
        return JSONResponse(status_code=202, content={
            "object": "library.upload", "job_id": job_id, "collection": collection.strip(), "job": job_json(job),
            "files": [{"filename": o.filename, "status": o.status, "document_id": o.document_id,
                       "message": o.message or None} for o in outcomes],
        })

    async def get_document(self, raw: Request, document_id: str) -> Response:
        owner, library = await self._owner(raw)
        number = parse_id(document_id, "document")
        document = await owned("document", library.document, owner, number)
        return JSONResponse(document_json(document))

    async def delete_document(self, raw: Request, document_id: str) -> Response:
        owner, library = await self._owner(raw)
        number = parse_id(document_id, "document")
        await owned("document", library.delete, owner, number)
        return JSONResponse({"id": number, "object": "library.document", "deleted": True,
                             "restore": f"POST /v1/library/documents/{number}/restore"})

    async def restore_document(self, raw: Request, document_id: str) -> Response:
        owner, library = await self._owner(raw)
        number = parse_id(document_id, "document")
        await owned("document", library.restore, owner, number)
        return JSONResponse({"id": number, "object": "library.document", "deleted": False})

    async def get_job(self, raw: Request, job_id: str) -> Response:
        owner, library = await self._owner(raw)
        number = parse_id(job_id, "job")
        job = await owned("job", library.job, owner, number)
        return JSONResponse(job_json(job))

    async def cancel_job(self, raw: Request, job_id: str) -> Response:
        owner, library = await self._owner(raw)
        number = parse_id(job_id, "job")
        job = await owned("job", library.cancel_job, owner, number)
        return JSONResponse(job_json(job))

    async def search(self, raw: Request) -> Response:
        owner, library = await self._owner(raw)
        query = raw.query_params.get("q")
        if query is None:
            raise APIError(400, "q is required: the question to find passages for", param="q")
        try:
            check_user_text(query, "q")
        except ChatCoreError as exc:
            raise APIError(400, str(exc), param="q") from None
        k = raw.query_params.get("k", "5")
        if not k.isdigit() or not 1 <= int(k) <= MAX_SEARCH_K:
            raise APIError(400, f"k must be an integer in the range [1, {MAX_SEARCH_K}], got {k!r}", param="k")
        names = raw.query_params.getlist("collection")
        scope = Scope(collections=tuple(dict.fromkeys(names))) if names else ALL

        def find() -> list[Any]:
            try:
                return library.search(owner, query, scope, k=int(k))
            except NotFound as exc:
                raise not_found(exc, "collection", "collection") from None

        passages = await run_in_threadpool(find)
        return JSONResponse({"object": "list", "data": numbered(passages)})

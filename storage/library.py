"""The library: documents, their pages and chunks, a BM25 index over FTS5, vectors, ingest jobs and citations.

Plain functions over a :class:`~storage.store.Store`, like ``storage.notes``. Extraction, chunking and
embedding happen above (``chatcore.services.library``); this module only keeps what they produce.

Ownership: another owner's document, collection or job id raises the same ``NotFound`` as a missing one,
and no search ever returns another owner's chunk.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from storage.db import immediate
from storage.errors import InvalidValue, NotFound
from storage.store import Store, dump_json, inserted_id, load_json
from storage.transfer import utc_now

DEFAULT_COLLECTION = "default"
COLLECTION_NAME_MAX_CHARS = 100
STATUSES = ("queued", "indexing", "ready", "failed", "cancelled")
UNFINISHED = ("queued", "indexing")

_DOCUMENT_COLUMNS = (
    "d.id, d.owner, d.collection_id, c.name AS collection, d.filename, d.sha256, d.size, d.kind, d.pages,"
    " d.title, d.authors, d.year, d.doi, d.extractor, d.settings, d.status, d.progress, d.error, d.warnings,"
    " d.chunks, d.job_id, d.created, d.updated"
)
_CHUNK_COLUMNS = (
    "ch.id AS chunk_id, ch.document_id, ch.ordinal, ch.page, ch.char_start, ch.char_end, ch.text,"
    " d.filename, d.title, d.kind, d.pages, c.name AS collection"
)
_JOB_COLUMNS = "id, owner, kind, collection_id, status, total, done, failed, error, created, updated"

# Words too common to rank by; dropping them from a question keeps an OR query over 100,000 chunks fast.
STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or
    other our ours out over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours""".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)
# FTS5's bm25() costs about 10 µs a matching row on a 2-core machine: an OR of common words over 100,000 chunks
# matches most of them and takes most of a second. Above this many matches the commonest terms (the ones BM25
# weighs least) are left out of the ranking query; see narrow_query.
RANK_BUDGET = 2000
_OR_OF_TERMS = re.compile(r'"[^"]+"(?: OR "[^"]+")*')


def question_terms(text: str, *, max_terms: int = 32) -> list[str]:
    """A question's content words, lower-cased, in order, without repeats, stopwords or single letters."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or word in terms or (len(word) == 1 and not word.isdigit()):
            continue
        terms.append(word)
    return terms[:max_terms]


def question_query(text: str, *, max_terms: int = 32) -> str | None:
    """A question as an FTS5 query: its content words, each quoted, any of them (BM25 ranks by how many).

    Returns ``None`` when nothing searchable is left (blank text, or only stopwords).
    """
    return " OR ".join(f'"{t}"' for t in question_terms(text, max_terms=max_terms)) or None


def sha256_hex(content: bytes) -> str:
    """The hex SHA-256 a document's bytes are stored under."""
    return hashlib.sha256(content).hexdigest()


# -- collections -------------------------------------------------------------------------------------


def check_collection_name(name: Any) -> str:
    """A collection name, stripped, or ``InvalidValue`` saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue("the collection name is empty")
    name = name.strip()
    if len(name) > COLLECTION_NAME_MAX_CHARS:
        raise InvalidValue(f"the collection name is longer than {COLLECTION_NAME_MAX_CHARS} characters")
    if any(ord(ch) < 32 for ch in name):
        raise InvalidValue("the collection name contains a control character")
    return name


def ensure_collection(store: Store, owner: str, name: str = DEFAULT_COLLECTION) -> dict[str, Any]:
    """The owner's collection called ``name``, created if it does not exist yet."""
    name = check_collection_name(name)
    with immediate(store.db):
        store.ensure_user(owner, utc_now())
        store.db.conn.execute(
            "INSERT OR IGNORE INTO collections (owner, name, created) VALUES (?, ?, ?)", (owner, name, utc_now()))
    return get_collection(store, owner, name)


def get_collection(store: Store, owner: str, name: str) -> dict[str, Any]:
    """The owner's collection called ``name``; ``NotFound`` otherwise."""
    rows = store.rows("SELECT * FROM collections WHERE owner = ? AND name = ?", (owner, name))
    if not rows:
        raise NotFound(f"no collection named {name!r}")
    return rows[0]


def collection_by_id(store: Store, owner: str, collection_id: int | None) -> dict[str, Any] | None:
    """The owner's collection with this id, or ``None`` (a job's collection may have been removed)."""
    rows = store.rows("SELECT * FROM collections WHERE id = ? AND owner = ?", (collection_id, owner))
    return rows[0] if rows else None


def collections_of(store: Store, owner: str) -> list[dict[str, Any]]:
    """The owner's collection rows, without counting their documents (what retrieval needs on every question)."""
    return store.rows("SELECT * FROM collections WHERE owner = ? ORDER BY name", (owner,))


def list_collections(store: Store, owner: str) -> list[dict[str, Any]]:
    """The owner's collections with how many live documents and chunks each holds."""
    return store.rows(
        """SELECT c.id, c.name, c.embedding_model, c.created,
                  COUNT(d.id) AS documents, COALESCE(SUM(d.chunks), 0) AS chunks
           FROM collections c LEFT JOIN documents d ON d.collection_id = c.id AND d.deleted_at IS NULL
           WHERE c.owner = ? GROUP BY c.id ORDER BY c.name""",
        (owner,),
    )


def set_embedding_model(store: Store, owner: str, name: str, model: str | None) -> dict[str, Any]:
    """Record the collection's embedding model (``None``: BM25 only); vectors of another model stay until replaced."""
    collection = get_collection(store, owner, name)
    store.db.conn.execute("UPDATE collections SET embedding_model = ? WHERE id = ?", (model, collection["id"]))
    return get_collection(store, owner, name)


# -- documents -----------------------------------------------------------------------------------------


def add_document(
    store: Store,
    owner: str,
    collection_id: int,
    *,
    filename: str,
    content: bytes,
    kind: str,
    settings: dict[str, Any],
    job_id: int | None = None,
) -> tuple[int, str]:
    """Store a file and queue it for indexing; returns its id and what happened.

    What happened is ``"added"``, ``"unchanged"`` (the same bytes are already indexed with the same settings:
    nothing to do), or ``"requeued"`` (the same bytes with other settings, or a failed, cancelled or deleted
    earlier copy: it is indexed again). Identical bytes are stored once, whoever adds them.
    """
    digest, now = sha256_hex(content), utc_now()
    with immediate(store.db):
        conn = store.db.conn
        if not conn.execute("SELECT 1 FROM collections WHERE id = ? AND owner = ?", (collection_id, owner)).fetchone():
            raise NotFound(f"no collection {collection_id}")
        # A refused file left only an empty placeholder under its digest (add_failed_document): fill it now.
        conn.execute("INSERT INTO library_files (sha256, size, content) VALUES (?, ?, ?) ON CONFLICT (sha256) "
                     "DO UPDATE SET content = excluded.content WHERE length(library_files.content) != library_files.size",
                     (digest, len(content), content))
        row = conn.execute("SELECT d.id, d.status, d.settings, d.deleted_at, d.collection_id, j.status "
                           "FROM documents d LEFT JOIN library_jobs j ON j.id = d.job_id "
                           "WHERE d.owner = ? AND d.sha256 = ?", (owner, digest)).fetchone()
        if row is None:
            cursor = conn.execute(
                """INSERT INTO documents (owner, collection_id, filename, sha256, size, kind, settings, status,
                                          job_id, created, updated)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)""",
                (owner, collection_id, filename, digest, len(content), kind, dump_json(settings), job_id, now, now),
            )
            return inserted_id(cursor), "added"
        document_id, status, old_settings, deleted_at, old_collection, job_status = row
        same = load_json(old_settings) == settings and old_collection == collection_id
        if status == "ready" and same and deleted_at is None:
            return document_id, "unchanged"
        if status in UNFINISHED and same and deleted_at is None and job_status == "running":
            return document_id, "unchanged"  # already queued: its job will index it (an ended job never will)
        conn.execute(
            """UPDATE documents SET collection_id = ?, filename = ?, kind = ?, settings = ?, status = 'queued',
                      progress = 0, error = NULL, job_id = ?, deleted_at = NULL, updated = ? WHERE id = ?""",
            (collection_id, filename, kind, dump_json(settings), job_id, now, document_id),
        )
        return document_id, "requeued"


def add_failed_document(store: Store, owner: str, collection_id: int, *, filename: str, content: bytes,
                        kind: str, error: str, job_id: int | None = None) -> int:
    """Record a file refused before indexing (its reason kept for the user); its bytes are not stored."""
    digest, now = sha256_hex(content), utc_now()
    with immediate(store.db):
        conn = store.db.conn
        existing = conn.execute("SELECT id, status FROM documents WHERE owner = ? AND sha256 = ?",
                                (owner, digest)).fetchone()
        if existing is not None:
            return existing[0]  # the same bytes are already known: their record stands
        # A refused file keeps no bytes, but the foreign key wants a row: an empty placeholder per digest.
        conn.execute("INSERT OR IGNORE INTO library_files (sha256, size, content) VALUES (?, ?, ?)",
                     (digest, len(content), b""))
        cursor = conn.execute(
            """INSERT INTO documents (owner, collection_id, filename, sha256, size, kind, settings, status, error,
                                      job_id, created, updated)
               VALUES (?, ?, ?, ?, ?, ?, '{}', 'failed', ?, ?, ?, ?)""",
            (owner, collection_id, filename, digest, len(content), kind, error, job_id, now, now),
        )
        return inserted_id(cursor)


def get_document(store: Store, owner: str, document_id: int) -> dict[str, Any]:
    """One of the owner's live documents; another owner's id, or a deleted one, is ``NotFound`` alike."""
    rows = store.rows(f"SELECT {_DOCUMENT_COLUMNS} FROM documents d JOIN collections c ON c.id = d.collection_id "
                      "WHERE d.id = ? AND d.owner = ? AND d.deleted_at IS NULL", (document_id, owner))
    if not rows:
        raise NotFound(f"no document {document_id}")
    return _document(rows[0])


def list_documents(store: Store, owner: str, *, collection: str | None = None, status: str | None = None,
                   job_id: int | None = None) -> list[dict[str, Any]]:
    """The owner's live documents, newest first, optionally of one collection, status or job."""
    rows = store.rows(
        f"""SELECT {_DOCUMENT_COLUMNS} FROM documents d JOIN collections c ON c.id = d.collection_id
            WHERE d.owner = ? AND d.deleted_at IS NULL AND (? IS NULL OR c.name = ?) AND (? IS NULL OR d.status = ?)
                  AND (? IS NULL OR d.job_id = ?)
            ORDER BY d.id DESC""",
        (owner, collection, collection, status, status, job_id, job_id),
    )
    return [_document(row) for row in rows]


def delete_document(store: Store, owner: str, document_id: int) -> None:
    """Hide a document from lists and searches; :func:`restore_document` undoes it."""
    get_document(store, owner, document_id)
    store.db.conn.execute("UPDATE documents SET deleted_at = ? WHERE id = ?", (utc_now(), document_id))


def restore_document(store: Store, owner: str, document_id: int) -> None:
    """Undo :func:`delete_document`; ``NotFound`` for another owner's or a live document alike."""
    cursor = store.db.conn.execute("UPDATE documents SET deleted_at = NULL WHERE id = ? AND owner = ? "
                                   "AND deleted_at IS NOT NULL", (document_id, owner))
    if cursor.rowcount == 0:
        raise NotFound(f"no deleted document {document_id}")


def purge_deleted_documents(store: Store, owner: str) -> int:
    """Remove the owner's deleted documents for good (chunks, pages, vectors), and bytes nobody else holds."""
    with immediate(store.db):
        conn = store.db.conn
        count = conn.execute("DELETE FROM documents WHERE owner = ? AND deleted_at IS NOT NULL", (owner,)).rowcount
        conn.execute("DELETE FROM library_files WHERE sha256 NOT IN (SELECT sha256 FROM documents)")
    return count


def unfinished_documents(store: Store, owner: str | None = None, *,
                         job_id: int | None = None) -> list[dict[str, Any]]:
    """Documents still queued or indexing (an ingest cut short by a restart), oldest first, optionally of one job."""
    rows = store.rows(
        f"""SELECT {_DOCUMENT_COLUMNS} FROM documents d JOIN collections c ON c.id = d.collection_id
            WHERE d.status IN ('queued', 'indexing') AND d.deleted_at IS NULL AND (? IS NULL OR d.owner = ?)
                  AND (? IS NULL OR d.job_id = ?)
            ORDER BY d.id""",
        (owner, owner, job_id, job_id),
    )
    return [_document(row) for row in rows]


def documents_with_other_settings(store: Store, settings: dict[str, Any],
                                  owner: str | None = None) -> list[dict[str, Any]]:
    """Ready, live documents whose chunks were cut with settings other than ``settings``."""
    rows = store.rows(
        "SELECT id, owner, collection_id, settings FROM documents WHERE status = 'ready' AND deleted_at IS NULL "
        "AND (? IS NULL OR owner = ?) ORDER BY id", (owner, owner))
    return [row for row in rows if load_json(row["settings"]) != settings]


def requeue_documents(store: Store, document_ids: Sequence[int], settings: dict[str, Any], job_id: int) -> None:
    """Queue documents to be indexed again with ``settings`` by ``job_id``; they stay searchable until then."""
    with immediate(store.db):
        store.db.conn.executemany(
            "UPDATE documents SET status = 'queued', settings = ?, job_id = ?, progress = 0, updated = ? WHERE id = ?",
            [(dump_json(settings), job_id, utc_now(), document_id) for document_id in document_ids])


def document_content(store: Store, owner: str, document_id: int) -> bytes:
    """The bytes of one of the owner's documents, as added."""
    document = get_document(store, owner, document_id)
    row = store.db.conn.execute("SELECT content FROM library_files WHERE sha256 = ?", (document["sha256"],)).fetchone()
    return bytes(row[0])


def begin_indexing(store: Store, document_id: int, job_id: int | None) -> None:
    """Mark a document as being indexed by ``job_id``."""
    store.db.conn.execute("UPDATE documents SET status = 'indexing', progress = 0, error = NULL, job_id = ?, "
                          "updated = ? WHERE id = ?", (job_id, utc_now(), document_id))


def set_progress(store: Store, document_id: int, pages_done: int, pages: int | None = None) -> None:
    """How many pages of a document have been read (shown as its progress bar)."""
    store.db.conn.execute("UPDATE documents SET progress = ?, pages = COALESCE(?, pages) WHERE id = ?",
                          (pages_done, pages, document_id))


def finish_indexing(
    store: Store,
    document_id: int,
    *,
    pages: Sequence[str],
    chunks: Iterable[tuple[int, int, int, str]],
    metadata: dict[str, Any],
    extractor: str,
    warnings: Sequence[str] = (),
) -> int:
    """Replace a document's pages and chunks and mark it ready, all in one transaction; returns the chunk count.

    ``chunks`` are ``(page, char_start, char_end, text)`` with 1-based pages and offsets into that page's text.
    """
    with immediate(store.db):
        conn = store.db.conn
        conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        conn.execute("DELETE FROM document_pages WHERE document_id = ?", (document_id,))
        conn.executemany("INSERT INTO document_pages (document_id, page, text) VALUES (?, ?, ?)",
                         [(document_id, number, text) for number, text in enumerate(pages, start=1)])
        rows = [(document_id, ordinal, page, start, end, text)
                for ordinal, (page, start, end, text) in enumerate(chunks)]
        conn.executemany("INSERT INTO chunks (document_id, ordinal, page, char_start, char_end, text) "
                         "VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.execute(
            """UPDATE documents SET status = 'ready', pages = ?, progress = ?, chunks = ?, title = ?, authors = ?,
                      year = ?, doi = ?, extractor = ?, warnings = ?, error = NULL, updated = ? WHERE id = ?""",
            (len(pages), len(pages), len(rows), metadata.get("title"), dump_json(list(metadata.get("authors") or [])),
             metadata.get("year"), metadata.get("doi"), extractor, dump_json(list(warnings)), utc_now(), document_id),
        )
    return len(rows)


def stop_document(store: Store, document_id: int, status: str, error: str | None) -> None:
    """Mark a document failed or cancelled, with the reason; its earlier chunks (if any) are removed with it."""
    if status not in ("failed", "cancelled", "queued"):
        raise InvalidValue(f"a document cannot be stopped as {status!r}")
    with immediate(store.db):
        store.db.conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        store.db.conn.execute("UPDATE documents SET status = ?, error = ?, chunks = 0, updated = ? WHERE id = ?",
                              (status, error, utc_now(), document_id))


def page_text(store: Store, owner: str, document_id: int, page: int) -> str:
    """The text of one page of the owner's document, as its chunks' offsets index it."""
    get_document(store, owner, document_id)
    row = store.db.conn.execute("SELECT text FROM document_pages WHERE document_id = ? AND page = ?",
                                (document_id, page)).fetchone()
    if row is None:
        raise NotFound(f"document {document_id} has no page {page}")
    return row[0]


# -- retrieval --------------------------------------------------------------------------------------------


def _scope_sql(owner: str, collection_ids: Sequence[int] | None,
               document_ids: Sequence[int] | None) -> tuple[str, list[Any]]:
    """The WHERE clause (over ``d``) that keeps retrieval to the owner's live, indexed documents in scope.

    A document queued to be indexed again keeps its old chunks (replaced in one transaction) and stays
    searchable meanwhile; a failed or cancelled one has none.
    """
    sql, params = "d.owner = ? AND d.status IN ('ready', 'queued', 'indexing') AND d.deleted_at IS NULL", [owner]
    if collection_ids is not None:
        sql += f" AND d.collection_id IN ({','.join('?' * len(collection_ids)) or 'NULL'})"
        params += list(collection_ids)
    if document_ids is not None:
        sql += f" AND d.id IN ({','.join('?' * len(document_ids)) or 'NULL'})"
        params += list(document_ids)
    return sql, params


def search_chunks(store: Store, owner: str, query: str, *, limit: int = 20,
                  collection_ids: Sequence[int] | None = None,
                  document_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The owner's chunks that best match an FTS5 ``query`` by BM25, best first, each with its ``score``.

    ``score`` is FTS5's ``bm25()``: lower is better. The index is kept in sync by triggers, never rebuilt
    at query time. A question's OR of terms that matches more than ``RANK_BUDGET`` chunks is narrowed first
    (:func:`narrowed_queries`). When the scope leaves out most of a narrowed query's matches and fewer than
    ``limit`` remain (another owner's chunks hold its rare terms), the next, wider query is run, ending with
    ``query`` itself. The ranking reads ids and scores; the text of the best is read after.
    """
    where, params = _scope_sql(owner, collection_ids, document_ids)
    attempts = narrowed_queries(store, query, budget=RANK_BUDGET)  # read at call time: tests lower it
    for attempt in attempts:
        ranked = store.db.conn.execute(
            f"""SELECT ch.id, bm25(chunks_fts) AS score
                FROM chunks_fts JOIN chunks ch ON ch.id = chunks_fts.rowid
                JOIN documents d ON d.id = ch.document_id
                WHERE chunks_fts MATCH ? AND {where} ORDER BY score LIMIT ?""",
            (attempt, *params, limit),
        ).fetchall()
        # Widen only when the scope hid most of what this attempt matched (another owner's documents, or
        # other collections, hold its rare terms): a few hidden matches are no reason for the slow full query.
        if len(ranked) >= limit or attempt is attempts[-1] or 2 * len(ranked) >= _matches(store, attempt, limit):
            break
    scores = dict(ranked)
    rows = chunks_by_id(store, owner, list(scores))  # in rank order; one deleted meanwhile is left out
    for row in rows:
        row["score"] = scores[row["chunk_id"]]
    return rows


def narrowed_queries(store: Store, query: str, *, budget: int = RANK_BUDGET) -> list[str]:
    """The queries :func:`search_chunks` tries in turn, narrowest first, always ending with ``query`` itself.

    Only an OR of quoted terms (:func:`question_query`) that matches more than ``budget`` chunks of the whole
    index is narrowed: first to the chunks holding one of its rarest terms, those whose matches add up to at
    most ``budget``, ranked by all its terms. BM25 weighs a term by how rare it is, so the chunks left out are
    those holding only the terms that move the ranking least. When even the rarest term is that common, the
    chunks holding both of the two rarest come first. Counting stops at ``budget`` + 1 rows, so narrowing
    stays cheap.
    """
    if not _OR_OF_TERMS.fullmatch(query) or _matches(store, query, budget) <= budget:
        return [query]
    counted = sorted((count, term) for term in query.split(" OR ") if (count := _matches(store, term, budget)))
    kept, total = [], 0
    for count, term in counted:
        if kept and total + count > budget:
            break
        kept.append(term)
        total += count
    narrow = [" OR ".join(kept)] if kept else []
    if total > budget and len(counted) > 1:
        narrow.insert(0, f"{counted[0][1]} AND {counted[1][1]}")
    # "(narrow) AND (query)" matches what the narrow part matches, but BM25 then scores every term of the
    # question (the rare ones twice): at 100,000 chunks that lifted recall@5 of the gold questions from 68%
    # (rare terms alone) to 84%, against 90-94% for the whole query, for a few ms more (docs/library.md).
    return [f"({part}) AND ({query})" for part in narrow] + [query]


def _matches(store: Store, query: str, cap: int) -> int:
    """How many chunks match ``query``, counted up to ``cap`` + 1."""
    return store.db.conn.execute("SELECT COUNT(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                                 (query, cap + 1)).fetchone()[0]


def chunks_by_id(store: Store, owner: str, chunk_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The owner's ready chunks with these ids, in the order given (ids of others are left out)."""
    if not chunk_ids:
        return []
    where, params = _scope_sql(owner, None, None)
    # CROSS JOIN keeps the chunks (looked up by id) as the outer loop: left to itself, SQLite may walk every
    # chunk of the owner's documents instead (70 ms at 100,000 chunks, against 1 ms).
    rows = store.rows(
        f"""SELECT {_CHUNK_COLUMNS} FROM chunks ch CROSS JOIN documents d ON d.id = ch.document_id
            JOIN collections c ON c.id = d.collection_id
            WHERE ch.id IN ({','.join('?' * len(chunk_ids))}) AND {where}""",
        (*chunk_ids, *params),
    )
    by_id = {row["chunk_id"]: row for row in rows}
    return [by_id[i] for i in chunk_ids if i in by_id]


def vectors_in_scope(store: Store, owner: str, model: str, *, collection_ids: Sequence[int] | None = None,
                     document_ids: Sequence[int] | None = None) -> tuple[list[int], list[bytes]]:
    """The chunk ids and float32 vectors made by ``model`` for the owner's chunks in scope."""
    where, params = _scope_sql(owner, collection_ids, document_ids)
    rows = store.db.conn.execute(
        f"""SELECT v.chunk_id, v.vector FROM chunk_vectors v JOIN chunks ch ON ch.id = v.chunk_id
            JOIN documents d ON d.id = ch.document_id WHERE v.model = ? AND {where} ORDER BY v.chunk_id""",
        (model, *params),
    ).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def chunks_missing_vectors(store: Store, collection_id: int, model: str, *, limit: int = 256) -> list[dict[str, Any]]:
    """Up to ``limit`` ready chunks of a collection with no vector from ``model`` yet."""
    return store.rows(
        """SELECT ch.id AS chunk_id, ch.text FROM chunks ch JOIN documents d ON d.id = ch.document_id
           LEFT JOIN chunk_vectors v ON v.chunk_id = ch.id AND v.model = ?
           WHERE d.collection_id = ? AND d.status = 'ready' AND v.chunk_id IS NULL ORDER BY ch.id LIMIT ?""",
        (model, collection_id, limit),
    )


def count_chunks_missing_vectors(store: Store, collection_id: int, model: str) -> int:
    """How many ready chunks of a collection still need a vector from ``model``."""
    return store.db.conn.execute(
        """SELECT COUNT(*) FROM chunks ch JOIN documents d ON d.id = ch.document_id
           LEFT JOIN chunk_vectors v ON v.chunk_id = ch.id AND v.model = ?
           WHERE d.collection_id = ? AND d.status = 'ready' AND v.chunk_id IS NULL""",
        (model, collection_id),
    ).fetchone()[0]


def put_vectors(store: Store, model: str, vectors: Iterable[tuple[int, bytes]]) -> None:
    """Store (or replace) chunk vectors made by ``model``, in one transaction."""
    with immediate(store.db):
        store.db.conn.executemany("INSERT OR REPLACE INTO chunk_vectors (chunk_id, model, vector) VALUES (?, ?, ?)",
                                  [(chunk_id, model, blob) for chunk_id, blob in vectors])


# -- jobs ---------------------------------------------------------------------------------------------------


def create_job(store: Store, owner: str, kind: str, *, collection_id: int | None = None, total: int = 0) -> int:
    """A running job of ``kind`` ("ingest" or "embed"); returns its id."""
    now = utc_now()
    with immediate(store.db):
        store.ensure_user(owner, now)
        cursor = store.db.conn.execute(
            "INSERT INTO library_jobs (owner, kind, collection_id, status, total, created, updated) "
            "VALUES (?, ?, ?, 'running', ?, ?, ?)", (owner, kind, collection_id, total, now, now))
    return inserted_id(cursor)


def update_job(store: Store, job_id: int, **fields: Any) -> None:
    """Set some of a job's ``status``, ``total``, ``done``, ``failed`` and ``error``."""
    allowed = {"status", "total", "done", "failed", "error"}
    if not fields or set(fields) - allowed:
        raise InvalidValue(f"a job's fields are {sorted(allowed)}")
    assignments = ", ".join(f"{key} = ?" for key in fields)
    store.db.conn.execute(f"UPDATE library_jobs SET {assignments}, updated = ? WHERE id = ?",
                          (*fields.values(), utc_now(), job_id))


def get_job(store: Store, owner: str, job_id: int) -> dict[str, Any]:
    """One of the owner's jobs; ``NotFound`` for another owner's alike."""
    rows = store.rows(f"SELECT {_JOB_COLUMNS} FROM library_jobs WHERE id = ? AND owner = ?", (job_id, owner))
    if not rows:
        raise NotFound(f"no job {job_id}")
    return rows[0]


def list_jobs(store: Store, owner: str, *, status: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The owner's jobs, newest first."""
    return store.rows(f"SELECT {_JOB_COLUMNS} FROM library_jobs WHERE owner = ? AND (? IS NULL OR status = ?) "
                      "ORDER BY id DESC LIMIT ?", (owner, status, status, limit))


def claim_stale_job(store: Store, job_id: int, stale_before: str) -> bool:
    """Take up a running job whose worker last beat before ``stale_before``; ``False`` if another process just did.

    One conditional UPDATE: of two processes resuming at once, only one sees its row change.
    """
    cursor = store.db.conn.execute("UPDATE library_jobs SET updated = ?, error = NULL WHERE id = ? "
                                   "AND status = 'running' AND updated <= ?", (utc_now(), job_id, stale_before))
    return cursor.rowcount == 1


def interrupted_jobs(store: Store) -> list[dict[str, Any]]:
    """Jobs marked running in the database: after a restart, none of them has a worker any more."""
    return store.rows(f"SELECT {_JOB_COLUMNS} FROM library_jobs WHERE status = 'running' ORDER BY id")


# -- answers' sources ---------------------------------------------------------------------------------------


def save_message_sources(store: Store, message_id: int, sources: Sequence[dict[str, Any]]) -> None:
    """The numbered passages an answer was given, with whether it cited each (``kind``: cited by the model, or
    matched by ChatCore in an answer that cites nothing) and whether that checked out."""
    with immediate(store.db):
        store.db.conn.execute("DELETE FROM message_sources WHERE message_id = ?", (message_id,))
        store.db.conn.executemany(
            """INSERT INTO message_sources (message_id, n, chunk_id, document_id, filename, page, char_start,
                                            char_end, text, score, cited, kind, verified)
               VALUES (:message_id, :n, :chunk_id, :document_id, :filename, :page, :char_start, :char_end, :text,
                       :score, :cited, :kind, :verified)""",
            [{"message_id": message_id, "score": None, "kind": None, **source,
              "cited": int(bool(source.get("cited"))),
              "verified": None if source.get("verified") is None else int(bool(source["verified"]))}
             for source in sources],
        )


def message_sources(store: Store, owner: str, message_id: int) -> list[dict[str, Any]]:
    """The sources of one of the owner's answers, in prompt order (empty for another owner's, as for none)."""
    rows = store.rows(
        """SELECT s.n, s.chunk_id, s.document_id, s.filename, s.page, s.char_start, s.char_end, s.text, s.score,
                  s.cited, s.kind, s.verified
           FROM message_sources s JOIN messages m ON m.id = s.message_id
           JOIN conversations cv ON cv.id = m.conversation_id
           WHERE s.message_id = ? AND cv.owner = ? AND cv.deleted_at IS NULL ORDER BY s.n""",
        (message_id, owner),
    )
    for row in rows:
        row["cited"] = bool(row["cited"])
        row["verified"] = None if row["verified"] is None else bool(row["verified"])
    return rows


def set_conversation_scope(store: Store, owner: str, conversation_id: int, scope: dict[str, Any] | None) -> None:
    """Which documents the conversation answers from (``None``: the model alone)."""
    store.conversation_row(owner, conversation_id)  # NotFound for another owner's, as for a missing one
    store.db.conn.execute("UPDATE conversations SET library_scope = ? WHERE id = ?", (dump_json(scope), conversation_id))


def conversation_scope(store: Store, owner: str, conversation_id: int) -> dict[str, Any] | None:
    """The library scope saved with a conversation, or ``None``."""
    store.conversation_row(owner, conversation_id)
    row = store.db.conn.execute("SELECT library_scope FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    return load_json(row[0]) if row else None


def _document(row: dict[str, Any]) -> dict[str, Any]:
    row["authors"] = load_json(row["authors"]) or []
    row["warnings"] = load_json(row["warnings"]) or []
    row["settings"] = load_json(row["settings"]) or {}
    return row

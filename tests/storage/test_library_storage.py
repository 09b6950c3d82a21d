"""storage.library on a real SQLite file: files stored once, documents' states, atomic indexing, the FTS5 index,
vectors, jobs, answers' sources, conversation scopes, and that one owner never reaches another's rows."""

from __future__ import annotations

import sqlite3

import pytest

from storage import Store
from storage import library as db
from storage.errors import InvalidValue, NotFound

OWNER, OTHER = "ada", "bob"
SETTINGS = {"chars": 1000, "overlap": 200, "version": 1}
PAGES = ["The heron waits by the weir at dawn.", "Otters den under the willow roots."]
CHUNKS = [(1, 0, len(PAGES[0]), PAGES[0]), (2, 0, len(PAGES[1]), PAGES[1])]


def add(store: Store, owner: str = OWNER, content: bytes = b"heron notes", collection: str = "default",
        settings: dict | None = None, filename: str = "notes.md", job_id: int | None = None) -> tuple[int, str]:
    target = db.ensure_collection(store, owner, collection)
    return db.add_document(store, owner, target["id"], filename=filename, content=content, kind="markdown",
                           settings=settings or SETTINGS, job_id=job_id)


def indexed(store: Store, owner: str = OWNER, content: bytes = b"heron notes", **options) -> int:
    document_id, _ = add(store, owner, content, **options)
    db.begin_indexing(store, document_id, None)
    db.finish_indexing(store, document_id, pages=PAGES, chunks=CHUNKS, metadata={"title": "Notes"}, extractor="test")
    return document_id


def search(store: Store, owner: str, text: str) -> list[int]:
    query = db.question_query(text)
    return [row["document_id"] for row in db.search_chunks(store, owner, query)] if query else []


def count(store: Store, table: str) -> int:
    return store.db.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize("text, expected", [
    ("What is the heron eating?", '"heron" OR "eating"'),
    ("the and of to", None),
    ("", None),
    ("?!", None),
    ('NEAR( "falcon" AND * ', '"near" OR "falcon"'),
    ("x\x00y 7", '"7"'),
    ("Heron heron HERON", '"heron"'),
])
def test_question_query(text, expected):
    assert db.question_query(text) == expected


@pytest.mark.parametrize("text", ['NEAR(', "AND", "OR", "NOT", "*", '"', "'", "^", "col:x", "(a", "a)", "\x00",
                                  "a" * 5000, " ".join(f"w{i}" for i in range(200)), "don't", "e-mail"])
def test_odd_queries_run_on_fts5(store, text):
    indexed(store)
    search(store, OWNER, text)  # never raises
    assert len(db.question_query(" ".join(f"w{i}" for i in range(200))).split(" OR ")) == 32


def test_identical_bytes_stored_once_and_statuses(store):
    job = db.create_job(store, OWNER, "ingest")
    first, status = add(store, job_id=job)
    assert status == "added"
    assert add(store, job_id=job) == (first, "unchanged")  # queued already: its running job will index it
    db.update_job(store, job, status="cancelled")
    assert add(store) == (first, "requeued")  # its job has ended: nothing else would ever index it
    db.begin_indexing(store, first, None)
    db.finish_indexing(store, first, pages=PAGES, chunks=CHUNKS, metadata={}, extractor="test")
    assert add(store) == (first, "unchanged")
    assert add(store, settings={**SETTINGS, "chars": 500}) == (first, "requeued")
    other, status = add(store, OTHER)
    assert status == "added" and other != first
    assert count(store, "library_files") == 1
    assert db.get_document(store, OWNER, first)["status"] == "queued"


def test_moving_to_another_collection_requeues(store):
    document_id = indexed(store)
    assert add(store, collection="elsewhere") == (document_id, "requeued")
    assert db.get_document(store, OWNER, document_id)["collection"] == "elsewhere"


def test_a_refused_placeholder_is_filled_by_a_later_good_copy(store):
    target = db.ensure_collection(store, OWNER)
    refused = db.add_failed_document(store, OWNER, target["id"], filename="notes.exe", content=b"heron notes",
                                     kind="unknown", error="not supported")
    assert db.get_document(store, OWNER, refused)["status"] == "failed"
    assert store.db.conn.execute("SELECT length(content) FROM library_files").fetchone()[0] == 0
    other, status = add(store, OTHER)  # the same bytes, another owner, a good name: the bytes are kept now
    assert status == "added"
    assert db.document_content(store, OTHER, other) == b"heron notes"
    assert add(store) == (refused, "requeued")
    assert db.document_content(store, OWNER, refused) == b"heron notes"


def test_finish_indexing_is_all_or_nothing(store):
    document_id = indexed(store)
    db.begin_indexing(store, document_id, None)
    with pytest.raises(sqlite3.IntegrityError):
        db.finish_indexing(store, document_id, pages=PAGES, chunks=[CHUNKS[0], (2, 0, 5, None)], metadata={},
                           extractor="test")
    document = db.get_document(store, OWNER, document_id)
    assert document["status"] == "indexing"  # not ready, and the old chunks are still whole
    # The old chunks are whole and stay searchable while the document is indexed again.
    assert count(store, "chunks") == 2 and search(store, OWNER, "otters willow") == [document_id]


def test_stop_document_removes_chunks_from_the_index(store):
    document_id = indexed(store)
    assert search(store, OWNER, "heron weir") == [document_id]
    db.stop_document(store, document_id, "failed", "broken")
    assert count(store, "chunks") == 0
    assert store.db.conn.execute("SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH 'heron'").fetchone()[0] == 0
    with pytest.raises(InvalidValue):
        db.stop_document(store, document_id, "ready", None)


def test_delete_restore_and_purge(store):
    mine = indexed(store)
    kept = indexed(store, content=b"other notes", filename="other.md")
    theirs = indexed(store, OTHER)
    db.put_vectors(store, "m", [(row[0], b"\0" * 8) for row in store.db.conn.execute("SELECT id FROM chunks")])
    db.delete_document(store, OWNER, mine)
    assert search(store, OWNER, "heron") == [kept]
    assert [d["id"] for d in db.list_documents(store, OWNER)] == [kept]
    with pytest.raises(NotFound):
        db.page_text(store, OWNER, mine, 1)
    db.restore_document(store, OWNER, mine)
    assert sorted(search(store, OWNER, "heron")) == [mine, kept]
    db.delete_document(store, OWNER, mine)
    assert db.purge_deleted_documents(store, OWNER) == 1
    assert store.db.conn.execute("SELECT COUNT(*) FROM chunks WHERE document_id = ?", (mine,)).fetchone()[0] == 0
    assert store.db.conn.execute("SELECT COUNT(*) FROM document_pages WHERE document_id = ?",
                                 (mine,)).fetchone()[0] == 0
    assert count(store, "chunk_vectors") == 4  # kept's two and theirs' two
    assert count(store, "library_files") == 2  # the other owner still holds the purged bytes
    assert db.document_content(store, OTHER, theirs) == b"heron notes"
    assert db.purge_deleted_documents(store, OWNER) == 0


def test_owners_are_isolated(store):
    mine, theirs = indexed(store), indexed(store, OTHER, content=b"their notes")
    assert search(store, OWNER, "heron otters") == [mine, mine]
    assert search(store, OTHER, "heron otters") == [theirs, theirs]
    ids = [row[0] for row in store.db.conn.execute("SELECT id FROM chunks WHERE document_id = ?", (theirs,))]
    assert db.chunks_by_id(store, OWNER, ids) == []
    assert db.vectors_in_scope(store, OWNER, "m", document_ids=[theirs]) == ([], [])
    missing = theirs + 100
    for call in (db.get_document, db.delete_document, db.document_content,
                 lambda s, o, i: db.page_text(s, o, i, 1)):
        with pytest.raises(NotFound) as other:
            call(store, OWNER, theirs)
        with pytest.raises(NotFound) as absent:
            call(store, OWNER, missing)
        assert str(other.value) == str(absent.value).replace(str(missing), str(theirs))
    db.delete_document(store, OTHER, theirs)
    with pytest.raises(NotFound):
        db.restore_document(store, OWNER, theirs)
    assert db.purge_deleted_documents(store, OWNER) == 0
    db.restore_document(store, OTHER, theirs)
    job = db.create_job(store, OTHER, "ingest")
    with pytest.raises(NotFound, match=f"no job {job}"):
        db.get_job(store, OWNER, job)
    assert db.list_jobs(store, OWNER) == []
    with pytest.raises(NotFound, match="no collection named 'default'"):
        db.get_collection(store, "carol", "default")
    with pytest.raises(NotFound):
        db.add_document(store, OWNER, db.get_collection(store, OTHER, "default")["id"], filename="x.md",
                        content=b"x", kind="markdown", settings=SETTINGS)


def test_collection_names_are_checked(store):
    for bad, words in (("", "empty"), ("  ", "empty"), ("x" * 101, "longer"), ("a\nb", "control")):
        with pytest.raises(InvalidValue, match=words):
            db.ensure_collection(store, OWNER, bad)
    assert db.ensure_collection(store, OWNER, "  papers ")["name"] == "papers"
    assert count(store, "collections") == 1


def test_vectors_missing_and_replaced(store):
    document_id = indexed(store, collection="papers")
    collection = db.get_collection(store, OWNER, "papers")["id"]
    assert db.count_chunks_missing_vectors(store, collection, "a") == 2
    db.put_vectors(store, "a", [(row["chunk_id"], b"\1" * 8)
                                for row in db.chunks_missing_vectors(store, collection, "a")])
    assert db.count_chunks_missing_vectors(store, collection, "a") == 0
    assert db.count_chunks_missing_vectors(store, collection, "b") == 2
    db.put_vectors(store, "b", [(row["chunk_id"], b"\2" * 8)
                                for row in db.chunks_missing_vectors(store, collection, "b", limit=1)])
    assert db.count_chunks_missing_vectors(store, collection, "b") == 1
    ids, blobs = db.vectors_in_scope(store, OWNER, "b", document_ids=[document_id])
    assert len(ids) == 1 and blobs == [b"\2" * 8]


def test_jobs(store):
    job = db.create_job(store, OWNER, "ingest", total=3)
    assert db.get_job(store, OWNER, job)["status"] == "running"
    assert [j["id"] for j in db.interrupted_jobs(store)] == [job]
    db.update_job(store, job, done=3, status="done")
    assert db.interrupted_jobs(store) == []
    with pytest.raises(InvalidValue):
        db.update_job(store, job, owner=OTHER)
    with pytest.raises(InvalidValue):
        db.update_job(store, job)


def test_a_stale_job_is_claimed_once(store):
    job = db.create_job(store, OWNER, "ingest")
    store.db.conn.execute("UPDATE library_jobs SET updated = '2020-01-01T00:00:00.000000+00:00' WHERE id = ?", (job,))
    cutoff = "2021-01-01T00:00:00.000000+00:00"
    assert db.claim_stale_job(store, job, cutoff) is True
    assert db.claim_stale_job(store, job, cutoff) is False  # its beat is fresh now: a second taker backs off
    db.update_job(store, job, status="done")
    store.db.conn.execute("UPDATE library_jobs SET updated = '2020-01-01T00:00:00.000000+00:00' WHERE id = ?", (job,))
    assert db.claim_stale_job(store, job, cutoff) is False  # not running


def test_message_sources_and_scope_belong_to_the_conversation_owner(store):
    conversation = store.create_conversation(OWNER, model="tiny")
    store.add_message(conversation, "user", "Where do herons wait?")
    answer = store.begin_assistant_message(conversation, model="tiny", params={})
    store.finish_message(answer, "By the weir [1].", finish_reason="stop", prompt_tokens=1, completion_tokens=1,
                         ttft_ms=1.0, tokens_per_s=1.0)
    document_id = indexed(store)
    chunk = db.chunks_by_id(store, OWNER, [1])[0]
    db.save_message_sources(store, answer, [{
        "n": 1, "chunk_id": chunk["chunk_id"], "document_id": document_id, "filename": "notes.md", "page": 1,
        "char_start": 0, "char_end": 10, "text": chunk["text"], "cited": True, "verified": True}])
    (source,) = db.message_sources(store, OWNER, answer)
    assert (source["n"], source["cited"], source["verified"], source["filename"]) == (1, True, True, "notes.md")
    assert db.message_sources(store, OTHER, answer) == []
    # The sources outlive their document: the answer still shows what it was given.
    db.delete_document(store, OWNER, document_id)
    db.purge_deleted_documents(store, OWNER)
    assert db.message_sources(store, OWNER, answer)[0]["text"] == chunk["text"]

    db.set_conversation_scope(store, OWNER, conversation, {"collections": ["default"]})
    assert db.conversation_scope(store, OWNER, conversation) == {"collections": ["default"]}
    for call in (lambda: db.conversation_scope(store, OTHER, conversation),
                 lambda: db.set_conversation_scope(store, OTHER, conversation, None)):
        with pytest.raises(NotFound):
            call()
    db.set_conversation_scope(store, OWNER, conversation, None)
    assert db.conversation_scope(store, OWNER, conversation) is None

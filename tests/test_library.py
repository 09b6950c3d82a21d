"""The library service on real files (fpdf2 PDFs, python-docx) and a real SQLite file: bad input, identity,
jobs (progress, cancel, resume), retrieval and ownership, dense and hybrid search, grounded answers and citations.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from chatcore.core.errors import ChatCoreError, ModelError
from chatcore.core.events import Finished, Started, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.services.chat import ChatService, Cited, Saved, Sourced
from chatcore.services.library.chunking import ChunkSettings
from chatcore.services.library.citations import check_citations
from chatcore.services.library.retrieval import ALL, Passage, Scope
from chatcore.services.library.service import Library
from chatcore.services.notes import export_notes, save_passage_as_note
from chatcore.testing.documents import FACTS, fact_pages, make_docx, make_pdf
from storage import Store
from storage import library as db
from storage.errors import NotFound

OWNER, OTHER = "ada", "bob"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "library.db"


@pytest.fixture
def store(db_path: Path):
    with Store(db_path) as store:
        yield store


@pytest.fixture
def library(store: Store) -> Library:
    return Library(store)


@pytest.fixture
def facts_pdf(tmp_path: Path) -> bytes:
    pages, _ = fact_pages(filler_pages=1)
    return make_pdf(tmp_path / "facts.pdf", pages, title="Field report", author="A. Researcher").read_bytes()


def pdf_bytes(tmp_path: Path, pages: list[str], name: str = "doc.pdf", **options) -> bytes:
    return make_pdf(tmp_path / name, pages, **options).read_bytes()


def ingest(library: Library, owner: str, files, collection: str = "default"):
    """Add files and run their job here; returns (job progress, outcomes by file name)."""
    job_id, outcomes = library.add(owner, files, collection)
    return library.run_job(owner, job_id), {o.filename: o for o in outcomes}


def chunk_count(store: Store, document_id: int) -> int:
    return store.db.conn.execute("SELECT COUNT(*) FROM chunks WHERE document_id = ?", (document_id,)).fetchone()[0]


def status(library: Library, owner: str, document_id: int) -> dict:
    row = library.store.rows("SELECT status, error, warnings, chunks FROM documents WHERE id = ?", (document_id,))[0]
    return row


def not_found_message(call, missing_id: int, other_id: int) -> tuple[str, str]:
    """The messages of ``call`` for another owner's id and for a missing id, the number made the same."""
    with pytest.raises(NotFound) as other:
        call(other_id)
    with pytest.raises(NotFound) as missing:
        call(missing_id)
    return str(other.value), str(missing.value).replace(str(missing_id), str(other_id))


# -- 1. bad input ---------------------------------------------------------------------------------------------


GOOD = ("good.md", b"# Good notes\n\nThe albatross glides for hours without flapping its wings.\n")


def good_is_indexed(library: Library, outcomes) -> None:
    good = library.document(OWNER, outcomes["good.md"].document_id)
    assert good["status"] == "ready" and good["chunks"] > 0
    assert library.search(OWNER, "albatross glides")[0].filename == "good.md"


def test_encrypted_pdf_fails_with_its_reason_and_the_batch_goes_on(library, store, tmp_path):
    locked = pdf_bytes(tmp_path, ["Secret text about otters."], password="hunter2")
    progress, outcomes = ingest(library, OWNER, [("locked.pdf", locked), GOOD])
    row = status(library, OWNER, outcomes["locked.pdf"].document_id)
    assert row["status"] == "failed" and "encrypted" in row["error"] and "password" in row["error"]
    assert chunk_count(store, outcomes["locked.pdf"].document_id) == 0
    good_is_indexed(library, outcomes)
    assert (progress.status, progress.done, progress.failed) == ("done", 1, 1)


def test_scanned_pdf_without_text_is_refused_naming_ocr(library, store, tmp_path):
    scan = pdf_bytes(tmp_path, ["", "", ""], blank_pages=(1, 2, 3))
    _, outcomes = ingest(library, OWNER, [("scan.pdf", scan), GOOD])
    row = status(library, OWNER, outcomes["scan.pdf"].document_id)
    assert row["status"] == "failed" and "OCR" in row["error"] and "3 pages" in row["error"]
    assert chunk_count(store, outcomes["scan.pdf"].document_id) == 0
    good_is_indexed(library, outcomes)


def test_partly_scanned_pdf_is_indexed_with_a_warning_naming_the_blank_pages(library, store, tmp_path):
    pages = [f"Page {n} tells of the heron number {n} nesting by the weir." for n in range(1, 6)]
    mixed = pdf_bytes(tmp_path, pages, blank_pages=(2, 4))
    _, outcomes = ingest(library, OWNER, [("mixed.pdf", mixed)])
    document = library.document(OWNER, outcomes["mixed.pdf"].document_id)
    assert document["status"] == "ready" and document["pages"] == 5
    assert len(document["warnings"]) == 1 and "pages 2, 4" in document["warnings"][0]
    pages_with_chunks = {row[0] for row in store.db.conn.execute(
        "SELECT DISTINCT page FROM chunks WHERE document_id = ?", (document["id"],))}
    assert pages_with_chunks == {1, 3, 5}


@pytest.mark.parametrize("name, content, words", [
    ("empty.pdf", b"", ["empty", "0 bytes"]),
    ("empty.txt", b"", ["empty", "0 bytes"]),
    ("notes.pdf", b"Just some plain text pretending to be a PDF.\n" * 10, ["not a PDF", "extension"]),
    ("report.docx", b"This is not a zip archive at all." * 10, ["not a DOCX", "extension"]),
    ("image.md", bytes(range(256)) * 8, ["binary", "extension"]),
    ("notes.exe", b"MZ\x90\x00", ["not supported", ".pdf"]),
])
def test_files_refused_at_add_are_recorded_with_their_reason(library, store, name, content, words):
    progress, outcomes = ingest(library, OWNER, [(name, content), GOOD])
    outcome = outcomes[name]
    assert outcome.status == "refused"
    for word in words:
        assert word in outcome.message
    row = status(library, OWNER, outcome.document_id)
    assert row["status"] == "failed" and row["error"] == outcome.message and row["chunks"] == 0
    assert chunk_count(store, outcome.document_id) == 0
    good_is_indexed(library, outcomes)
    assert (progress.status, progress.total, progress.done, progress.failed) == ("done", 2, 1, 1)


def test_a_pdf_named_txt_is_not_indexed_as_text(library, store, tmp_path, facts_pdf):
    progress, outcomes = ingest(library, OWNER, [("facts.txt", facts_pdf), GOOD])
    outcome = outcomes["facts.txt"]
    row = status(library, OWNER, outcome.document_id)
    assert row["status"] == "failed" and row["chunks"] == 0
    assert "PDF" in row["error"] and "extension" in row["error"]
    good_is_indexed(library, outcomes)


def test_damaged_pdf_fails_alone(library, store, facts_pdf):
    truncated = facts_pdf[: len(facts_pdf) // 3]
    _, outcomes = ingest(library, OWNER, [("broken.pdf", truncated), GOOD])
    row = status(library, OWNER, outcomes["broken.pdf"].document_id)
    assert row["status"] == "failed" and row["chunks"] == 0
    assert row["error"] == "broken.pdf is not a readable PDF (PDFium: Data format error); it may be damaged or cut short"
    assert chunk_count(store, outcomes["broken.pdf"].document_id) == 0
    good_is_indexed(library, outcomes)


def test_size_limit_names_the_limit_and_the_setting(store, tmp_path):
    library = Library(store, max_bytes=1000)
    _, outcomes = ingest(library, OWNER, [("big.txt", b"word " * 400), GOOD])
    message = outcomes["big.txt"].message
    assert outcomes["big.txt"].status == "refused"
    assert "CHATCORE_LIBRARY_MAX_MB" in message and "limit" in message
    assert not re.search(r"limit of 0 MiB", message)  # a small limit is not shown as zero
    assert "over the limit of 1000 bytes" in message and "2.0 KiB" in message
    good_is_indexed(library, outcomes)


def test_page_limit_names_the_limit_and_the_setting(store, tmp_path):
    library = Library(store, max_pages=3)
    pages = [f"Page {n} about kingfishers." for n in range(1, 6)]
    _, outcomes = ingest(library, OWNER, [("long.pdf", pdf_bytes(tmp_path, pages)), GOOD])
    row = status(library, OWNER, outcomes["long.pdf"].document_id)
    assert row["status"] == "failed" and "5 pages" in row["error"] and "limit of 3" in row["error"]
    assert "CHATCORE_LIBRARY_MAX_PAGES" in row["error"]
    assert chunk_count(store, outcomes["long.pdf"].document_id) == 0
    good_is_indexed(library, outcomes)


@pytest.mark.parametrize("encoding, text", [
    ("cp1252", "Caf\u00e9 notes \u2014 the na\u00efve \u201cotter\u201d count was 42 in Malm\u00f6 harbour.\n"),
    ("latin-1", "M\u00fcller counted otters in the Stra\u00dfe canal; \u00bd of them were juveniles.\n"),
])
def test_non_utf8_text_decodes_with_a_warning(library, encoding, text):
    _, outcomes = ingest(library, OWNER, [("notes.txt", text.encode(encoding))])
    document = library.document(OWNER, outcomes["notes.txt"].document_id)
    assert document["status"] == "ready"
    assert library.page_text(OWNER, document["id"], 1) == text
    assert any("not UTF-8" in warning for warning in document["warnings"])


@pytest.mark.parametrize("blob, words", [
    (bytes((i * 37 + 11) % 256 for i in range(4096)), "looks binary"),  # NULs: refused when added
    (bytes(range(1, 256)) * 16, "not text in any encoding"),  # no NUL: refused when read
    (b"\xff\xd8\xff\xe0" + bytes((i * 7919) % 255 + 1 for i in range(3000)), "not text in any encoding"),
])
def test_undecodable_binary_text_is_refused(library, store, blob, words):
    _, outcomes = ingest(library, OWNER, [("data.txt", blob), GOOD])
    outcome = outcomes["data.txt"]
    row = status(library, OWNER, outcome.document_id)
    assert row["status"] == "failed" and row["chunks"] == 0
    assert row["error"].startswith("data.txt") and words in row["error"] and "extension" in row["error"]
    good_is_indexed(library, outcomes)


def test_html_is_indexed_without_script_or_style(library):
    page = (b"<html><head><title>Otters</title><style>body{color:red} .secretstyle{}</style>"
            b"<script>var stolen = 'secretscript'; alert(1)</script></head><body>"
            b"<p>Otters hold hands while sleeping.</p><img src=x onerror=\"alert('secretattr')\">"
            b"<noscript>secretnoscript</noscript></body></html>")
    _, outcomes = ingest(library, OWNER, [("otters.html", page)])
    document = library.document(OWNER, outcomes["otters.html"].document_id)
    assert document["status"] == "ready" and document["title"] == "Otters"
    text = library.page_text(OWNER, document["id"], 1)
    assert "Otters hold hands while sleeping." in text
    for secret in ("secretstyle", "secretscript", "secretattr", "alert", "secretnoscript"):
        assert secret not in text
        assert library.search(OWNER, secret) == []


@pytest.mark.parametrize("name", ["../x.pdf", "a/b.pdf", "..\\x.pdf", "C:\\x.pdf", "/etc/x.pdf", "..", ""])
def test_file_names_with_path_parts_are_refused_and_nothing_is_stored(library, store, facts_pdf, name):
    _, outcomes = library.add(OWNER, [(name, facts_pdf)])
    assert [o.status for o in outcomes] == ["refused"]
    assert outcomes[0].document_id is None
    assert "name" in outcomes[0].message
    assert store.db.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0
    assert store.db.conn.execute("SELECT COUNT(*) FROM library_files").fetchone()[0] == 0


def test_docx_is_indexed(library, tmp_path):
    path = make_docx(tmp_path / "memo.docx", ["Heading words", "The badger sett had seven entrances."],
                     title="Badgers", author="C. Darwin and A. Wallace")
    _, outcomes = ingest(library, OWNER, [("memo.docx", path.read_bytes())])
    document = library.document(OWNER, outcomes["memo.docx"].document_id)
    assert document["status"] == "ready" and document["title"] == "Badgers"
    assert document["authors"] == ["C. Darwin", "A. Wallace"]
    assert library.search(OWNER, "badger sett entrances")[0].document_id == document["id"]


# -- 2. identity and re-indexing --------------------------------------------------------------------------------


def test_identical_bytes_are_stored_once_across_owners(library, store, facts_pdf):
    ingest(library, OWNER, [("facts.pdf", facts_pdf)])
    ingest(library, OTHER, [("copy.pdf", facts_pdf)])
    assert store.db.conn.execute("SELECT COUNT(*) FROM library_files").fetchone()[0] == 1
    assert len(library.documents(OWNER)) == len(library.documents(OTHER)) == 1
    _, again = library.add(OWNER, [("facts.pdf", facts_pdf)])
    assert again[0].status == "unchanged" and again[0].message


def test_other_chunk_settings_reindex(store, facts_pdf):
    first = Library(store)
    _, outcomes = ingest(first, OWNER, [("facts.pdf", facts_pdf)])
    document_id = outcomes["facts.pdf"].document_id
    before = first.document(OWNER, document_id)["chunks"]
    second = Library(store, chunking=ChunkSettings(chars=200, overlap=20))
    job_id, again = second.add(OWNER, [("facts.pdf", facts_pdf)])
    assert again[0].status == "requeued" and again[0].document_id == document_id
    assert second.document(OWNER, document_id)["status"] == "queued"
    second.run_job(OWNER, job_id)
    after = second.document(OWNER, document_id)
    assert after["status"] == "ready" and after["chunks"] > before
    assert after["chunks"] == chunk_count(store, document_id)
    assert after["settings"]["chars"] == 200


def test_delete_restore_readd_and_purge(library, store, facts_pdf):
    _, outcomes = ingest(library, OWNER, [("facts.pdf", facts_pdf), GOOD])
    document_id = outcomes["facts.pdf"].document_id
    question, _ = fact_pages(filler_pages=1)[1][0]
    assert library.search(OWNER, question)[0].document_id == document_id

    library.delete(OWNER, document_id)
    assert all(p.document_id != document_id for p in library.search(OWNER, question))
    assert document_id not in [d["id"] for d in library.documents(OWNER)]
    with pytest.raises(NotFound):
        library.document(OWNER, document_id)
    with pytest.raises(NotFound):
        library.delete(OWNER, document_id)

    library.restore(OWNER, document_id)
    assert library.search(OWNER, question)[0].document_id == document_id
    with pytest.raises(NotFound):
        library.restore(OWNER, document_id)  # not deleted any more

    library.delete(OWNER, document_id)
    job_id, again = library.add(OWNER, [("facts.pdf", facts_pdf)])
    assert again[0].status == "requeued" and again[0].document_id == document_id
    library.run_job(OWNER, job_id)
    assert library.document(OWNER, document_id)["status"] == "ready"
    assert library.search(OWNER, question)[0].document_id == document_id

    library.delete(OWNER, document_id)
    assert db.purge_deleted_documents(store, OWNER) == 1
    assert chunk_count(store, document_id) == 0
    assert store.db.conn.execute("SELECT COUNT(*) FROM library_files WHERE sha256 = ?",
                                 (db.sha256_hex(facts_pdf),)).fetchone()[0] == 0
    assert store.db.conn.execute("SELECT COUNT(*) FROM library_files").fetchone()[0] == 1  # GOOD's bytes stay
    with pytest.raises(NotFound):
        library.restore(OWNER, document_id)


def test_purge_keeps_bytes_another_owner_holds(library, store, facts_pdf):
    _, mine = ingest(library, OWNER, [("facts.pdf", facts_pdf)])
    ingest(library, OTHER, [("facts.pdf", facts_pdf)])
    library.delete(OWNER, mine["facts.pdf"].document_id)
    db.purge_deleted_documents(store, OWNER)
    (other_document,) = library.documents(OTHER)
    assert db.document_content(store, OTHER, other_document["id"]) == facts_pdf


# -- 3. jobs ------------------------------------------------------------------------------------------------


def test_progress_rises_to_one_and_reads_well(library, tmp_path, facts_pdf):
    seen = []
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD, ("empty.txt", b"")])
    final = library.run_job(OWNER, job_id, on_progress=seen.append)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(p.current == "facts.pdf" and p.current_pages for p in seen)
    running = next(p for p in seen if p.current_pages)
    assert re.fullmatch(r"indexing \d of 3 files · facts\.pdf page \d+ of \d+", running.describe())
    assert final.finished and final.describe() == "done: 2 of 3 files indexed, 1 failed"
    assert library.job(OWNER, job_id).describe() == final.describe()


def test_cancel_mid_pdf_leaves_nothing_half_indexed(library, store, tmp_path):
    pages = [f"Page {n}: the long survey of moths continues with species {n}." for n in range(1, 41)]
    big = pdf_bytes(tmp_path, pages, name="big.pdf")
    cancel = threading.Event()

    def on_progress(progress):
        if progress.current_pages and progress.current_pages[0] < progress.current_pages[1]:
            cancel.set()

    job_id, outcomes = library.add(OWNER, [("big.pdf", big), GOOD, ("more.txt", b"More moths.")])
    final = library.run_job(OWNER, job_id, cancel=cancel, on_progress=on_progress)
    assert cancel.is_set() and final.status == "cancelled" and final.describe().startswith("cancelled")
    for outcome in outcomes:
        row = status(library, OWNER, outcome.document_id)
        assert row["status"] == "cancelled" and row["chunks"] == 0
        assert chunk_count(store, outcome.document_id) == 0
    assert library.search(OWNER, "moths") == []
    # Cancelled documents come back when added again.
    job_id, again = library.add(OWNER, [("big.pdf", big)])
    assert again[0].status == "requeued"
    library.run_job(OWNER, job_id)
    assert library.document(OWNER, again[0].document_id)["status"] == "ready"


def test_cancel_from_another_process_is_noticed_at_the_next_beat(library, db_path, tmp_path, facts_pdf):
    job_id, outcomes = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD, ("more.txt", b"More moths.")])
    cancelled = []

    def on_progress(progress):
        if not cancelled:
            with Store(db_path) as elsewhere:  # its own connection, as another process would have
                cancelled.append(Library(elsewhere).cancel_job(OWNER, job_id))

    final = library.run_job(OWNER, job_id, on_progress=on_progress)
    assert cancelled and cancelled[0].status == "cancelled"
    assert final.status == "cancelled"
    statuses = [library.store.rows("SELECT status FROM documents WHERE id = ?", (o.document_id,))[0]["status"]
                for o in outcomes]
    assert statuses[0] in ("ready", "cancelled") and statuses[1:] == ["cancelled", "cancelled"]


def test_cancel_job_of_another_owner_is_not_found(library, facts_pdf):
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf)])
    for call in (library.job, library.cancel_job):
        other, missing = not_found_message(lambda i: call(OTHER, i), job_id + 1000, job_id)
        assert other == missing
    assert library.job(OWNER, job_id).status == "running"
    assert library.active_jobs(OTHER) == [] and [j.job_id for j in library.active_jobs(OWNER)] == [job_id]


def test_restart_resumes_an_interrupted_job(db_path, tmp_path, facts_pdf):
    with Store(db_path) as store:
        crashed = Library(store)
        job_id, outcomes = crashed.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
        db.begin_indexing(store, outcomes[0].document_id, job_id)  # the crash came mid-document
        db.set_progress(store, outcomes[0].document_id, 3, 30)
        store.db.conn.execute("UPDATE library_jobs SET updated = '2020-01-01T00:00:00.000000+00:00' WHERE id = ?",
                              (job_id,))
    with Store(db_path) as store:
        fresh = Library(store)
        assert fresh.resume_interrupted(OTHER, background=False) == []  # another owner's run is not theirs
        assert fresh.resume_interrupted(background=False) == [job_id]
        assert fresh.job(OWNER, job_id).status == "done"
        for outcome in outcomes:
            document = fresh.document(OWNER, outcome.document_id)
            assert document["status"] == "ready" and document["chunks"] == chunk_count(store, document["id"]) > 0
        assert fresh.resume_interrupted(background=False) == []


def test_a_job_with_a_live_worker_is_not_taken_up_twice(library, db_path, facts_pdf):
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf)])
    with Store(db_path) as elsewhere:
        assert Library(elsewhere).resume_interrupted(background=False) == []
    assert library.job(OWNER, job_id).status == "running"


def test_background_job_runs_and_waits(library, facts_pdf):
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
    library.start_job(OWNER, job_id)
    library.wait(job_id)
    assert library.job(OWNER, job_id).status == "done"
    assert library.active_jobs(OWNER) == []


# -- 4. retrieval and ownership -------------------------------------------------------------------------------


def test_bm25_finds_every_gold_page(library, tmp_path):
    pages, gold = fact_pages(filler_pages=2)
    _, outcomes = ingest(library, OWNER, [("report.pdf", pdf_bytes(tmp_path, pages))])
    for question, page in gold:
        best = library.search(OWNER, question, k=3)
        assert best and best[0].page == page and best[0].bm25_rank == 1, question
        assert best[0].where == f"report.pdf, page {page}"
        text = library.page_text(OWNER, best[0].document_id, page)
        assert text[best[0].char_start:best[0].char_end] == best[0].text
    evidence = library.evidence(OWNER, gold[0][0], k=2)
    start, end = evidence[0].highlights[0]
    assert "412 breeding pairs" in evidence[0].passage.text[start:end]


def test_scope_by_collection_and_documents(library, tmp_path):
    _, a = ingest(library, OWNER, [("a.md", b"# A\n\nThe quokka smiles at tourists on Rottnest.")], "zoology")
    _, b = ingest(library, OWNER, [("b.md", b"# B\n\nThe quokka appears in an ecology paper.")], "ecology")
    a_id, b_id = a["a.md"].document_id, b["b.md"].document_id
    assert {p.document_id for p in library.search(OWNER, "quokka")} == {a_id, b_id}
    assert {p.document_id for p in library.search(OWNER, "quokka", Scope(collections=("zoology",)))} == {a_id}
    assert {p.document_id for p in library.search(OWNER, "quokka", Scope(documents=(b_id,)))} == {b_id}
    assert library.search(OWNER, "quokka", Scope(collections=("zoology",), documents=(b_id,))) == []
    assert library.search(OWNER, "quokka", Scope(documents=())) == []
    with pytest.raises(NotFound, match="no collection named 'nope'"):
        library.search(OWNER, "quokka", Scope(collections=("nope",)))
    assert Scope.from_dict(Scope(collections=("zoology",)).to_dict()) == Scope(collections=("zoology",))
    assert Scope.from_dict(ALL.to_dict()) == ALL


def test_owners_never_see_each_others_documents(library, store, tmp_path, facts_pdf):
    _, mine = ingest(library, OWNER, [("facts.pdf", facts_pdf)], "mine")
    _, theirs = ingest(library, OTHER, [("theirs.md", b"# Theirs\n\nThe peregrine falcons nest on towers.")],
                       "theirs")
    my_id, their_id = mine["facts.pdf"].document_id, theirs["theirs.md"].document_id
    for owner, own in ((OWNER, my_id), (OTHER, their_id)):
        for scope in (ALL, Scope(documents=(my_id, their_id))):
            assert {p.document_id for p in library.search(owner, "peregrine falcons breeding pairs", scope)} == {own}
    # Another owner's document is NotFound exactly like a missing one.
    missing = their_id + 1000
    for call in (lambda i: library.document(OWNER, i), lambda i: library.delete(OWNER, i),
                 lambda i: library.page_text(OWNER, i, 1), lambda i: library.page_image(OWNER, i, 1)):
        other, absent = not_found_message(call, missing, their_id)
        assert other == absent
    library.delete(OTHER, their_id)
    other, absent = not_found_message(lambda i: library.restore(OWNER, i), missing, their_id)
    assert other == absent
    library.restore(OTHER, their_id)
    # Collections by name: another owner's is unknown, like a missing one.
    with pytest.raises(NotFound) as other_collection:
        library.search(OWNER, "falcons", Scope(collections=("theirs",)))
    with pytest.raises(NotFound) as missing_collection:
        library.search(OWNER, "falcons", Scope(collections=("nowhere",)))
    assert str(other_collection.value).replace("theirs", "nowhere") == str(missing_collection.value)
    assert [c["name"] for c in library.collections(OWNER)] == ["mine"]
    # Conversations: setting or reading a scope on another's is NotFound like a missing one.
    conversation = store.create_conversation(OTHER, model="tiny")
    for call in (lambda i: library.set_scope(OWNER, i, ALL), lambda i: library.scope(OWNER, i)):
        other, absent = not_found_message(call, conversation + 1000, conversation)
        assert other == absent
    assert library.scope(OTHER, conversation) is None


def test_page_text_and_image(library, facts_pdf):
    _, outcomes = ingest(library, OWNER, [("facts.pdf", facts_pdf), GOOD])
    document_id = outcomes["facts.pdf"].document_id
    assert FACTS[0][0][:40] in library.page_text(OWNER, document_id, 2).replace("\n", " ")
    image = library.page_image(OWNER, document_id, 2, scale=0.5)
    assert image.size[0] > 100 and image.size[1] > 100
    with pytest.raises(NotFound):
        library.page_text(OWNER, document_id, 999)
    with pytest.raises(NotFound, match="has no page 999"):
        library.page_image(OWNER, document_id, 999)
    with pytest.raises(NotFound, match="not a PDF"):
        library.page_image(OWNER, outcomes["good.md"].document_id, 1)


@pytest.mark.parametrize("question", [
    "", "   ", "the and of to", "?!.,;:", '"', '""', "'", 'NEAR(', "NEAR(a b)", "AND", "OR NOT", "*", "a*",
    'falcon"', '"falcon', "col:umn", "^start", "-minus", "(", ")", "{x}", "\x00", "falcon\x00pairs",
    "🦅 falcon", "ﬁnd ﬂow", "x" * 10_000, " ".join(f"word{i}" for i in range(500)),
])
def test_odd_questions_never_raise(library, facts_pdf, question):
    ingest(library, OWNER, [("facts.pdf", facts_pdf)])
    passages = library.search(OWNER, question)
    assert isinstance(passages, list)
    library.evidence(OWNER, question)


# -- 5. dense and hybrid ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> tuple[str, str]:
    from chatcore.testing.tiny import save_tiny_encoder

    return (str(save_tiny_encoder(tmp_path_factory.mktemp("encoder-a"), seed=0)),
            str(save_tiny_encoder(tmp_path_factory.mktemp("encoder-b"), seed=1)))


def vector_models(store: Store, document_ids) -> list[str | None]:
    """The model of each chunk's vector (None where it has none), over the given documents."""
    marks = ",".join("?" * len(document_ids))
    return [row[0] for row in store.db.conn.execute(
        f"SELECT v.model FROM chunks ch LEFT JOIN chunk_vectors v ON v.chunk_id = ch.id "
        f"WHERE ch.document_id IN ({marks})", list(document_ids))]


def test_embedding_model_embeds_reembeds_and_fuses(store, tmp_path, encoders, facts_pdf):
    from chatcore.engine.embeddings import load_encoder

    model_a, model_b = encoders
    library = Library(store, encoder_for=load_encoder)
    _, first = ingest(library, OWNER, [("facts.pdf", facts_pdf)], "papers")
    ids = [first["facts.pdf"].document_id]
    assert set(vector_models(store, ids)) == {None}

    job_id = library.set_embedding_model(OWNER, "papers", model_a, background=False)
    assert library.job(OWNER, job_id).total == library.document(OWNER, ids[0])["chunks"]
    done = library.run_job(OWNER, job_id)
    assert done.status == "done" and done.done == done.total
    assert done.describe() == f"done: {done.total} of {done.total} passages embedded" and done.fraction == 1.0
    assert set(vector_models(store, ids)) == {model_a}
    dim = store.db.conn.execute("SELECT length(vector) FROM chunk_vectors LIMIT 1").fetchone()[0]
    assert dim == 32 * 4

    _, second = ingest(library, OWNER, [GOOD], "papers")
    ids.append(second["good.md"].document_id)
    assert set(vector_models(store, ids)) == {model_a}  # the new chunks are embedded by the ingest job

    passages = library.search(OWNER, "peregrine falcons breeding pairs", Scope(collections=("papers",)), k=10)
    assert any(p.dense_rank is not None for p in passages)
    assert any(p.bm25_rank is not None for p in passages)

    job_id = library.set_embedding_model(OWNER, "papers", model_b, background=False)
    library.run_job(OWNER, job_id)
    assert set(vector_models(store, ids)) == {model_b}
    assert [c["embedding_model"] for c in library.collections(OWNER)] == [model_b]

    with pytest.raises(ModelError):
        library.set_embedding_model(OWNER, "papers", str(tmp_path / "no-such-model"))
    assert [c["embedding_model"] for c in library.collections(OWNER)] == [model_b]
    assert library.active_jobs(OWNER) == []

    assert library.set_embedding_model(OWNER, "papers", None) is None
    assert all(p.dense_rank is None for p in library.search(OWNER, "falcons", k=10))


def test_embedding_job_in_the_background(store, encoders, facts_pdf):
    from chatcore.engine.embeddings import Encoder

    library = Library(store, encoder_for=lambda name: Encoder(name, Path(name)))
    _, outcomes = ingest(library, OWNER, [("facts.pdf", facts_pdf)], "papers")
    job_id = library.set_embedding_model(OWNER, "papers", encoders[0])
    library.wait(job_id)
    assert library.job(OWNER, job_id).status == "done"
    assert set(vector_models(store, [outcomes["facts.pdf"].document_id])) == {encoders[0]}


# -- 6. citations and grounded answers ---------------------------------------------------------------------------


def passage(n: int, text: str) -> Passage:
    return Passage(chunk_id=n, document_id=1, filename="p.pdf", title=None, page=n, char_start=0,
                   char_end=len(text), text=text)


SOURCES = [passage(1, "The Kestrel survey counted 412 breeding pairs of peregrine falcons."),
           passage(2, "Beech pollen rose around 3200 BCE in Lake Varna.")]


@pytest.mark.parametrize("answer, expected", [
    ("There were 412 pairs [1].", {1: (True, "")}),
    ("Both facts hold [1, 2].", {1: (True, ""), 2: (True, "")}),
    ("Both facts hold [1;2] and [2].", {1: (True, ""), 2: (True, "")}),
    ("Made up [3].", {3: (False, "no source [3]")}),
    ("Made up [0].", {0: (False, "no source [0]")}),
    ('It says "counted 412 breeding pairs" [1].', {1: (True, "")}),
    ('It says \u201ccounted 412 breeding pairs\u201d [1].', {1: (True, "")}),
    ('It says "counted 999 breeding pairs" [1].', {1: (False, "quoted text is not in source [1]")}),
    ('It says \u201cpollen rose around 3200\u201d [1].', {1: (False, "quoted text is not in source [1]")}),
    ("No citations at all.", {}),
    ("[1000] is too long to be a number here [12345].", {}),
])
def test_check_citations(answer, expected):
    citations = check_citations(answer, SOURCES)
    assert {c.n: c.verified for c in citations} == {n: v for n, (v, _) in expected.items()}
    for citation in citations:
        assert expected[citation.n][1] in citation.reason
        data = citation.to_dict()
        assert data["n"] == citation.n and data["verified"] == citation.verified
        if citation.passage is not None:
            assert data["document"] == "p.pdf" and data["page"] == citation.n


@pytest.fixture
def grounded(store, tmp_path, hf_engine):
    """A chat service over the tiny engine and a library holding the fact report in small passages."""
    library = Library(store, chunking=ChunkSettings(chars=300, overlap=40))
    pages, gold = fact_pages(filler_pages=1)
    ingest(library, OWNER, [("report.pdf", pdf_bytes(tmp_path, pages, name="report.pdf"))], "papers")
    return ChatService(lambda: hf_engine, store, library), gold


PARAMS = GenerationParams.create(max_new_tokens=6, seed=3, temperature=0)


def kinds(events) -> list[str]:
    names = [type(e).__name__ for e in events]
    return [n for i, n in enumerate(names) if n != "TextDelta" or names[i - 1] != "TextDelta"]


def test_grounded_answer_events_sources_and_scope(grounded, store, tmp_path):
    service, gold = grounded
    question, page = gold[0]
    scope = Scope(collections=("papers",))
    events = list(service.ask(question, PARAMS, owner=OWNER, scope=scope))
    assert kinds(events)[:3] == ["Saved", "Started", "Sourced"]
    assert kinds(events)[-2:] == ["Finished", "Cited"]
    assert set(kinds(events)[3:-2]) <= {"TextDelta"}
    saved, sourced, cited = events[0], events[2], events[-1]
    assert isinstance(saved, Saved) and isinstance(sourced, Sourced) and isinstance(cited, Cited)
    assert sourced.scope == scope and sourced.passages and sourced.passages[0].page == page
    assert cited.passages == sourced.passages and cited.message_id is not None
    sources = db.message_sources(store, OWNER, cited.message_id)
    assert [s["n"] for s in sources] == list(range(1, len(sourced.passages) + 1))
    assert [s["chunk_id"] for s in sources] == [p.chunk_id for p in sourced.passages]
    assert db.message_sources(store, OTHER, cited.message_id) == []
    assert service.library.scope(OWNER, saved.conversation_id) == scope

    # Continuing the conversation answers from the same scope, without naming it again.
    later = list(service.ask(gold[1][0], PARAMS, owner=OWNER, conversation_id=saved.conversation_id))
    resumed = next(e for e in later if isinstance(e, Sourced))
    assert resumed.scope == scope and resumed.passages[0].page == gold[1][1]
    assert isinstance(later[-1], Cited)

    # A passage saved as a note keeps its file and page, and the export cites them.
    note_id = save_passage_as_note(store, OWNER, cited.message_id, 1)
    from storage.notes import get_note

    note = get_note(store, OWNER, note_id)
    assert (note["source_document"], note["source_page"]) == ("report.pdf", page)
    (path,) = export_notes(store, OWNER, tmp_path / "notes.md", single_file=True)
    assert f"— report.pdf, page {page}" in path.read_text()
    with pytest.raises(ChatCoreError):
        save_passage_as_note(store, OWNER, cited.message_id, 99)
    with pytest.raises(ChatCoreError):
        save_passage_as_note(store, OTHER, cited.message_id, 1)


def test_grounded_answer_without_passages_is_not_grounded(grounded, store):
    service, _ = grounded
    events = list(service.ask("Zyxwvut qqqq?", PARAMS, owner=OWNER, scope=ALL))
    sourced = next(e for e in events if isinstance(e, Sourced))
    assert sourced.passages == ()
    assert isinstance(events[-1], Cited) and events[-1].citations == () and events[-1].passages == ()
    assert db.message_sources(store, OWNER, events[-1].message_id) == []
    assert any(isinstance(e, Finished) for e in events) and isinstance(events[1], Started)
    assert all(isinstance(e, (Saved, Started, Sourced, TextDelta, Finished, Cited)) for e in events)


def test_unknown_collection_scope_fails_before_anything_is_written(grounded, store):
    service, gold = grounded
    dump = "\n".join(store.db.conn.iterdump())
    with pytest.raises(NotFound, match="no collection named 'nope'"):
        list(service.ask(gold[0][0], PARAMS, owner=OWNER, scope=Scope(collections=("nope",))))
    assert "\n".join(store.db.conn.iterdump()) == dump


# -- found while testing ------------------------------------------------------------------------------------------


def test_a_document_deleted_before_its_job_ran_is_not_left_queued(library, facts_pdf):
    job_id, outcomes = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
    library.delete(OWNER, outcomes[0].document_id)
    final = library.run_job(OWNER, job_id)
    assert final.status == "done" and final.fraction == 1.0
    library.restore(OWNER, outcomes[0].document_id)
    restored = library.document(OWNER, outcomes[0].document_id)
    assert restored["status"] != "queued" and restored["error"]  # not waiting for a job that has ended
    job_id, again = library.add(OWNER, [("facts.pdf", facts_pdf)])
    assert again[0].status == "requeued"
    library.run_job(OWNER, job_id)
    assert library.document(OWNER, outcomes[0].document_id)["status"] == "ready"


def test_a_missing_page_image_is_not_found_like_a_missing_page_text(library, facts_pdf):
    _, outcomes = ingest(library, OWNER, [("facts.pdf", facts_pdf)])
    document_id = outcomes["facts.pdf"].document_id
    for page in (0, 999):
        with pytest.raises(NotFound) as text:
            library.page_text(OWNER, document_id, page)
        with pytest.raises(NotFound) as image:
            library.page_image(OWNER, document_id, page)
        assert str(text.value) == str(image.value)


def test_a_damaged_docx_package_is_refused_in_words(library, store):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    _, outcomes = ingest(library, OWNER, [("odd.docx", buffer.getvalue()), GOOD])
    row = status(library, OWNER, outcomes["odd.docx"].document_id)
    assert row["status"] == "failed" and row["error"].startswith("odd.docx is not a readable DOCX file")
    good_is_indexed(library, outcomes)


def test_an_empty_scope_stays_empty_after_a_whole_library_search(store, encoders, facts_pdf):
    from chatcore.engine.embeddings import load_encoder

    library = Library(store, encoder_for=load_encoder)
    ingest(library, OWNER, [("facts.pdf", facts_pdf)], "papers")
    library.run_job(OWNER, library.set_embedding_model(OWNER, "papers", encoders[0], background=False))
    assert library.search(OWNER, "falcons")  # fills the vector cache for the whole library
    assert library.search(OWNER, "falcons", Scope(documents=())) == []
    assert library.search(OWNER, "falcons", Scope(collections=())) == []


def test_dense_scores_stay_with_their_passages_after_a_delete_elsewhere(db_path, store, encoders, facts_pdf):
    from chatcore.engine.embeddings import load_encoder

    library = Library(store, encoder_for=load_encoder)
    _, outcomes = ingest(library, OWNER, [("facts.pdf", facts_pdf), GOOD], "papers")
    library.run_job(OWNER, library.set_embedding_model(OWNER, "papers", encoders[0], background=False))
    library.retriever.dense(OWNER, "albatross", encoders[0])  # cached
    with Store(db_path) as elsewhere:  # another process deletes a document: this one's cache is not told
        Library(elsewhere).delete(OWNER, outcomes["good.md"].document_id)
    passages = library.retriever.dense(OWNER, "albatross", encoders[0])
    assert passages and all(p.document_id != outcomes["good.md"].document_id for p in passages)
    question = load_encoder(encoders[0]).encode(["albatross"])[0]
    for p in passages:
        (blob,) = store.db.conn.execute("SELECT vector FROM chunk_vectors WHERE chunk_id = ?", (p.chunk_id,)).fetchone()
        assert p.score == pytest.approx(float(np.frombuffer(blob, dtype="<f4") @ question), abs=1e-5)
    assert [p.dense_rank for p in passages] == list(range(1, len(passages) + 1))


@pytest.mark.parametrize("answer, verified", [
    ('It kept "a conductivity of 5.8 kilosiemens" [1].', True),
    ('It kept "a conductivity of 9.9 kilosiemens" [1].', False),
    ('The survey, i.e. "the Kestrel survey counted 999 pairs" [1].', False),
])
def test_quotes_with_a_decimal_point_are_checked(answer, verified):
    source = passage(1, "Graphene sheets annealed in argon kept a conductivity of 5.8 kilosiemens per metre. "
                        "The Kestrel survey counted 412 pairs.")
    (citation,) = check_citations(answer, [source])
    assert citation.verified is verified


def test_restart_resumes_an_interrupted_embedding(db_path, encoders, facts_pdf):
    from chatcore.engine.embeddings import load_encoder

    with Store(db_path) as store:
        crashed = Library(store, encoder_for=load_encoder)
        _, outcomes = ingest(crashed, OWNER, [("facts.pdf", facts_pdf)], "papers")
        job_id = crashed.set_embedding_model(OWNER, "papers", encoders[0], background=False)
        store.db.conn.execute("UPDATE library_jobs SET updated = '2020-01-01T00:00:00.000000+00:00' WHERE id = ?",
                              (job_id,))
    with Store(db_path) as store:
        assert Library(store, encoder_for=load_encoder).resume_interrupted(background=False) == [job_id]
        assert set(vector_models(store, [outcomes["facts.pdf"].document_id])) == {encoders[0]}


def test_bad_collections_and_batches_write_nothing(library, store, facts_pdf):
    dump = "\n".join(store.db.conn.iterdump())
    for bad in ("", "x" * 101, "a\x00b"):
        with pytest.raises(ValueError):
            library.add(OWNER, [("facts.pdf", facts_pdf)], bad)
    with pytest.raises(ChatCoreError, match="more than 500"):
        library.add(OWNER, [(f"f{i}.txt", b"x") for i in range(501)])
    assert "\n".join(store.db.conn.iterdump()) == dump
    ingest(library, OWNER, [GOOD], "mine")
    for call in (lambda name: library.set_embedding_model(OTHER, name, None),
                 lambda name: library.documents(OTHER, name)):
        try:
            result = call("mine")
        except NotFound as exc:
            with pytest.raises(NotFound) as missing:
                call("nowhere")
            assert str(exc).replace("mine", "nowhere") == str(missing.value)
        else:
            assert result == []


def test_add_paths_refuses_unreadable_paths_alone(library, tmp_path, facts_pdf):
    (tmp_path / "facts.pdf").write_bytes(facts_pdf)
    (tmp_path / "folder").mkdir()
    job_id, outcomes = library.add_paths(OWNER, [tmp_path / "facts.pdf", tmp_path / "missing.pdf", tmp_path / "folder"])
    assert [o.status for o in outcomes] == ["added", "refused", "refused"]
    assert "missing.pdf" in outcomes[1].message and "folder" in outcomes[2].message
    final = library.run_job(OWNER, job_id)
    assert (final.status, final.total, final.done, final.failed) == ("done", 3, 1, 2)
    assert final.describe() == "done: 1 of 3 files indexed, 2 failed"


def test_a_finished_job_run_again_keeps_its_ending(library, facts_pdf):
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
    library.cancel_job(OWNER, job_id)
    assert library.run_job(OWNER, job_id).status == "cancelled"
    assert [d["status"] for d in library.documents(OWNER)] == ["cancelled", "cancelled"]  # not queued for good
    job_id, again = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
    assert [o.status for o in again] == ["requeued", "requeued"]
    assert library.run_job(OWNER, job_id).status == "done"
    assert [d["status"] for d in library.documents(OWNER)] == ["ready", "ready"]


def test_a_broken_progress_display_is_not_blamed_on_the_files(library, facts_pdf, caplog):
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])

    def broken(progress):
        raise RuntimeError("the progress bar went away")

    assert library.run_job(OWNER, job_id, on_progress=broken).status == "done"
    assert [d["status"] for d in library.documents(OWNER)] == ["ready", "ready"]
    assert "progress callback" in caplog.text and "the progress bar went away" in caplog.text


def test_a_failed_job_leaves_its_files_addable_again(library, store, facts_pdf):
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
    store.db.conn.execute("DROP TRIGGER chunks_fts_insert")  # the database breaks under the job
    store.db.conn.execute("CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
                          "SELECT RAISE(ABORT, 'disk trouble'); END")
    final = library.run_job(OWNER, job_id)
    assert (final.status, final.failed) == ("done", 2)  # each file fails alone, with the reason
    assert all("disk trouble" in d["error"] for d in library.documents(OWNER))
    store.db.conn.execute("DROP TRIGGER chunks_fts_insert")
    store.db.conn.execute("CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
                          "INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text); END")
    job_id, again = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
    assert [o.status for o in again] == ["requeued", "requeued"]
    library.run_job(OWNER, job_id)
    assert [d["status"] for d in library.documents(OWNER)] == ["ready", "ready"]
    assert library.search(OWNER, "albatross")[0].filename == "good.md"


def test_a_file_queued_by_an_ended_job_is_queued_again(library, store, facts_pdf):
    job_id, outcomes = library.add(OWNER, [("facts.pdf", facts_pdf)])
    db.update_job(store, job_id, status="failed", error="the process died")  # its documents left queued
    _, again = library.add(OWNER, [("facts.pdf", facts_pdf)])
    assert again[0].status == "requeued" and again[0].document_id == outcomes[0].document_id


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_search_wants_a_positive_whole_k(library, facts_pdf, k):
    ingest(library, OWNER, [("facts.pdf", facts_pdf)])
    with pytest.raises(ValueError, match="at least 1"):
        library.search(OWNER, "falcons", k=k)


REAL_PDFS = [Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),
             Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")]


@pytest.mark.skipif(not all(p.exists() for p in REAL_PDFS), reason="the system's PDF documentation is not installed")
def test_real_pdfs_index_and_answer(library):
    final, outcomes = ingest(library, OWNER, [(p.name, p.read_bytes()) for p in REAL_PDFS])
    assert (final.status, final.done) == ("done", 2)
    spec = library.document(OWNER, outcomes["shared-mime-info-spec.pdf"].document_id)
    assert spec["pages"] == 17 and spec["chunks"] > 17 and spec["extractor"].startswith("pypdfium2")
    best = library.search(OWNER, "update-mime-database command after installing the XML file")[0]
    assert best.filename == "shared-mime-info-spec.pdf"
    assert best.text == library.page_text(OWNER, best.document_id, best.page)[best.char_start:best.char_end]
    assert library.page_image(OWNER, best.document_id, best.page, scale=0.3).size[0] > 100
    assert library.search(OWNER, "DER encoding ASN.1 structures")[0].filename == "libtasn1.pdf"


def test_models_that_cannot_embed_fail_before_the_collection_changes(store, tmp_path, encoders, facts_pdf):
    from chatcore.engine.embeddings import Encoder, load_encoder

    broken = Encoder("broken", Path(encoders[0]))
    broken.tokenizer.pad_token = None  # loads, then cannot pad a batch: the job would fail, not the setting
    library = Library(store, encoder_for=lambda name: broken if name == "broken" else load_encoder(name))
    ingest(library, OWNER, [("facts.pdf", facts_pdf)], "papers")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        library.set_embedding_model(OWNER, "papers", str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="loads but cannot embed text"):
        library.set_embedding_model(OWNER, "papers", "broken")
    assert [c["embedding_model"] for c in library.collections(OWNER)] == [None]
    assert library.active_jobs(OWNER) == []


def test_an_interrupted_run_leaves_its_files_addable_again(library, facts_pdf):
    job_id, _ = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])

    def ctrl_c(progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        library.run_job(OWNER, job_id, on_progress=ctrl_c)
    assert library.job(OWNER, job_id).status == "failed"
    assert [d["status"] for d in library.documents(OWNER)] == ["failed", "failed"]  # none left queued or indexing
    assert all("KeyboardInterrupt" in d["error"] for d in library.documents(OWNER))
    job_id, again = library.add(OWNER, [("facts.pdf", facts_pdf), GOOD])
    assert [o.status for o in again] == ["requeued", "requeued"]
    library.run_job(OWNER, job_id)
    assert [d["status"] for d in library.documents(OWNER)] == ["ready", "ready"]

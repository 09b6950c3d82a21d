"""``chatcore docs`` and ``chatcore ask --docs`` on a real store, real PDFs (made ones, bad ones and the
system's own manuals) and the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatcore.api.routes import create_api_app
from chatcore.core.settings import Settings
from chatcore.services.library import Library, check_citations
from chatcore.services.library.retrieval import Passage
from chatcore.testing.commands import invoker
from chatcore.testing.documents import fact_pages, make_pdf
from chatcore.testing.engines import Scripted
from chatcore.testing.servers import manager_for, serve
from chatcore.testing.tiny import save_tiny_encoder
from storage import Store
from storage.library import message_sources

FALCONS = "How many breeding pairs of peregrine falcons did the Kestrel survey count?"
REAL_PDFS = [Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
             Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke ``chatcore``; the model is one that does not exist, so any model load fails loudly."""
    return invoker(monkeypatch, cache=tmp_path / "cache", model=tmp_path / "no-model-here")


@pytest.fixture
def papers(tmp_path: Path) -> dict[str, Path]:
    """A fact report, and the bad files a researcher's folder holds."""
    folder = tmp_path / "papers"
    folder.mkdir()
    pages, _ = fact_pages()
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "notes.pdf").write_text("a text file named like a PDF")
    return {
        "facts": make_pdf(folder / "facts.pdf", pages, title="Field report", author="R. Tern"),
        "encrypted": make_pdf(folder / "locked.pdf", ["The vault code is 4417."], password="pw"),
        "empty": folder / "empty.pdf",
        "wrong": folder / "notes.pdf",
    }


def json_of(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def documents(cli) -> dict[str, dict]:
    return {d["filename"]: d for d in json_of(cli("docs", "list", "--json"))}


def test_add_indexes_the_good_files_and_lists_each_bad_one_with_its_reason(cli, papers) -> None:
    result = cli("docs", "add", str(papers["facts"]), str(papers["encrypted"]), str(papers["empty"]),
                 str(papers["wrong"]), *map(str, REAL_PDFS), "--collection", "papers")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "  indexed    facts.pdf: 30 pages, 30 passages" in lines
    assert any(line.startswith("  indexed    libtasn1.pdf: 36 pages") for line in lines)
    assert any(line.startswith("  indexed    shared-mime-info-spec.pdf: 17 pages") for line in lines)
    assert any(line.startswith("  failed     locked.pdf is encrypted") for line in lines)
    assert "  refused    empty.pdf is empty (0 bytes)" in lines
    assert any(line.startswith("  refused    notes.pdf is not a PDF") for line in lines)
    assert "Done: 3 of 6 files indexed, 3 failed" in result.stdout
    assert result.stderr.strip().endswith("Error: 3 of 6 files could not be indexed (reasons above)")
    assert "Traceback" not in result.output
    listed = documents(cli)
    assert {name: d["status"] for name, d in listed.items()} == {
        "facts.pdf": "ready", "libtasn1.pdf": "ready", "shared-mime-info-spec.pdf": "ready",
        "locked.pdf": "failed", "empty.pdf": "failed", "notes.pdf": "failed"}
    assert all(d["collection"] == "papers" for d in listed.values())


def test_adding_good_files_exits_zero_and_again_changes_nothing(cli, papers) -> None:
    first = json_of(cli("docs", "add", str(papers["facts"]), "--json"))
    assert first["status"] == "done" and first["collection"] == "default"
    assert [(f["filename"], f["status"], f["pages"], f["chunks"]) for f in first["files"]] == [
        ("facts.pdf", "ready", 30, 30)]
    again = cli("docs", "add", str(papers["facts"]))
    assert again.exit_code == 0 and "unchanged  facts.pdf: already in the library" in again.stdout


def test_a_directory_adds_its_supported_files_and_recursive_its_subdirectories(cli, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "deeper").mkdir(parents=True)
    (folder / "method.md").write_text("# Method\n\nWe sampled the lake every week.")
    (folder / "deeper" / "results.txt").write_text("The lake warmed by two degrees.")
    (folder / ".draft.txt").write_text("hidden")
    (folder / "figure.png").write_bytes(b"\x89PNG")
    flat = json_of(cli("docs", "add", str(folder), "--json"))
    assert [f["filename"] for f in flat["files"]] == ["method.md"]
    deep = json_of(cli("docs", "add", str(folder), "--recursive", "--json"))
    assert sorted((f["filename"], f["status"]) for f in deep["files"]) == [
        ("method.md", "unchanged"), ("results.txt", "ready")]
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    result = cli("docs", "add", str(empty))
    assert result.exit_code == 1 and "no supported files inside" in result.stderr
    assert "Error: no files to add" in result.stderr


def test_list_show_search_remove_and_restore(cli, papers) -> None:
    assert cli("docs", "list").stdout == "No documents. Add some with: chatcore docs add PATH...\n"
    cli("docs", "add", str(papers["facts"]), "--collection", "papers")
    facts = documents(cli)["facts.pdf"]
    listing = cli("docs", "list", "--collection", "papers").stdout.splitlines()
    assert listing[0].split() == ["ID", "STATUS", "PAGES", "COLLECTION", "FILE"]
    assert listing[1].split()[:5] == [str(facts["id"]), "ready", "30", "papers", "facts.pdf"]
    shown = cli("docs", "show", str(facts["id"])).stdout
    for fact in ("Field report", "file  facts.pdf", "collection  papers", "status  ready", "pages  30",
                 "passages  30", "authors  R. Tern", f"sha256  {facts['sha256']}", "extractor  pypdfium2"):
        assert fact in shown
    assert json_of(cli("docs", "show", str(facts["id"]), "--json"))["sha256"] == facts["sha256"]
    found = cli("docs", "search", FALCONS, "--limit", "2").stdout
    assert found.startswith(f"[1] facts.pdf, page 3  (document {facts['id']})\n")
    assert "412 breeding pairs" in found
    hits = json_of(cli("docs", "search", FALCONS, "--collection", "papers", "--json"))
    assert (hits[0]["n"], hits[0]["document"], hits[0]["page"]) == (1, "facts.pdf", 3)
    removed = cli("docs", "remove", str(facts["id"]))
    assert removed.stdout == (f"Removed document {facts['id']} (facts.pdf). "
                              f"Undo with: chatcore docs restore {facts['id']}\n")
    assert documents(cli) == {} and cli("docs", "search", FALCONS).stdout == "No passages match.\n"
    assert cli("docs", "restore", str(facts["id"])).stdout == f"Restored document {facts['id']} (facts.pdf).\n"
    assert "facts.pdf" in documents(cli)


def test_wrong_names_and_ids_are_one_clean_line(cli) -> None:
    for args, message in [
        (("docs", "show", "999"), "Error: no document 999\n"),
        (("docs", "remove", "999"), "Error: no document 999\n"),
        (("docs", "restore", "999"), "Error: no deleted document 999\n"),
        (("docs", "list", "--collection", "nope"), "Error: no collection named 'nope'\n"),
        (("docs", "search", "x", "--collection", "nope"), "Error: no collection named 'nope'\n"),
        (("docs", "embed", "--collection", "nope", "some/model"), "Error: no collection named 'nope'\n"),
    ]:
        result = cli(*args)
        assert (result.exit_code, result.stderr) == (1, message), args


def test_another_users_documents_answer_exactly_as_missing_ones(cli, papers) -> None:
    """The CLI runs as ``local``: a document of another account is, to it, a document that does not exist."""
    library = Library(Store(Settings().db_path), encoder_for=None)
    job_id, [outcome] = library.add_paths("ada", [papers["facts"]], "papers")
    library.run_job("ada", job_id)
    theirs, missing = outcome.document_id, outcome.document_id + 1000
    for command in ("show", "remove", "restore"):
        mine = cli("docs", command, str(theirs))
        absent = cli("docs", command, str(missing))
        assert mine.exit_code == absent.exit_code == 1
        assert mine.stderr == absent.stderr.replace(str(missing), str(theirs)), command
    assert cli("docs", "list").stdout.startswith("No documents.")
    assert cli("docs", "search", FALCONS).stdout == "No passages match.\n"
    assert cli("docs", "jobs").stdout == "No jobs.\n"
    assert library.document("ada", theirs)["status"] == "ready"  # untouched by the attempts


def test_jobs_lists_progress_and_resume_finishes_an_interrupted_job(cli, papers) -> None:
    store = Store(Settings().db_path)
    library = Library(store, encoder_for=None)
    job_id, _ = library.add_paths("local", [papers["facts"]])  # queued; its worker never started: a crash
    store.db.conn.execute("UPDATE library_jobs SET updated = '2000-01-01T00:00:00+00:00' WHERE id = ?", (job_id,))
    listed = json_of(cli("docs", "jobs", "--json"))
    assert [(j["id"], j["kind"], j["status"]) for j in listed] == [(job_id, "ingest", "running")]
    assert cli("docs", "resume").stdout == f"Job {job_id}: done: 1 of 1 files indexed.\n"
    assert documents(cli)["facts.pdf"]["status"] == "ready"
    assert cli("docs", "resume").stdout == "No interrupted jobs.\n"
    assert "done: 1 of 1 files indexed" in cli("docs", "jobs").stdout


def test_embed_gives_a_collection_hybrid_search(cli, papers, tmp_path: Path) -> None:
    encoder = save_tiny_encoder(tmp_path / "encoder")
    cli("docs", "add", str(papers["facts"]), "--collection", "papers")
    result = cli("docs", "embed", "--collection", "papers", str(encoder))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Collection 'papers' now uses {encoder}: done: 30 of 30 passages embedded.\n"
    hits = json_of(cli("docs", "search", FALCONS, "--collection", "papers", "--json"))
    assert hits[0]["page"] == 3 and hits[0]["dense_rank"] is not None
    bad = cli("docs", "embed", "--collection", "papers", str(tmp_path / "missing-encoder"))
    assert bad.exit_code == 1 and "embedding model" in bad.stderr and "Traceback" not in bad.output
    off = cli("docs", "embed", "--collection", "papers", "none")
    assert off.stdout == "Collection 'papers' now uses BM25 search only.\n"


def test_ask_refuses_a_wrong_or_empty_collection_before_loading_the_model(cli, papers) -> None:
    unknown = cli("ask", "--docs", "nope", FALCONS)
    assert (unknown.exit_code, unknown.stderr) == (1, "Error: no collection named 'nope'\n")
    cli("docs", "add", str(papers["encrypted"]), "--collection", "locked")
    empty = cli("ask", "--docs", "locked", "What is the vault code?")
    assert empty.exit_code == 1
    assert "collection locked has no indexed documents yet; add some with: chatcore docs add" in empty.stderr
    nothing = cli("ask", "--docs", "all", "anything")
    assert nothing.exit_code == 1 and "the whole library has no indexed documents" in nothing.stderr
    for flag in (("--evidence",), ("--passages", "3")):
        alone = cli("ask", *flag, "anything")
        assert alone.exit_code == 2 and f"{flag[0]} needs --docs NAME (or --docs all)" in alone.stderr


def test_evidence_mode_prints_ranked_passages_without_a_model(cli, papers) -> None:
    cli("docs", "add", str(papers["facts"]), *map(str, REAL_PDFS), "--collection", "papers")
    result = cli("ask", "--docs", "papers", "--evidence", "--passages", "2", FALCONS)  # the model does not exist
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[1] facts.pdf, page 3  (document ")
    assert "**The Kestrel survey counted 412 breeding pairs of**" in result.stdout  # highlighted, line by line
    assert result.stdout.count("\n[") == 1  # two passages
    evidence = json_of(cli("ask", "--docs", "papers", "--evidence", "--json", FALCONS))["evidence"]
    start, end = evidence[0]["highlights"][0]
    assert "412 breeding pairs" in evidence[0]["text"][start:end].replace("\n", " ")


@pytest.fixture
def tiny_cli(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CHATCORE_MODEL", str(tiny_model_dir))
    return cli


def test_ask_docs_answers_with_sources_and_json_carries_checked_citations(tiny_cli, papers) -> None:
    tiny_cli("docs", "add", str(papers["facts"]), *map(str, REAL_PDFS), "--collection", "papers")
    result = tiny_cli("ask", "--docs", "papers", "--temperature", "0", "--max-tokens", "16", FALCONS)
    assert result.exit_code == 0, result.output
    answer, sources = result.stdout.split("\nSources\n")
    assert sources.startswith("  [1] facts.pdf, page 3, ")  # cited ones are checked; the rest "not cited"
    data = json_of(tiny_cli("ask", "--docs", "papers", "--json", "--temperature", "0", "--max-tokens", "16",
                            FALCONS))
    assert data["scope"] == {"collections": ["papers"]}
    assert data["sources"][0]["n"] == 1 and data["sources"][0]["document"] == "facts.pdf"
    fields = Passage.__dataclass_fields__
    passages = [Passage(**{k: v for k, v in s.items() if k in fields}) for s in data["sources"]]
    assert data["citations"] == [c.to_dict() for c in check_citations(data["text"], passages)]
    saved = message_sources(Store(Settings().db_path), "local", data["message_id"])
    assert [(s["n"], s["filename"], s["page"]) for s in saved] == [
        (s["n"], s["document"], s["page"]) for s in data["sources"]]
    # The conversation keeps its scope: continued without --docs, it still answers from the collection.
    follow_up = json_of(tiny_cli("ask", "-c", str(data["conversation_id"]), "--json", "--max-tokens", "8",
                                 "When did beech pollen rise in the Lake Varna sediment cores?"))
    assert follow_up["scope"] == {"collections": ["papers"]} and follow_up["sources"][0]["page"] == 6
    plain = tiny_cli("ask", "--max-tokens", "4", "--no-save", "Hello")  # no scope, no Sources list
    assert plain.exit_code == 0 and "Sources" not in plain.stdout


def _long_pdf(path: Path, source: Path, copies: int, label: str) -> Path:
    """A PDF of ``copies`` times ``source``'s pages after a first page of its own (so each file's bytes differ)."""
    import pypdfium2 as pdfium

    first = make_pdf(path.with_suffix(".first.pdf"), [label])
    document = pdfium.PdfDocument(first)
    original = pdfium.PdfDocument(source)
    for _ in range(copies):
        document.import_pages(original)
    document.save(path)
    return path


def test_ctrl_c_cancels_the_job_cleanly(tmp_path: Path, papers) -> None:
    """SIGINT while indexing: the job and what it had not finished are left cancelled, never half-indexed."""
    files = [_long_pdf(tmp_path / f"long-{i}.pdf", papers["facts"], 150, f"Volume {i}") for i in range(4)]
    command = [sys.executable, "-c", "from chatcore.cli import main; main()", "docs", "add", *map(str, files)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "CHATCORE_LIBRARY_MAX_PAGES": "10000"})
    assert process.stderr.readline().startswith("Indexing 4 of 4 files into collection 'default'")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate()
    assert process.returncode == 130, stderr
    assert "Cancelled: files not yet indexed are left cancelled" in stderr and "Traceback" not in stderr
    assert "Cancelled: " in stdout
    store = Store(Settings().db_path)
    library = Library(store, encoder_for=None)
    statuses = [d["status"] for d in library.documents("local")]
    assert "cancelled" in statuses and set(statuses) <= {"ready", "cancelled"}
    for document in library.documents("local"):
        if document["status"] == "cancelled":
            assert document["chunks"] == 0
    from storage.library import list_jobs

    assert list_jobs(store, "local")[0]["status"] == "cancelled"


def test_the_sources_list_marks_verified_and_unverified_citations(cli, papers, tiny_engine) -> None:
    """Through --backend openai, a server whose model answers a fixed text: the citations are checked here."""
    cli("docs", "add", str(papers["facts"]), "--collection", "papers")
    answer = 'The survey counted "412 breeding pairs of peregrine falcons" [1]. Nobody knows the rest [7].'
    backend = Scripted(tiny_engine, answer)
    with serve(create_api_app(manager=manager_for(backend), store=None)) as url:
        result = cli("ask", "--docs", "papers", "--backend", "openai", "--base-url", f"{url}/v1", "--no-save",
                     "--model", tiny_engine.model_name, "--max-tokens", "4", FALCONS)
    assert result.exit_code == 0, result.output
    assert backend.prompts[0][1].startswith("Sources:\n\n[1] (facts.pdf, page 3)\n")
    answer_text, sources = result.stdout.split("\nSources\n")
    assert answer_text.strip() == answer
    lines = sources.splitlines()
    assert lines[0] == "  [1] facts.pdf, page 3, verified"
    assert lines[-1].startswith("  [7] no such source, unverified (there is no source [7] (the answer was given ")

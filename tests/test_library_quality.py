"""Retrieval quality on known pages, and BM25 narrowing (storage.library.narrowed_queries) kept correct.

The figures themselves (recall@5 on the real manuals, latency at 100,000 chunks) are in bench/bench_library.py;
these tests hold the floor: the gold page is found, and a narrowed search never crosses owners or scopes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatcore.services.library import Library
from chatcore.services.library.retrieval import Scope
from chatcore.testing.documents import fact_pages, make_pdf
from storage import Store
from storage import library as db

QUESTIONS = Path(__file__).resolve().parent.parent / "bench" / "library_questions.json"
DISTRACTOR = [
    "Falcons and other raptors nest on cliffs; surveys of breeding pairs are repeated each spring by volunteers.",
    "Lake sediments keep pollen for thousands of years, so cores tell which trees grew around the lake.",
    "Catalysts for methanol conversion are compared by the share converted at a given temperature.",
    "Sleep and memory are linked: many studies test word recall after a night of short sleep.",
    "Sea level models differ by the emissions scenario they assume for the year 2100.",
]


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "library.db") as store:
        yield store


def library_of(store: Store) -> Library:
    return Library(store, encoder_for=lambda name: None)  # BM25 only: no embedding model is configured


def ingest(library: Library, owner: str, paths: list[Path], collection: str = "default") -> None:
    job_id, outcomes = library.add_paths(owner, paths, collection)
    assert all(o.status == "added" for o in outcomes), outcomes
    assert library.run_job(owner, job_id).status == "done"


def gold_in_top5(library: Library, owner: str, question: str, filename: str, page: int) -> bool:
    return any(p.filename == filename and p.page == page for p in library.search(owner, question, k=5))


def test_the_gold_page_of_a_known_fact_is_in_the_top_five_despite_a_distractor(store: Store, tmp_path: Path):
    pages, gold = fact_pages()
    report = make_pdf(tmp_path / "report.pdf", pages, title="Field report")
    # A second document on the same topics in general words: it competes for every question.
    distractor = make_pdf(tmp_path / "review.pdf", [" ".join(DISTRACTOR * 3)] * 6, title="A review")
    library = library_of(store)
    ingest(library, "ada", [report, distractor])
    found = [gold_in_top5(library, "ada", question, report.name, page) for question, page in gold]
    assert len(gold) >= 10
    assert sum(found) / len(found) >= 0.9, [q for (q, _), ok in zip(gold, found) if not ok]


def real_manual_questions(count: int = 6) -> tuple[list[Path], list[dict]]:
    spec = json.loads(QUESTIONS.read_text())
    paths = [Path(p) for p in spec["files"].values()]
    if not all(p.is_file() for p in paths):
        pytest.skip("the real manuals are not on this machine: " + ", ".join(map(str, paths)))
    questions = spec["questions"]
    return paths, questions[:: max(1, len(questions) // count)][:count]


def test_gold_pages_of_the_real_manuals_are_in_the_top_five(store: Store):
    paths, questions = real_manual_questions()
    library = library_of(store)
    ingest(library, "ada", paths)
    missed = [q["question"] for q in questions if not gold_in_top5(library, "ada", q["question"], q["file"], q["page"])]
    assert len(missed) <= len(questions) // 10, missed


# -- narrowing an OR of common terms (storage.library.narrowed_queries) ---------------------------------------

def text_files(tmp_path: Path, name: str, paragraphs: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n\n".join(paragraphs))
    return path


def small_chunks(store: Store) -> Library:
    from chatcore.services.library.chunking import ChunkSettings

    return Library(store, encoder_for=lambda name: None, chunking=ChunkSettings(chars=120, overlap=0))


def test_a_question_under_the_budget_is_searched_as_it_is(store: Store):
    query = db.question_query("common words about a quasar")
    assert db.narrowed_queries(store, query, budget=10) == [query]  # an empty index matches nothing


def test_narrowing_keeps_the_rare_term_and_ends_with_the_whole_query(store: Store, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    common = [f"Common words fill report paragraph number {i} with ordinary wording." for i in range(40)]
    rare = "A quasar was seen in the common report, in words few others use."
    library = small_chunks(store)
    ingest(library, "ada", [text_files(tmp_path, "notes.txt", [*common[:20], rare, *common[20:]])])
    query = db.question_query("common words quasar report")
    attempts = db.narrowed_queries(store, query, budget=5)
    assert attempts[0] == f'("quasar") AND ({query})' and attempts[-1] == query
    monkeypatch.setattr(db, "RANK_BUDGET", 5)
    narrowed = library.search("ada", "common words quasar report", k=5)
    monkeypatch.setattr(db, "RANK_BUDGET", 10**9)
    whole = library.search("ada", "common words quasar report", k=5)
    assert "quasar" in narrowed[0].text and "quasar" in whole[0].text
    # All the narrowed query's matches are in scope: it stands, though it found fewer than the limit (the
    # chunks it leaves out hold only the common words, which BM25 weighs least).
    assert len(narrowed) == 1 and len(whole) == 5


def test_a_narrowed_search_never_returns_another_owners_chunk(store: Store, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """Grace's chunks hold the rare term; Ada's only common ones. Narrowed to the rare term, the query finds
    only Grace's chunks: Ada's search must widen to her own, and never show Grace's."""
    library = small_chunks(store)
    grace = [f"Zeroize the secret key number {i} in the common buffer." if i % 10 == 0
             else f"The common buffer of Grace holds key {i}." for i in range(30)]
    ingest(library, "grace", [text_files(tmp_path, "grace.txt", grace)])
    ingest(library, "ada", [text_files(tmp_path, "ada.txt",
                                       [f"The common buffer holds key {i} of the session." for i in range(30)])])
    monkeypatch.setattr(db, "RANK_BUDGET", 5)
    query = db.question_query("zeroize the common key buffer")
    assert db.narrowed_queries(store, query, budget=5)[0] == f'("zeroize") AND ({query})'
    grace_documents = {d["id"] for d in library.documents("grace")}
    found = library.search("ada", "zeroize the common key buffer", k=5)
    assert len(found) == 5
    assert all(p.document_id not in grace_documents and "Zeroize" not in p.text for p in found)
    assert all(p.document_id in grace_documents for p in library.search("grace", "zeroize the common key buffer"))
    assert "Zeroize" in library.search("grace", "zeroize the common key buffer")[0].text


def test_a_narrowed_search_stays_in_its_scope(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    library = small_chunks(store)
    ingest(library, "ada", [text_files(tmp_path, "a.txt", [f"Quasar light in the common survey {i}." for i in range(20)])],
           "astronomy")
    ingest(library, "ada", [text_files(tmp_path, "b.txt", [f"The common survey of birds, season {i}." for i in range(20)])],
           "birds")
    monkeypatch.setattr(db, "RANK_BUDGET", 3)
    found = library.search("ada", "quasar common survey", Scope(collections=("birds",)), k=5)
    assert len(found) == 5 and all(p.filename == "b.txt" for p in found)
    astronomy = library.documents("ada", "astronomy")[0]["id"]
    found = library.search("ada", "quasar common survey", Scope(documents=(astronomy,)), k=5)
    assert found and all(p.document_id == astronomy for p in found)

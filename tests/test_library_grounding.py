"""Grounding details: joined passages, sources matched in answers that cite nothing, re-indexing on new settings."""

from __future__ import annotations

from chatcore.services.library import Library
from chatcore.services.library.chunking import ChunkSettings
from chatcore.services.library.citations import check_citations, match_sources
from chatcore.services.library.retrieval import Passage, drop_overlapping
from chatcore.testing.documents import fact_pages, make_pdf
from storage import Store

PAGE = "".join(chr(97 + i % 26) for i in range(3000))


def passage(chunk_id: int, start: int, end: int, page: int = 1, text: str = PAGE) -> Passage:
    return Passage(chunk_id, 1, "f.pdf", None, page, start, end, text[start:end])


def test_a_passage_overlapping_a_better_one_of_its_page_is_left_out():
    kept = drop_overlapping([passage(1, 800, 1800), passage(2, 0, 1000), passage(3, 100, 200, page=2),
                             passage(4, 1800, 2600)])
    assert [p.chunk_id for p in kept] == [1, 3, 4]  # 2 shares text with 1; 4 only follows it


SOURCES = [
    "The Kestrel survey counted 412 breeding pairs of peregrine falcons across the northern cliffs in 2019.",
    "Sediment cores from Lake Varna show a sharp rise in pollen from beech trees around 3200 BCE.",
]


def sources() -> list[Passage]:
    return [Passage(i, 1, "r.pdf", None, i + 3, 0, len(text), text) for i, text in enumerate(SOURCES, start=1)]


def test_an_answer_that_repeats_a_source_without_citing_it_gets_a_matched_source():
    answer = "Sure. Sediment cores from Lake Varna show a rise in beech pollen around 3200 BCE."
    [citation] = check_citations(answer, sources())
    assert (citation.n, citation.kind, citation.verified) == (2, "matched", True)
    assert citation.to_dict()["page"] == 5 and citation.to_dict()["kind"] == "matched"


def test_an_answer_with_its_own_citations_gets_no_matched_ones():
    answer = "Sediment cores from Lake Varna show a rise in beech pollen around 3200 BCE [1]."
    [citation] = check_citations(answer, sources())
    assert (citation.n, citation.kind) == (1, "cited")


def test_an_answer_unrelated_to_the_sources_matches_nothing():
    assert match_sources("Falcons are fast birds that hunt pigeons over many large modern cities.", sources()) == []


def test_documents_cut_with_other_settings_are_indexed_again_and_stay_searchable(tmp_path):
    pages, gold = fact_pages()
    make_pdf(tmp_path / "report.pdf", pages)
    store = Store(tmp_path / "library.db")
    first = Library(store, chunking=ChunkSettings(chars=1000, overlap=200))
    job, _ = first.add_paths("local", [tmp_path / "report.pdf"])
    first.run_job("local", job)
    before = first.documents("local")[0]["chunks"]
    smaller = Library(store, chunking=ChunkSettings(chars=200, overlap=40))
    [job] = smaller.reindex_outdated(background=False)
    document = smaller.documents("local")[0]
    assert document["status"] == "ready" and document["chunks"] > before
    assert document["settings"] == ChunkSettings(chars=200, overlap=40).to_dict()
    assert smaller.reindex_outdated(background=False) == []  # nothing left to do
    question, page = gold[0]
    assert page in [p.page for p in smaller.search("local", question)]


def test_a_file_name_longer_than_file_systems_allow_is_refused(tmp_path):
    library = Library(Store(tmp_path / "library.db"))
    _, [outcome] = library.add("local", [("a" * 300 + ".txt", b"some text")])
    assert outcome.status == "refused" and "the limit is 255" in outcome.message


def test_a_branch_keeps_the_scope_and_the_sources_of_the_answers_it_copies(tmp_path, hf_engine):
    from chatcore.core.params import GenerationParams
    from chatcore.services.chat import ChatService, Cited
    from chatcore.services.library import Scope
    from storage.library import conversation_scope, message_sources

    pages, gold = fact_pages()
    make_pdf(tmp_path / "report.pdf", pages)
    store = Store(tmp_path / "library.db")
    library = Library(store)
    job, _ = library.add_paths("local", [tmp_path / "report.pdf"], "reports")
    library.run_job("local", job)
    events = list(ChatService(lambda: hf_engine, store, library).ask(
        gold[0][0], GenerationParams.create(max_new_tokens=4, temperature=0), scope=Scope(("reports",))))
    cited = events[-1]
    assert isinstance(cited, Cited) and cited.message_id is not None
    conversation_id = events[0].conversation_id
    fork = store.fork_conversation("local", conversation_id, cited.message_id)
    copied = store.get_conversation("local", fork)["messages"][-1]["id"]
    assert conversation_scope(store, "local", fork) == {"collections": ["reports"]}
    original = message_sources(store, "local", cited.message_id)
    assert original and message_sources(store, "local", copied) == original


def test_brackets_in_code_or_indexing_are_not_citations():
    answer = "Use `x[1]` here.\n```\nreturn sleep([[1]])\n```\nAlso a[2] and [[3]] are not sources, but this is [1]."
    from chatcore.services.library.citations import cited_numbers

    assert cited_numbers(answer) == [1]
    assert [c.n for c in check_citations(answer, sources())] == [1]

"""The library over the API: the ``chatcore`` request field through the real ``openai`` client, and
``/v1/library`` through httpx, against a real server on a free port, with two users' keys."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from chatcore.api.routes import create_api_app
from chatcore.services.library import Library, check_citations
from chatcore.services.library.retrieval import Passage
from chatcore.testing.documents import fact_pages, make_pdf
from chatcore.testing.engines import Scripted
from chatcore.testing.servers import manager_for, serve, two_accounts
from storage import Store
from storage.library import message_sources

KEY = "library-key-K"
FALCONS = "How many breeding pairs of peregrine falcons did the Kestrel survey count?"
REAL_PDF = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("api-library") / "chatcore.db")


@pytest.fixture(scope="module")
def keys(store: Store) -> dict[str, str]:
    """API keys of two accounts, ada and bob."""
    return two_accounts(store)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("papers")
    pages, _ = fact_pages()
    return {
        "facts": make_pdf(folder / "facts.pdf", pages, title="Field report"),
        "secret": make_pdf(folder / "secret.pdf", ["The vault code is 4417."], password="pw"),
    }


@pytest.fixture(scope="module")
def server(tiny_engine, store: Store, keys: dict[str, str]):
    library = Library(store, encoder_for=None)
    with serve(create_api_app(manager=manager_for(tiny_engine), store=store, api_key=KEY, library=library)) as url:
        yield url


def http(server: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)


def client(server: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0)


def wait_for_job(api: httpx.Client, job_id: int) -> dict:
    """Poll the job until it ends (no time limit: the test runner's own timeout applies)."""
    while True:
        job = api.get(f"/library/jobs/{job_id}").json()
        if job["finished"]:
            assert job["status"] != "running"
            return job
        time.sleep(0.05)


def upload(api: httpx.Client, paths: list[Path], collection: str | None = None) -> dict:
    files = [("files", (p.name, p.read_bytes(), "application/pdf")) for p in paths]
    response = api.post("/library/documents", files=files, data={"collection": collection} if collection else {})
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture(scope="module")
def ada_library(server: str, keys: dict[str, str], files: dict[str, Path]) -> dict:
    """Ada's papers (the fact report, an encrypted PDF, a real manual), indexed; the upload's answer."""
    with http(server, keys["ada"]) as api:
        body = upload(api, [files["facts"], files["secret"], REAL_PDF], "papers")
        body["finished"] = wait_for_job(api, body["job_id"])
    return body


def test_upload_indexes_in_the_background_and_reports_each_file(ada_library: dict) -> None:
    assert ada_library["object"] == "library.upload" and ada_library["collection"] == "papers"
    assert [(f["filename"], f["status"]) for f in ada_library["files"]] == [
        ("facts.pdf", "added"), ("secret.pdf", "added"), ("libtasn1.pdf", "added")]
    job = ada_library["finished"]
    assert (job["status"], job["total"], job["done"], job["failed"], job["fraction"]) == ("done", 3, 2, 1, 1.0)
    by_name = {d["filename"]: d for d in job["documents"]}
    assert by_name["facts.pdf"]["status"] == "ready" and by_name["facts.pdf"]["pages"] == 30
    assert by_name["libtasn1.pdf"]["status"] == "ready" and by_name["libtasn1.pdf"]["pages"] == 36
    assert by_name["secret.pdf"]["status"] == "failed" and "encrypted" in by_name["secret.pdf"]["error"]
    assert job["description"] == "done: 2 of 3 files indexed, 1 failed"


def test_bad_files_are_refused_alone_with_their_reason(server: str, keys: dict[str, str], tmp_path: Path,
                                                       files: dict[str, Path]) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "notes.pdf").write_text("not a pdf at all")
    (tmp_path / "data.xyz").write_text("what")
    with http(server, keys["bob"]) as api:
        body = upload(api, [tmp_path / "empty.pdf", tmp_path / "notes.pdf", tmp_path / "data.xyz", files["facts"]])
        outcomes = {f["filename"]: (f["status"], f["message"]) for f in body["files"]}
        assert outcomes["empty.pdf"] == ("refused", "empty.pdf is empty (0 bytes)")
        assert outcomes["notes.pdf"][0] == "refused" and "not a PDF" in outcomes["notes.pdf"][1]
        assert outcomes["data.xyz"][0] == "refused" and ".xyz files are not supported" in outcomes["data.xyz"][1]
        assert outcomes["facts.pdf"][0] == "added"
        job = wait_for_job(api, body["job_id"])
        assert (job["done"], job["failed"]) == (1, 3)
        assert body["collection"] == "default"


@pytest.mark.parametrize(("kwargs", "param", "message"), [
    ({"data": {"collection": "x"}}, "file", "no files"),
    ({"files": [("file", ("a.pdf", b"%PDF-1.4", "application/pdf"))], "data": {"collection": " "}}, "collection",
     "the collection name is empty"),
    ({"json": {"file": "a.pdf"}}, "file", "multipart/form-data"),
])
def test_an_upload_without_files_or_with_a_bad_collection_is_400(server: str, keys: dict[str, str], kwargs: dict,
                                                                 param: str, message: str) -> None:
    with http(server, keys["ada"]) as api:
        response = api.post("/library/documents", **kwargs)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"]


def test_documents_are_listed_shown_searched_removed_and_restored(server: str, keys: dict[str, str],
                                                                   ada_library: dict) -> None:
    with http(server, keys["ada"]) as api:
        listed = api.get("/library/documents", params={"collection": "papers"}).json()["data"]
        facts = next(d for d in listed if d["filename"] == "facts.pdf")
        assert "owner" not in facts and facts["collection"] == "papers" and facts["title"] == "Field report"
        shown = api.get(f"/library/documents/{facts['id']}").json()
        assert shown["sha256"] == facts["sha256"] and shown["chunks"] == 30 and shown["extractor"].startswith("pypdfium2")
        hits = api.get("/library/search", params={"q": FALCONS, "collection": "papers", "k": 3}).json()["data"]
        assert hits[0]["n"] == 1 and hits[0]["document"] == "facts.pdf" and hits[0]["page"] == 3
        assert "412 breeding pairs" in hits[0]["text"].replace("\n", " ")
        gone = api.delete(f"/library/documents/{facts['id']}")
        assert gone.json()["deleted"] is True and "restore" in gone.json()["restore"]
        assert api.get(f"/library/documents/{facts['id']}").status_code == 404
        after = api.get("/library/search", params={"q": FALCONS, "collection": "papers"}).json()["data"]
        assert all(hit["document"] != "facts.pdf" for hit in after)
        assert api.post(f"/library/documents/{facts['id']}/restore").json() == {
            "id": facts["id"], "object": "library.document", "deleted": False}
        assert api.get(f"/library/documents/{facts['id']}").status_code == 200
        collections = api.get("/library/collections").json()["data"]
        assert [(c["name"], c["documents"]) for c in collections] == [("papers", 3)]


@pytest.mark.parametrize(("params", "param"), [({}, "q"), ({"q": "  "}, "q"), ({"q": "x", "k": "0"}, "k"),
                                               ({"q": "x", "k": "many"}, "k")])
def test_search_refuses_bad_parameters_by_name(server: str, keys: dict[str, str], params: dict, param: str) -> None:
    with http(server, keys["ada"]) as api:
        response = api.get("/library/search", params=params)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_another_users_ids_answer_exactly_as_missing_ones(server: str, keys: dict[str, str],
                                                          ada_library: dict) -> None:
    """Bob sees none of Ada's documents or jobs: every id of hers answers as an id that does not exist."""
    document_id = ada_library["files"][0]["document_id"]
    job_id = ada_library["job_id"]
    missing_document, missing_job = 999_999, 999_999
    with http(server, keys["bob"]) as bob, http(server, keys["ada"]) as ada:
        for method, path, missing in [
            ("GET", "/library/documents/{}", missing_document), ("DELETE", "/library/documents/{}", missing_document),
            ("POST", "/library/documents/{}/restore", missing_document), ("GET", "/library/jobs/{}", missing_job),
            ("POST", "/library/jobs/{}/cancel", missing_job),
        ]:
            target = job_id if "jobs" in path else document_id
            theirs = bob.request(method, path.format(target))
            absent = bob.request(method, path.format(missing))
            assert theirs.status_code == absent.status_code == 404, path
            assert theirs.json()["error"]["message"] == absent.json()["error"]["message"].replace(
                str(missing), str(target)), path
        assert ada.get(f"/library/documents/{document_id}").status_code == 200  # still there for her
        assert {d["id"] for d in bob.get("/library/documents").json()["data"]}.isdisjoint(
            {f["document_id"] for f in ada_library["files"]})
        hits = bob.get("/library/search", params={"q": "libtasn1 ASN.1 DER structures"}).json()["data"]
        assert all(hit["document"] != "libtasn1.pdf" for hit in hits)
        theirs = bob.get("/library/search", params={"q": "x", "collection": "papers"})
        absent = bob.get("/library/search", params={"q": "x", "collection": "nowhere"})
        assert theirs.status_code == absent.status_code == 404
        assert theirs.json()["error"]["message"].replace("papers", "nowhere") == absent.json()["error"]["message"]


def test_the_library_needs_a_key_like_the_rest_of_v1(server: str) -> None:
    with httpx.Client(base_url=f"{server}/v1") as anonymous:
        response = anonymous.get("/library/documents")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def _passages(sources: list[dict]) -> list[Passage]:
    fields = Passage.__dataclass_fields__
    return [Passage(**{k: v for k, v in s.items() if k in fields}) for s in sources]


def test_an_answer_from_a_collection_carries_its_sources_and_checked_citations(
        server: str, keys: dict[str, str], ada_library: dict, tiny_engine, store: Store) -> None:
    response = client(server, keys["ada"]).chat.completions.create(
        model=tiny_engine.model_name, messages=[{"role": "user", "content": FALCONS}], temperature=0, max_tokens=24,
        extra_body={"chatcore": {"collections": ["papers"], "passages": 3}})
    extension = response.model_extra["chatcore"]
    assert extension["scope"] == {"collections": ["papers"]}
    sources = extension["sources"]
    assert sources and sources[0]["n"] == 1 and sources[0]["document"] == "facts.pdf" and sources[0]["page"] == 3
    assert {"document_id", "char_start", "char_end", "text"} <= set(sources[0])
    text = response.choices[0].message.content
    assert extension["citations"] == [c.to_dict() for c in check_citations(text, _passages(sources))]
    # The sources are kept with the saved answer, in the same order.
    conversation = store.get_conversation("ada", extension["conversation_id"])
    answer_id = conversation["messages"][-1]["id"]
    assert [s["filename"] for s in message_sources(store, "ada", answer_id)] == [s["document"] for s in sources]


def test_a_streamed_answer_sends_sources_first_and_citations_with_the_finish(
        server: str, keys: dict[str, str], ada_library: dict, tiny_engine) -> None:
    chunks = list(client(server, keys["ada"]).chat.completions.create(
        model=tiny_engine.model_name, messages=[{"role": "user", "content": FALCONS}], temperature=0, max_tokens=12,
        stream=True, stream_options={"include_usage": True}, extra_body={"chatcore": {"library": "all"}}))
    first = chunks[0].model_extra["chatcore"]
    assert first["scope"] == {"all": True} and first["sources"][0]["document"] == "facts.pdf"
    assert "citations" not in first
    finishing = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    last = finishing.model_extra["chatcore"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert last["sources"] == first["sources"]
    assert last["citations"] == [c.to_dict() for c in check_citations(text, _passages(last["sources"]))]
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].choices == []


def test_evidence_mode_ranks_passages_with_highlights_and_generates_nothing(
        server: str, keys: dict[str, str], ada_library: dict, store: Store) -> None:
    before = store.count_conversations("ada")
    response = client(server, keys["ada"]).chat.completions.create(
        model="any-name", messages=[{"role": "user", "content": FALCONS}],
        extra_body={"chatcore": {"collections": ["papers"], "evidence": True, "passages": 2}})
    evidence = response.model_extra["chatcore"]["evidence"]
    assert [e["n"] for e in evidence] == [1, 2] and evidence[0]["document"] == "facts.pdf" and evidence[0]["page"] == 3
    start, end = evidence[0]["highlights"][0]
    assert "412 breeding pairs" in evidence[0]["text"][start:end].replace("\n", " ")
    content = response.choices[0].message.content
    assert content.startswith("[1] facts.pdf, page 3\n") and "**" in content
    assert response.usage.total_tokens == 0 and store.count_conversations("ada") == before
    streamed = list(client(server, keys["ada"]).chat.completions.create(
        model="any-name", messages=[{"role": "user", "content": FALCONS}], stream=True,
        extra_body={"chatcore": {"collections": ["papers"], "evidence": True, "passages": 2}}))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == content
    assert streamed[-1].model_extra["chatcore"]["evidence"] == evidence
    with pytest.raises(openai.BadRequestError) as caught:  # unused settings are still checked
        client(server, keys["ada"]).chat.completions.create(
            model="any-name", messages=[{"role": "user", "content": FALCONS}], temperature=5,
            extra_body={"chatcore": {"collections": ["papers"], "evidence": True}})
    assert caught.value.body["param"] == "temperature"


@pytest.mark.parametrize(("chatcore", "param", "message"), [
    ({"collections": []}, "chatcore", "chatcore.collections must be a non-empty list"),
    ({"collection": ["papers"]}, "chatcore", "chatcore.collection is not a known field"),
    ({"library": "everything"}, "chatcore", "chatcore.library must be 'all'"),
    ({"library": "all", "documents": [1]}, "chatcore", "must name exactly one of"),
    ({"library": "all", "passages": "3"}, "chatcore", "chatcore.passages must be an integer"),
    ({"library": "all", "passages": 99}, "chatcore", "chatcore.passages must be in the range [1, 20], got 99"),
    ({"library": "all", "evidence": 1}, "chatcore", "chatcore.evidence must be true or false"),
    ("papers", "chatcore", "chatcore must be an object"),
])
def test_a_wrong_chatcore_field_is_400_naming_it(server: str, keys: dict[str, str], tiny_engine, chatcore,
                                                 param: str, message: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server, keys["ada"]).chat.completions.create(
            model=tiny_engine.model_name, messages=[{"role": "user", "content": "hi"}],
            extra_body={"chatcore": chatcore})
    assert caught.value.body["param"] == param and message in caught.value.body["message"]


def test_unknown_collections_and_other_users_documents_are_404_alike(
        server: str, keys: dict[str, str], ada_library: dict, tiny_engine) -> None:
    ask = client(server, keys["bob"]).chat.completions.create
    question = [{"role": "user", "content": FALCONS}]
    with pytest.raises(openai.NotFoundError) as unknown:
        ask(model=tiny_engine.model_name, messages=question, extra_body={"chatcore": {"collections": ["papers"]}})
    assert unknown.value.body["message"] == "no collection named 'papers'"
    assert unknown.value.body["param"] == "chatcore.collections"
    adas = ada_library["files"][0]["document_id"]
    errors = []
    for document_id in (adas, 999_999):
        with pytest.raises(openai.NotFoundError) as caught:
            ask(model=tiny_engine.model_name, messages=question, extra_body={"chatcore": {"documents": [document_id]}})
        errors.append(json.dumps(caught.value.body).replace(str(document_id), "ID"))
    assert errors[0] == errors[1] and "no document ID" in errors[0]


def test_a_scope_with_nothing_indexed_says_so(server: str, keys: dict[str, str], tiny_engine, files: dict) -> None:
    with http(server, keys["bob"]) as api:
        body = upload(api, [files["secret"]], "locked")
        wait_for_job(api, body["job_id"])
    with pytest.raises(openai.BadRequestError) as caught:
        client(server, keys["bob"]).chat.completions.create(
            model=tiny_engine.model_name, messages=[{"role": "user", "content": "What is the vault code?"}],
            extra_body={"chatcore": {"collections": ["locked"]}})
    assert caught.value.body["code"] == "no_documents"
    assert "collection locked has no indexed documents" in caught.value.body["message"]


def test_a_running_job_can_be_cancelled(server: str, keys: dict[str, str], tmp_path: Path) -> None:
    """Cancelling leaves the job cancelled and no document half-indexed, whether or not it had finished."""
    pages, _ = fact_pages(filler_pages=20)
    paths = [make_pdf(tmp_path / f"long-{i}.pdf", [f"Copy {i}. " + p for p in pages]) for i in range(3)]
    with http(server, keys["bob"]) as api:
        body = upload(api, paths, "long")
        cancelled = api.post(f"/library/jobs/{body['job_id']}/cancel").json()
        job = wait_for_job(api, body["job_id"])
        statuses = {d["status"] for d in job["documents"]}
    if cancelled["status"] == "cancelled":
        assert job["status"] == "cancelled" and statuses <= {"ready", "cancelled"}
    else:  # it had already finished: cancelling a finished job changes nothing
        assert job["status"] == "done" and statuses == {"ready"}


def test_a_file_over_the_size_limit_is_refused_without_stopping_the_others(tiny_engine, tmp_path: Path,
                                                                           files: dict[str, Path]) -> None:
    store = Store(tmp_path / "small.db")
    library = Library(store, max_bytes=20_000, encoder_for=None)
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + b"0" * 30_000)
    with serve(create_api_app(manager=manager_for(tiny_engine), store=store, library=library)) as url:
        with http(url, "no-key-needed") as api:
            body = upload(api, [big, files["facts"]])
            outcomes = {f["filename"]: (f["status"], f["message"]) for f in body["files"]}
            assert outcomes["big.pdf"][0] == "refused" and "over the limit" in outcomes["big.pdf"][1]
            assert "CHATCORE_LIBRARY_MAX_MB" in outcomes["big.pdf"][1]
            assert outcomes["facts.pdf"][0] == "added"
            assert wait_for_job(api, body["job_id"])["done"] == 1


def test_citations_are_verified_against_the_passages_the_model_was_given(tiny_engine, tmp_path: Path,
                                                                         files: dict[str, Path]) -> None:
    """A quote that is in its source verifies; a number no source has does not, with the reason."""
    store = Store(tmp_path / "cite.db")
    library = Library(store, encoder_for=None)
    job_id, _ = library.add_paths("local", [files["facts"]], "papers")
    library.run_job("local", job_id)
    answer = 'The survey counted "412 breeding pairs of peregrine falcons" [1]. Nobody knows the rest [7].'
    backend = Scripted(tiny_engine, answer)
    with serve(create_api_app(manager=manager_for(backend), store=store, library=library)) as url:
        response = client(url, "no-key-needed").chat.completions.create(
            model=tiny_engine.model_name, messages=[{"role": "user", "content": FALCONS}], max_tokens=4,
            extra_body={"chatcore": {"collections": ["papers"]}})
    system, prompt = backend.prompts[0]
    assert "cite it as [n]" in system and prompt.startswith("Sources:\n\n[1] (facts.pdf, page 3)\n")
    extension = response.model_extra["chatcore"]
    given = len(extension["sources"])  # as many as fit the tiny model's window
    citations = {c["n"]: c for c in extension["citations"]}
    assert response.choices[0].message.content == answer
    assert (citations[1]["verified"], citations[1]["document"], citations[1]["page"]) == (True, "facts.pdf", 3)
    assert citations[1]["text"] == extension["sources"][0]["text"]
    assert citations[7] == {"n": 7, "kind": "cited", "verified": False, "document": None, "document_id": None, "page": None,
                            "reason": f"there is no source [7] (the answer was given {given})",
                            "char_start": None, "char_end": None, "text": None}
    answer_id = store.get_conversation("local", extension["conversation_id"])["messages"][-1]["id"]
    saved = message_sources(store, "local", answer_id)
    assert [(s["n"], s["cited"], s["verified"]) for s in saved][:1] == [(1, True, True)]

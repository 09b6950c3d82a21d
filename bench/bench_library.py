"""The library's figures: ingest speed, retrieval latency at 100,000 chunks, grounded TTFT, retrieval quality.

    python -m bench.bench_library                      # everything (15–25 minutes on 2 busy cores, mostly prefill)
    python -m bench.bench_library --parts ingest,retrieval --chunks 20000

Parts (figures are reported, never asserted):

- ``ingest``: a 300-page PDF built from the pages of two real manuals on this machine, through ``Library.add``
  + ``run_job`` (extraction, chunking, one SQLite transaction with the FTS5 triggers), and extraction alone.
- ``retrieval``: p50/p95/max of ``Library.search`` over 100,000 chunks of real manual sentences, BM25 alone and
  hybrid (BM25 + a 384-dim dense ranking fused by RRF). The encoder is a stand-in, :class:`HashEncoder`: a fixed
  random projection of a hashed bag of words (no model weights), so what is timed is the retrieval path
  (query encoding, brute-force scan, RRF, SQLite), not an embedding model's forward pass.
- ``ttft``: time to first token of a question answered from 5 passages of the real manuals, the prompt built as
  ``ChatService`` builds it, on the default model: ChatCore's engine against llama.cpp on the same token ids,
  each in its own process, rounds interleaved. Skipped, with the reason, where either is unavailable.
- ``quality``: recall@5 on bench/library_questions.json (gold pages of the two manuals) and on the synthetic
  ``fact_pages()`` report; citation accuracy of grounded answers on the default model for a sample.

Results go to ``bench/results/library.json`` and ``bench/results/library.md``; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench import say

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
QUESTIONS = Path(__file__).parent / "library_questions.json"
MANUALS = (Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
           Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"))
GGUF = Path.home() / ".cache" / "chatcore" / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OWNER, OTHER = "bench", "someone-else"
PARTS = ("ingest", "retrieval", "ttft", "quality")
GOALS = {"ingest_pages_s": 30.0, "bm25_p95_ms": 50.0, "hybrid_p95_ms": 150.0, "ttft_vs_llama_cpp": 0.3}
HASH_MODEL = "hash-bow-384"  # the name the stand-in encoder is recorded under in chunk_vectors
TTFT_QUESTION = "How do I check that the run-time libtasn1 library meets a required minimum version?"


# Shared material ---------------------------------------------------------------------------------

def manuals_present() -> bool:
    return all(path.is_file() for path in MANUALS)


def manual_pages() -> list[str]:
    """Every page's text of the two manuals, as the library extracts it."""
    from chatcore.services.library.extract import extract

    pages: list[str] = []
    for path in MANUALS:
        pages += extract(path.name, "pdf", path.read_bytes(), max_pages=10_000).pages
    return pages


def manual_sentences() -> list[str]:
    """Sentences (or lines of code and tables) of the two manuals, 20 to 400 characters each."""
    text = " ".join(manual_pages()).replace("\n", " ")
    parts = re.split(r"(?<=[.!?;:])\s+", text)
    return [p.strip() for p in parts if 20 <= len(p.strip()) <= 400]


def load_questions() -> list[dict[str, Any]]:
    return json.loads(QUESTIONS.read_text())["questions"]


def percentiles(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1], "n": len(ordered)}


class HashEncoder:
    """A stand-in embedding model: a hashed bag of lower-cased words through a fixed random projection.

    Linear in the word counts, so a text's vector is the sum of its sentences' vectors (the bench builds
    100,000 chunk vectors that way in seconds). No weights are downloaded; its rankings mean little.
    """

    def __init__(self, dim: int = 384, buckets: int = 1 << 14, seed: int = 0) -> None:
        self.dim = dim
        self.buckets = buckets
        self.projection = np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32)

    def raw(self, text: str) -> np.ndarray:
        """The unnormalised vector of one text."""
        rows = [zlib.crc32(w.encode()) % self.buckets for w in re.findall(r"\w+", text.lower())]
        return self.projection[rows].sum(axis=0) if rows else np.zeros(self.dim, dtype=np.float32)

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.stack([self.raw(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        return normalise(vectors)


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-9)).astype(np.float32)


# a. Ingest ------------------------------------------------------------------------------------------

def build_300_page_pdf(path: Path, pages: int = 300) -> Path:
    """The two manuals' pages, repeated in turn up to ``pages`` pages, as one PDF (pypdf, a bench-time tool)."""
    from pypdf import PdfReader, PdfWriter

    sources = [PdfReader(str(manual)) for manual in MANUALS]
    order = [(i, n) for i, reader in enumerate(sources) for n in range(len(reader.pages))]
    writer = PdfWriter()
    for k in range(pages):
        i, n = order[k % len(order)]
        writer.add_page(sources[i].pages[n])
    with path.open("wb") as out:
        writer.write(out)
    return path


def measure_ingest(tmp: Path, runs: int = 3) -> dict[str, Any]:
    """Pages/s of extraction alone and of add + run_job end to end, each the median of ``runs``."""
    from chatcore.services.library.extract import extract
    from chatcore.services.library.service import Library
    from storage import Store

    pdf = build_300_page_pdf(tmp / "manuals-300.pdf")
    content = pdf.read_bytes()
    extract_s, total_s, chunks = [], [], 0
    for run in range(runs):
        started = time.perf_counter()
        pages = extract(pdf.name, "pdf", content, max_pages=10_000).pages
        extract_s.append(time.perf_counter() - started)
        with Store(tmp / f"ingest-{run}.db") as store:
            library = Library(store, encoder_for=lambda name: None)
            started = time.perf_counter()
            job_id, _ = library.add(OWNER, [(pdf.name, content)])
            progress = library.run_job(OWNER, job_id)
            total_s.append(time.perf_counter() - started)
            if progress.status != "done" or progress.done != 1:
                raise RuntimeError(f"the 300-page PDF did not index: {progress.describe()}")
            chunks = library.documents(OWNER)[0]["chunks"]
        say(f"  ingest run {run + 1}/{runs}: extraction {extract_s[-1]:.2f} s, end to end {total_s[-1]:.2f} s")
    count = len(pages)
    return {"pages": count, "bytes": len(content), "chunks": chunks, "characters": sum(map(len, pages)),
            "extract_s": statistics.median(extract_s), "total_s": statistics.median(total_s),
            "extract_pages_s": count / statistics.median(extract_s),
            "ingest_pages_s": count / statistics.median(total_s), "runs": runs}


# b. Retrieval at 100,000 chunks ---------------------------------------------------------------------

def corpus_sentences(max_chars: int = 25_000_000) -> list[str]:
    """Real English sentences of this machine: the two manuals, Python's reference topics, then the
    changelogs, READMEs and copyright files under /usr/share/doc (in path order, up to ``max_chars``)."""
    import gzip
    import pydoc_data.topics

    texts = [" ".join(manual_pages()), *pydoc_data.topics.topics.values()]
    size = sum(map(len, texts))
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        if size >= max_chars:
            break
        name = path.name
        if not (name.endswith(".gz") or name == "copyright" or name.startswith(("README", "NEWS"))):
            continue
        try:
            data = path.read_bytes()
            text = (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
        texts.append(text)
        size += len(text)
    sentences: dict[str, None] = {}  # ordered and unique
    for text in texts:
        for part in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 30 <= len(part) <= 300 and sum(ch.isalpha() for ch in part) > 0.6 * len(part):
                sentences[part] = None
    return list(sentences)


def make_chunks(rng: random.Random, pool: list[str], n: int, per_chunk: int = 10) -> tuple[list[str], np.ndarray]:
    """``n`` chunk texts of ``per_chunk`` sentences drawn from ``pool``, and which sentences each holds."""
    picks = np.array([[rng.randrange(len(pool)) for _ in range(per_chunk)] for _ in range(n)], dtype=np.int64)
    return [" ".join(pool[i] for i in row) for row in picks], picks


def build_store(store: Any, chunks: int, encoder: HashEncoder, *, seed: int = 0,
                other_share: float = 0.05) -> dict[str, Any]:
    """Fill ``store`` with ``chunks`` chunks for OWNER (+5% for OTHER) in documents of 500, and their vectors."""
    from storage import library as db

    rng = random.Random(seed)
    started = time.perf_counter()
    pool = corpus_sentences()
    pool_vectors = np.stack([encoder.raw(s) for s in pool])
    say(f"  {len(pool):,} sentences of real text ({time.perf_counter() - started:.0f} s)")
    owners = [(OWNER, chunks), (OTHER, int(chunks * other_share))]
    per_document, made = 500, 0
    for owner, total in owners:
        collection = db.ensure_collection(store, owner, "bench")
        texts, picks = make_chunks(rng, pool, total)
        vectors = normalise(pool_vectors[picks].sum(axis=1))  # bag of words is additive over sentences
        for first in range(0, total, per_document):
            batch = texts[first:first + per_document]
            document_id, _ = db.add_document(store, owner, collection["id"], filename=f"{owner}-{first}.pdf",
                                             content=f"{owner} {first}".encode(), kind="pdf", settings={})
            pages = [" ".join(batch[i:i + 3]) for i in range(0, len(batch), 3)]
            rows = [(1 + i // 3, 0, len(text), text) for i, text in enumerate(batch)]
            db.finish_indexing(store, document_id, pages=pages, chunks=rows, metadata={"title": f"doc {first}"},
                               extractor="bench")
            ids = [r[0] for r in store.db.conn.execute(
                "SELECT id FROM chunks WHERE document_id = ? ORDER BY ordinal", (document_id,))]
            db.put_vectors(store, HASH_MODEL, [(i, v.tobytes()) for i, v in zip(ids, vectors[first:first + len(ids)])])
            made += len(batch)
            if made % 10_000 < per_document:
                say(f"  building: {made:,} chunks ({made / (time.perf_counter() - started):,.0f}/s)")
    return {"chunks": chunks, "other_owner_chunks": owners[1][1], "build_s": time.perf_counter() - started,
            "sentence_pool": len(pool), "chars_per_chunk": sum(map(len, texts)) / max(1, len(texts))}


def retrieval_questions(rng: random.Random, count: int = 60) -> list[str]:
    """The gold questions, then questions made of 3 to 6 words from manual sentences, ``count`` in all."""
    questions = [q["question"] for q in load_questions()]
    sentences = manual_sentences()
    templates = ("What does the manual say about {}?", "How is {} handled?", "Explain {}.", "{}?")
    while len(questions) < count:
        words = [w for w in re.findall(r"[A-Za-z_]{4,}", rng.choice(sentences))]
        if len(words) >= 3:
            picked = rng.sample(words, min(len(words), rng.randint(3, 6)))
            questions.append(rng.choice(templates).format(" ".join(picked)))
    return questions[:count]


def time_searches(library: Any, questions: list[str], scope: Any) -> tuple[list[float], list[float], list[Any]]:
    """Each question once after a short warm-up; returns wall ms and CPU ms per search, and the results.

    CPU time (this process's, SQLite included) is what the search costs on an idle machine; the wall time
    also holds whatever else the two cores were doing.
    """
    for question in questions[:5]:
        library.search(OWNER, question, scope, k=5)
    wall, cpu, results = [], [], []
    for question in questions:
        started, started_cpu = time.perf_counter(), time.process_time()
        found = library.search(OWNER, question, scope, k=5)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        results.append(found)
    return wall, cpu, results


def measure_retrieval(tmp: Path, chunks: int, questions_n: int = 60) -> dict[str, Any]:
    """p50/p95/max of BM25 and hybrid search over ``chunks`` chunks; checks no other owner's chunk comes back."""
    from chatcore.services.library.retrieval import ALL
    from chatcore.services.library.service import Library
    from storage import Store
    from storage import library as db

    encoder = HashEncoder()
    with Store(tmp / "retrieval.db") as store:
        built = build_store(store, chunks, encoder)
        library = Library(store, encoder_for=lambda name: encoder)
        questions = retrieval_questions(random.Random(1), questions_n)
        other_documents = {d["id"] for d in db.list_documents(store, OTHER)}
        bm25_ms, bm25_cpu, bm25_found = time_searches(library, questions, ALL)
        db.set_embedding_model(store, OWNER, "bench", HASH_MODEL)
        started = time.perf_counter()
        library.search(OWNER, questions[0], ALL)  # loads the vectors into memory once
        load_s = time.perf_counter() - started
        hybrid_ms, hybrid_cpu, hybrid_found = time_searches(library, questions, ALL)
        leaked = sum(p.document_id in other_documents for found in bm25_found + hybrid_found for p in found)
        empty = sum(not found for found in bm25_found)
        db.set_embedding_model(store, OWNER, "bench", None)
        at_scale = recall_at_scale(library) if manuals_present() else {"skipped": "the manuals are not here"}
    if leaked:
        raise RuntimeError(f"{leaked} passages of another owner came back: ownership is broken")
    return {**built, "questions": len(questions), "bm25": percentiles(bm25_ms), "hybrid": percentiles(hybrid_ms),
            "bm25_cpu": percentiles(bm25_cpu), "hybrid_cpu": percentiles(hybrid_cpu), "load_average": os.getloadavg(),
            "vector_load_s": load_s, "encoder": f"{HASH_MODEL}: {HashEncoder.__doc__.splitlines()[0]}",
            "bm25_empty_results": empty, "other_owner_passages_returned": leaked, "recall_at_scale": at_scale}


def recall_at_scale(library: Any) -> dict[str, Any]:
    """recall@5 of the gold questions with the two manuals added to the big store (BM25 alone), as searched
    (narrowed above ``RANK_BUDGET`` matches) and with the whole query always: what narrowing costs in quality.

    The store's chunks hold the manuals' own sentences too, so the gold pages compete with copies of their text.
    """
    from storage import library as db

    job_id, _ = library.add_paths(OWNER, MANUALS, "manuals")
    library.run_job(OWNER, job_id)
    gold = [(q["question"], q["file"], q["page"]) for q in load_questions()]
    out: dict[str, Any] = {}
    budget = db.RANK_BUDGET
    try:
        for name, value in (("narrowed", budget), ("whole_query", 10**12)):
            db.RANK_BUDGET = value
            started = time.perf_counter()
            result = recall_at_5(library, OWNER, gold)
            out[name] = {"recall_at_5": result["recall_at_5"], "ms_per_question":
                         (time.perf_counter() - started) * 1000 / len(gold)}
    finally:
        db.RANK_BUDGET = budget
    return out


# c. Time to first token, grounded ----------------------------------------------------------------

def grounded_messages(question: str = TTFT_QUESTION) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The messages ChatService sends for ``question`` over 5 passages of the manuals, and those passages."""
    from chatcore.services.library.citations import GROUNDED_SYSTEM, grounded_question

    with tempfile.TemporaryDirectory() as tmp:
        library, store = manuals_library(Path(tmp))
        passages = library.search(OWNER, question, k=5)
        store.close()
    messages = [{"role": "system", "content": GROUNDED_SYSTEM},
                {"role": "user", "content": grounded_question(question, passages)}]
    return messages, [p.to_dict() for p in passages]


def manuals_library(tmp: Path) -> tuple[Any, Any]:
    """A library holding the two manuals (BM25 only), and its store."""
    from chatcore.services.library.service import Library
    from storage import Store

    store = Store(tmp / "manuals.db")
    library = Library(store, encoder_for=lambda name: None)
    job_id, _ = library.add_paths(OWNER, MANUALS)
    library.run_job(OWNER, job_id)
    return library, store


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids through the model's chat template, exactly as the engines render a conversation."""
    from chatcore.core.chat import Message, render_ids

    return render_ids(tokenizer, [Message(m["role"], m["content"]) for m in messages])


def child_chatcore(messages: list[dict[str, str]], repeats: int) -> dict[str, Any]:
    """ChatCore's engine: submit -> first token on the grounded prompt, cold (no held prefix), median of repeats."""
    from bench.bench_engines import timed_request
    from chatcore.core.settings import Settings
    from chatcore.engine.fast.engine import FastEngine
    from chatcore.engine.loader import load_engine

    engine = load_engine(Settings(), progress=say)
    if not isinstance(engine, FastEngine) or engine.kernels != "native":
        return {"skipped": f"the default model did not load on ChatCore's native kernels "
                           f"({type(engine).__name__}, kernels={getattr(engine, 'kernels', None)})"}
    ids = prompt_ids(engine.tokenizer, messages)
    timed_request(engine.scheduler, ids[:64], 4)  # warm-up
    engine.scheduler.reuse_prefixes = False
    cold = [timed_request(engine.scheduler, ids, 1)[0] * 1000 for _ in range(repeats)]
    engine.scheduler.reuse_prefixes = True  # as served: the system prompt's tokens are held from the last answer
    timed_request(engine.scheduler, ids[:-8], 1)
    warm = [timed_request(engine.scheduler, ids, 1)[0] * 1000 for _ in range(repeats)]
    return {"prompt_tokens": len(ids), "ttft_ms": statistics.median(cold), "ttft_prefix_held_ms": statistics.median(warm),
            "kernels": engine.kernels, "quant": engine.quant}


def child_llama_cpp(messages: list[dict[str, str]], repeats: int) -> dict[str, Any]:
    """llama.cpp on the same GGUF weights and the same token ids: submit -> first token, median of repeats."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        return {"skipped": f"llama-cpp-python is not installed ({exc}); `make bench` installs it"}
    if not GGUF.is_file():
        return {"skipped": f"no GGUF at {GGUF} (python -m bench converts it)"}
    from transformers import AutoTokenizer

    from chatcore.core.settings import Settings
    from chatcore.engine import sources

    settings = Settings()
    directory = sources.ensure_local(settings.model, settings, say)
    ids = prompt_ids(AutoTokenizer.from_pretrained(directory), messages)
    llm = Llama(model_path=str(GGUF), n_ctx=4096, n_threads=2, n_threads_batch=2, verbose=False)

    def first_token() -> float:
        llm.reset()  # else generate() reuses the tokens still evaluated from the last run: no prefill at all
        started = time.perf_counter()
        for _ in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            return (time.perf_counter() - started) * 1000
        raise RuntimeError("llama.cpp produced no token")

    llm.reset()
    next(iter(llm.generate(ids[:64], top_k=1, temp=0.0, reset=True)))  # warm-up
    times = [first_token() for _ in range(repeats)]
    return {"prompt_tokens": len(ids), "ttft_ms": statistics.median(times)}


def measure_ttft(rounds: int = 2, repeats: int = 2) -> dict[str, Any]:
    """ChatCore against llama.cpp on the same grounded prompt, each in its own process, rounds interleaved."""
    messages, passages = grounded_messages()
    spec = Path(tempfile.mkstemp(suffix=".json")[1])
    spec.write_text(json.dumps({"messages": messages, "repeats": repeats}))
    runs: dict[str, list[dict[str, Any]]] = {"chatcore": [], "llama.cpp": []}
    try:
        for r in range(rounds):
            for engine in (("chatcore", "llama.cpp") if r % 2 == 0 else ("llama.cpp", "chatcore")):
                say(f"  ttft round {r + 1}/{rounds}: {engine}…")
                result = run_child(f"ttft-{engine}", spec)
                runs[engine].append(result)
                if "skipped" in result:
                    say(f"  {engine}: skipped: {result['skipped']}")
    finally:
        spec.unlink(missing_ok=True)
    out: dict[str, Any] = {"question": TTFT_QUESTION,
                           "passages": [f"{p['filename']} p{p['page']}" for p in passages]}
    for engine, results in runs.items():
        kept = [res for res in results if "skipped" not in res]
        if not kept:
            out[engine] = {"skipped": results[0]["skipped"]}
            continue
        out[engine] = {key: (statistics.median(res[key] for res in kept) if isinstance(kept[0][key], float)
                             else kept[0][key]) for key in kept[0]}
        out[engine]["runs"] = [res["ttft_ms"] for res in kept]
    if "ttft_ms" in out["chatcore"] and "ttft_ms" in out["llama.cpp"]:
        out["ttft_vs_llama_cpp"] = out["chatcore"]["ttft_ms"] / out["llama.cpp"]["ttft_ms"]
    return out


def run_child(part: str, spec: Path) -> dict[str, Any]:
    """One measurement in its own process (its own memory and threads); its last stdout line is the JSON."""
    out = subprocess.run([sys.executable, "-m", "bench.bench_library", "--child", part, "--spec", str(spec)],
                         capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    if out.returncode != 0:
        return {"skipped": f"{part} failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# d. Quality ------------------------------------------------------------------------------------------

def recall_at_5(library: Any, owner: str, gold: list[tuple[str, str, int]]) -> dict[str, Any]:
    """Share of questions whose gold (file, page) is among the top 5 passages, and the misses."""
    misses = []
    for question, filename, page in gold:
        found = library.search(owner, question, k=5)
        if not any(p.filename == filename and p.page == page for p in found):
            misses.append({"question": question, "gold": f"{filename} p{page}",
                           "got": [f"{p.filename} p{p.page}" for p in found]})
    return {"recall_at_5": 1 - len(misses) / len(gold), "questions": len(gold), "misses": misses}


def measure_recall(tmp: Path) -> dict[str, Any]:
    """recall@5 on the manuals' gold questions and on the synthetic fact report (with a distractor document)."""
    from chatcore.services.library.service import Library
    from chatcore.testing.documents import fact_pages, make_pdf
    from storage import Store

    out: dict[str, Any] = {}
    if manuals_present():
        library, store = manuals_library(tmp)
        gold = [(q["question"], q["file"], q["page"]) for q in load_questions()]
        out["manuals"] = recall_at_5(library, OWNER, gold)
        store.close()
    else:
        out["manuals"] = {"skipped": f"the manuals are not on this machine ({', '.join(map(str, MANUALS))})"}
    pages, gold_pages = fact_pages()
    report = make_pdf(tmp / "facts.pdf", pages, title="Field report")
    with Store(tmp / "facts.db") as store:
        library = Library(store, encoder_for=lambda name: None)
        job_id, _ = library.add_paths(OWNER, [report])
        library.run_job(OWNER, job_id)
        out["fact_pages"] = recall_at_5(library, OWNER, [(q, report.name, page) for q, page in gold_pages])
    return out


def child_citations(questions: list[dict[str, Any]], max_new_tokens: int = 160) -> dict[str, Any]:
    """Grounded answers through ChatService on the default model; how many [n] check out and hit a gold page."""
    from chatcore.core.params import GenerationParams
    from chatcore.core.settings import Settings
    from chatcore.engine.loader import load_engine
    from chatcore.services.chat import ChatService, Cited
    from chatcore.services.library.retrieval import ALL

    engine = load_engine(Settings(), progress=say)
    params = GenerationParams.create(temperature=0, max_new_tokens=max_new_tokens, seed=0)
    counts = Counter()
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        library, store = manuals_library(Path(tmp))
        service = ChatService(lambda: engine, store, library)
        for q in questions:
            events = list(service.ask(q["question"], params, owner=OWNER, scope=ALL, save=False))
            citations = next(e for e in events if isinstance(e, Cited)).citations
            answer = next(e.text for e in events if type(e).__name__ == "Finished")
            # "cited": the model wrote [n]; "matched" (where the service has it): ChatCore found an uncited
            # answer's sentence in a passage. Only the model's own citations measure citation accuracy.
            cited = [c for c in citations if getattr(c, "kind", "cited") == "cited"]
            matched = [c for c in citations if getattr(c, "kind", "cited") == "matched"]
            on_gold = [c for c in cited if c.verified and c.passage and c.passage.filename == q["file"]
                       and c.passage.page == q["page"]]
            counts.update(citations=len(cited), verified=sum(c.verified for c in cited), on_gold=len(on_gold),
                          answers_citing=bool(cited), matched=len(matched),
                          matched_on_gold=sum(c.passage.filename == q["file"] and c.passage.page == q["page"]
                                              for c in matched if c.passage),
                          gold_retrieved=any(p.filename == q["file"] and p.page == q["page"]
                                             for p in next(e for e in events if isinstance(e, Cited)).passages))
            samples.append({"question": q["question"], "gold": f"{q['file']} p{q['page']}", "answer": answer[:400],
                            "cited": [c.n for c in cited], "verified": [c.n for c in cited if c.verified],
                            "matched": [c.n for c in matched], "gold_page_cited": bool(on_gold)})
        store.close()
    cited = counts["citations"]
    return {"answers": len(questions), "answers_with_citations": counts["answers_citing"], "citations": cited,
            "verified_share": counts["verified"] / cited if cited else None,
            "gold_share": counts["on_gold"] / cited if cited else None,
            "matched_sources": counts["matched"], "matched_on_gold": counts["matched_on_gold"],
            "gold_page_among_passages": counts["gold_retrieved"],
            "model": engine.model_name, "max_new_tokens": max_new_tokens, "samples": samples}


def measure_quality(tmp: Path, sample: int = 8) -> dict[str, Any]:
    out = measure_recall(tmp)
    if not manuals_present():
        out["citations"] = {"skipped": "the manuals are not on this machine"}
        return out
    picked = random.Random(3).sample(load_questions(), sample)
    spec = Path(tempfile.mkstemp(suffix=".json")[1])
    spec.write_text(json.dumps({"questions": picked}))
    try:
        say(f"  citations: {sample} grounded answers on the default model…")
        out["citations"] = run_child("citations", spec)
    finally:
        spec.unlink(missing_ok=True)
    return out


# Report ----------------------------------------------------------------------------------------------

def markdown(report: dict[str, Any]) -> str:
    """The figures as a markdown table, each against its goal."""
    rows = ["| figure | value | goal |", "|---|---|---|"]
    ingest, retrieval, ttft, quality = (report.get(p, {}) for p in PARTS)
    if "ingest_pages_s" in ingest:
        rows += [f"| ingest, 300-page PDF, add + run_job | {ingest['ingest_pages_s']:.0f} pages/s "
                 f"({ingest['total_s']:.2f} s, {ingest['chunks']} chunks) | ≥ 30 pages/s |",
                 f"| extraction alone (pypdfium2) | {ingest['extract_pages_s']:.0f} pages/s | – |"]
    for name, goal in (("bm25", "p95 ≤ 50 ms"), ("hybrid", "p95 ≤ 150 ms")):
        if name in retrieval:
            r = retrieval[name]
            c = retrieval[f"{name}_cpu"]
            rows.append(f"| {name} search, {retrieval['chunks']:,} chunks, {r['n']} questions | p50 {r['p50_ms']:.1f} ms, "
                        f"p95 {r['p95_ms']:.1f} ms, max {r['max_ms']:.1f} ms (CPU p50 {c['p50_ms']:.1f}, "
                        f"p95 {c['p95_ms']:.1f} ms) | {goal} |")
    scale = retrieval.get("recall_at_scale", {})
    if "narrowed" in scale:
        rows.append(f"| recall@5 of the manual questions inside the {retrieval['chunks']:,}-chunk store: as searched / whole query | "
                    f"{scale['narrowed']['recall_at_5']:.0%} / {scale['whole_query']['recall_at_5']:.0%} | – |")
    for engine in ("chatcore", "llama.cpp"):
        row = ttft.get(engine)
        if row:
            value = row.get("skipped") or f"{row['ttft_ms']:.0f} ms ({row['prompt_tokens']} prompt tokens)"
            rows.append(f"| TTFT, 5 passages, {engine} | {value} | – |")
    if "ttft_vs_llama_cpp" in ttft:
        rows.append(f"| TTFT ratio ChatCore / llama.cpp | {ttft['ttft_vs_llama_cpp']:.2f}x | ≤ 0.3x |")
    for name in ("manuals", "fact_pages"):
        row = quality.get(name, {})
        if "recall_at_5" in row:
            rows.append(f"| recall@5, {name} ({row['questions']} questions) | {row['recall_at_5']:.0%} | – |")
    cites = quality.get("citations", {})
    if cites.get("citations"):
        rows.append(f"| the model's [n]: verified / on a gold page ({cites['answers']} answers, {cites['citations']} [n] "
                    f"in {cites['answers_with_citations']}) | {cites['verified_share']:.0%} / {cites['gold_share']:.0%} | – |")
    elif cites.get("answers"):
        rows.append(f"| the model's [n] ({cites['answers']} grounded answers) | none written | – |")
    elif cites:
        rows.append(f"| citations | {cites.get('skipped')} | – |")
    if cites.get("answers"):
        rows.append(f"| sources ChatCore matched in uncited answers: all / on a gold page | {cites['matched_sources']} / "
                    f"{cites['matched_on_gold']} | – |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, of: " + ", ".join(PARTS))
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the retrieval store")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved TTFT rounds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.spec.read_text())
        child = {"ttft-chatcore": lambda: child_chatcore(spec["messages"], spec["repeats"]),
                 "ttft-llama.cpp": lambda: child_llama_cpp(spec["messages"], spec["repeats"]),
                 "citations": lambda: child_citations(spec["questions"])}[args.child]
        print(json.dumps(child()))
        return 0
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    output = RESULTS / "library.json"
    # Parts not run this time keep their figures from the last run (each part says when it was measured).
    report: dict[str, Any] = json.loads(output.read_text()) if output.is_file() else {}
    report.update({"cpus": os.cpu_count(), "python": platform.python_version(),
                   "machine": platform.processor() or platform.machine(), "goals": GOALS})
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            say(f"[{part}]")
            if part in ("ingest", "ttft") and not manuals_present():
                report[part] = {"skipped": f"the manuals are not on this machine ({', '.join(map(str, MANUALS))})"}
                continue
            started = time.perf_counter()
            report[part] = {"ingest": lambda: measure_ingest(Path(tmp)),
                            "retrieval": lambda: measure_retrieval(Path(tmp), args.chunks),
                            "ttft": lambda: measure_ttft(args.rounds),
                            "quality": lambda: measure_quality(Path(tmp))}[part]()
            report[part]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            report[part]["load_average_after"] = os.getloadavg()
            say(f"[{part}] done in {time.perf_counter() - started:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (RESULTS / "library.md").write_text(f"# Library figures ({os.cpu_count()} CPUs)\n\n"
                                        "`python -m bench.bench_library`\n\n" + table)
    print(table)
    print(f"(written to {output} and {RESULTS / 'library.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

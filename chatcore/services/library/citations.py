"""Grounded answers: passages numbered into the prompt, ``[n]`` in the answer checked against them, evidence.

A citation is **verified** when its number names a passage the model was given and every text it quotes
(in straight or curly double quotes, in the same sentence) is in that passage. Otherwise it is
**unverified**, with the reason. An answer that cites nothing gets **matched** sources instead: the
passages whose words its sentences repeat (``match_sources``), labelled as found by ChatCore, not cited
by the model. Nothing here calls the model.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from chatcore.services.library.retrieval import Passage

GROUNDED_SYSTEM = (
    "You answer questions from the numbered sources you are given. Use only what the sources say. "
    "After each sentence that uses a source, cite it as [n], for example [1] or [2]. "
    "If the sources do not answer the question, say that they do not."
)
# Not an index or a nested list (``x[1]``, ``[[1]]``): a citation follows a space, punctuation or a line start.
CITATION = re.compile(r"(?<![\w\[\])])\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\](?!\])")
# Code is not prose: ``[1]`` inside a code block or span is never a citation.
_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.S)
QUOTE = re.compile(r"[\"“]([^\"“”]{6,}?)[\"”]")
# A sentence ends at . ! ? not followed by a letter or digit ("5.8", "i.e." stay inside it, with their quotes).
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?]+(?=\w))+(?:[.!?]+|\n|$)")
# In a document's text a single line break is only the page's wrapping: a sentence runs on to its full stop
# or to a blank line.
_PROSE_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?]+(?=\w)|\n(?![ \t]*\n))+(?:[.!?]+|\n|$)")
_WORD = re.compile(r"\w+")


@dataclass
class Citation:
    """One number the answer cites, where it points and whether it checks out."""

    n: int
    verified: bool
    reason: str = ""  # why it is unverified
    passage: Passage | None = None
    quotes: list[str] = field(default_factory=list)
    # "cited": the model wrote [n]; "matched": the model cited nothing, and ChatCore found a sentence of the
    # answer in passage n (small models often repeat a source without citing it).
    kind: str = "cited"

    def to_dict(self) -> dict[str, Any]:
        """The citation as the CLI's and the API's JSON: ``{n, document, page, char_start, char_end, text, verified}``."""
        p = self.passage
        return {"n": self.n, "kind": self.kind, "verified": self.verified, "reason": self.reason or None,
                "document": p.filename if p else None, "document_id": p.document_id if p else None,
                "page": p.page if p else None, "char_start": p.char_start if p else None,
                "char_end": p.char_end if p else None, "text": p.text if p else None}


def numbered_sources(passages: Sequence[Passage]) -> str:
    """The passages as the prompt shows them: ``[n] (file, page p)`` then the text."""
    return "\n\n".join(f"[{n}] ({p.where})\n{p.text}" for n, p in enumerate(passages, start=1))


def grounded_question(question: str, passages: Sequence[Passage]) -> str:
    """The user turn the model sees: the sources, then the question and how to cite."""
    return (f"Sources:\n\n{numbered_sources(passages)}\n\nQuestion: {question}\n\n"
            "Answer from the sources above and cite them as [n].")


def fit_passages(question: str, passages: Sequence[Passage], budget: int,
                 count_tokens: Callable[[str], int] | None) -> list[Passage]:
    """The best passages whose grounded prompt fits ``budget`` tokens (at least none, never a cut passage)."""
    count = count_tokens or (lambda text: len(text) // 3 + 1)  # a safe over-estimate without a tokenizer
    kept: list[Passage] = []
    for passage in passages:
        if count(GROUNDED_SYSTEM + grounded_question(question, [*kept, passage])) > budget:
            break
        kept.append(passage)
    return kept


def cited_numbers(answer: str) -> list[int]:
    """Every ``[n]`` (and ``[n, m]``) in the answer, in order of first appearance."""
    seen: list[int] = []
    for match in CITATION.finditer(without_code(answer)):
        for number in re.split(r"\s*[,;]\s*", match.group(1)):
            if int(number) not in seen:
                seen.append(int(number))
    return seen


def without_code(answer: str) -> str:
    """The answer with its code blocks and spans blanked (same length, so offsets hold)."""
    return _CODE.sub(lambda m: " " * len(m.group()), answer)


def check_citations(answer: str, passages: Sequence[Passage]) -> list[Citation]:
    """Each number the answer cites, mapped to its passage and checked (see the module's docstring)."""
    found: dict[int, Citation] = {}
    for sentence in _SENTENCE.finditer(without_code(answer)):
        text = sentence.group()
        quotes = [q.strip() for q in QUOTE.findall(text)]
        for match in CITATION.finditer(text):
            for number in (int(x) for x in re.split(r"\s*[,;]\s*", match.group(1))):
                citation = found.setdefault(number, _citation(number, passages))
                if citation.passage is None:
                    continue
                for quote in quotes:
                    citation.quotes.append(quote)
                    if _normal(quote) not in _normal(citation.passage.text) and citation.verified:
                        citation.verified, citation.reason = False, f"the quoted text is not in source [{number}]"
    if not found:
        return match_sources(answer, passages)
    return sorted(found.values(), key=lambda c: c.n)


# A sentence is matched to a passage when most of its content words are in it, and there are enough of them.
MATCH_SHARE = 0.7
MATCH_MIN_WORDS = 5
_STOP = frozenset("the a an of to in on for and or is are was were be by with as at from that this it its which "
                  "can may will not no".split())


def match_sources(answer: str, passages: Sequence[Passage]) -> list[Citation]:
    """For an answer that cites nothing: the passages whose words its sentences repeat, as ``matched`` citations.

    Each sentence with at least ``MATCH_MIN_WORDS`` content words is matched to the passage holding the largest
    share of them, when that share is at least ``MATCH_SHARE``. A matched citation is verified by construction
    (the words are there) and says so in its ``kind``: the model did not cite it.
    """
    vocabularies = [set(_content_words(p.text)) for p in passages]
    found: dict[int, Citation] = {}
    for sentence in _SENTENCE.finditer(without_code(answer)):
        words = set(_content_words(sentence.group()))
        if len(words) < MATCH_MIN_WORDS or not vocabularies:
            continue
        shares = [len(words & vocabulary) / len(words) for vocabulary in vocabularies]
        best = max(range(len(shares)), key=shares.__getitem__)
        if shares[best] >= MATCH_SHARE and best + 1 not in found:
            found[best + 1] = Citation(best + 1, True, passage=passages[best], kind="matched",
                                       reason=f"not cited by the model; {shares[best]:.0%} of a sentence's words are in it")
    return sorted(found.values(), key=lambda c: c.n)


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


def _citation(number: int, passages: Sequence[Passage]) -> Citation:
    if 1 <= number <= len(passages):
        return Citation(number, True, passage=passages[number - 1])
    return Citation(number, False, f"there is no source [{number}] (the answer was given {len(passages)})")


def _normal(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def best_sentences(question: str, text: str, *, limit: int = 2) -> list[tuple[int, int]]:
    """``(start, end)`` of the passage's sentences that share the most words with the question, in text order."""
    from storage.library import STOPWORDS  # the words BM25 does not rank by either

    wanted = {w for w in _WORD.findall(question.lower()) if len(w) > 2 and w not in STOPWORDS}
    scored = []
    for match in _PROSE_SENTENCE.finditer(text):
        words = {w for w in _WORD.findall(match.group().lower())}
        # A word counts when it matches a question word or shares its first five letters (crude stemming).
        score = sum(1 for w in wanted if w in words or any(len(w) > 5 and v.startswith(w[:5]) for v in words))
        if score:
            start = match.start() + len(match.group()) - len(match.group().lstrip())
            scored.append((score, start, match.end()))
    best = sorted(scored, key=lambda s: -s[0])[:limit]
    # A runner-up is marked only when it is nearly as close to the question as the best sentence.
    best = [item for item in best if item[0] * 2 >= best[0][0]] if best else []
    return sorted((start, end) for _, start, end in best)


@dataclass
class Evidence:
    """A ranked passage with its best-matching sentences, for evidence mode (nothing is generated)."""

    n: int
    passage: Passage
    highlights: list[tuple[int, int]]  # offsets into passage.text

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, **self.passage.to_dict(), "highlights": [list(h) for h in self.highlights]}


def evidence(question: str, passages: Sequence[Passage]) -> list[Evidence]:
    """Evidence mode: the passages, best first, each with its sentences closest to the question."""
    return [Evidence(n, p, best_sentences(question, p.text)) for n, p in enumerate(passages, start=1)]


def source_rows(passages: Sequence[Passage], citations: Sequence[Citation]) -> list[dict[str, Any]]:
    """The rows ``storage.library.save_message_sources`` keeps for an answer."""
    by_number = {c.n: c for c in citations}
    return [{**{k: v for k, v in asdict(p).items() if k in ("chunk_id", "document_id", "filename", "page",
                                                           "char_start", "char_end", "text", "score")},
             "n": n, "cited": n in by_number, "kind": by_number[n].kind if n in by_number else None,
             "verified": by_number[n].verified if n in by_number else None}
            for n, p in enumerate(passages, start=1)]

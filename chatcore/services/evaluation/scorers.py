"""Scorers: how one output of one item is judged. Each gives a value in 0..1 and whether it counts as correct.

A scorer declares what it ``needs`` of an output (generated text, per-choice log-likelihoods, retrieved
sources), so a rescore can tell what it can score without generating again.

The scorers: SQuAD-normalized ``exact``, ``contains``, ``regex`` and token ``f1`` on short answers; ``choice``
(the letter written), ``loglik`` and ``loglik_norm`` (lm-evaluation-harness's acc and acc_norm) on multiple
choice; ``recall@k`` and ``citations`` against gold pages; and ``judge``, an LLM grading by a rubric.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from chatcore.core.errors import ParameterError
from chatcore.core.events import Finished, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.engine.base import Backend
from chatcore.services.evaluation.testsets import LETTERS, TestItem
from chatcore.services.library.citations import cited_numbers


@dataclass(frozen=True)
class ChoiceLikelihood:
    """One choice's log-likelihood after the item's context, as lm-evaluation-harness computes it."""

    logprob: float  # sum of the continuation tokens' log-probabilities
    greedy: bool  # every continuation token was the argmax
    tokens: int
    chars: int  # len(choice), acc_norm's normalizer

    def to_dict(self) -> dict[str, Any]:
        return {"logprob": self.logprob, "greedy": self.greedy, "tokens": self.tokens, "chars": self.chars}


@dataclass(frozen=True)
class Output:
    """What a model produced for one item: any of generated text, choice likelihoods and retrieved sources."""

    text: str | None = None
    choices: tuple[ChoiceLikelihood, ...] | None = None
    sources: tuple[dict[str, Any], ...] | None = None  # Passage.to_dict() of each retrieved passage, in rank order


@dataclass(frozen=True)
class Score:
    """A scorer's verdict on one output."""

    value: float  # 0..1
    correct: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    """Judges one output of one item; ``None`` when the item is not one it scores (e.g. a choice scorer on a
    short-answer item)."""

    name: str
    needs: str  # "text", "choices" or "sources"

    def score(self, item: TestItem, output: Output) -> Score | None: ...


# ---- Text normalization and token F1, as SQuAD's evaluation script defines them ----------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
F1_CORRECT = 0.5  # token F1 at or above which an answer counts as correct


def normalize(text: str) -> str:
    """SQuAD's ``normalize_answer``: lowercase, drop punctuation, drop the articles a/an/the, collapse spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def token_f1(prediction: str, answer: str) -> tuple[float, float, float]:
    """SQuAD's token F1 of ``prediction`` against one answer: ``(f1, precision, recall)``."""
    predicted, gold = normalize(prediction).split(), normalize(answer).split()
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall), precision, recall


def _short_answers(item: TestItem, output: Output) -> tuple[str, ...] | None:
    """The accepted answers a text-matching scorer compares with, or None when it does not score the item:
    multiple choice (the choice scorers judge those), no accepted answers, or no generated text."""
    if item.multiple_choice or not item.answers or output.text is None:
        return None
    return item.answers


def _verdict(correct: bool, **detail: Any) -> Score:
    return Score(1.0 if correct else 0.0, correct, detail)


class ExactMatch:
    """Normalized exact match against any accepted answer."""

    name, needs = "exact", "text"

    def score(self, item: TestItem, output: Output) -> Score | None:
        answers = _short_answers(item, output)
        if answers is None:
            return None
        said = normalize(output.text or "")
        matched = next((a for a in answers if normalize(a) == said), None)
        return _verdict(matched is not None, matched=matched)


class Contains:
    """Any accepted answer, normalized, appears in the normalized output (on word boundaries)."""

    name, needs = "contains", "text"

    def score(self, item: TestItem, output: Output) -> Score | None:
        answers = _short_answers(item, output)
        if answers is None:
            return None
        # Padded with spaces so "4" is not found inside "14": normalized text is words joined by single spaces.
        said = f" {normalize(output.text or '')} "
        matched = next((a for a in answers if normalize(a) and f" {normalize(a)} " in said), None)
        return _verdict(matched is not None, matched=matched)


class RegexMatch:
    """Any accepted answer, read as a Python regular expression, is found in the output (case-insensitive).

    A pattern that does not compile cannot be refused earlier (the scorer is built before it sees items), so
    it is named in the score's ``error`` and the item is judged by its other patterns.
    """

    name, needs = "regex", "text"

    def score(self, item: TestItem, output: Output) -> Score | None:
        answers = _short_answers(item, output)
        if answers is None:
            return None
        errors: list[str] = []
        matched = None
        for pattern in answers:
            try:
                if re.search(pattern, output.text or "", re.IGNORECASE):
                    matched = pattern
                    break
            except re.error as exc:
                errors.append(f"answer {pattern!r} is not a valid regular expression: {exc}")
        detail: dict[str, Any] = {"matched": matched}
        if errors:
            detail["error"] = "; ".join(errors)
        return _verdict(matched is not None, **detail)


class TokenF1:
    """SQuAD token F1, the best over the accepted answers; correct at ``F1_CORRECT`` or above."""

    name, needs = "f1", "text"

    def score(self, item: TestItem, output: Output) -> Score | None:
        answers = _short_answers(item, output)
        if answers is None:
            return None
        f1, precision, recall = max(token_f1(output.text or "", answer) for answer in answers)
        return Score(f1, f1 >= F1_CORRECT, {"precision": precision, "recall": recall})


# ---- Multiple choice: the letter the model wrote, or the likelihood of each choice -------------------------

# The readings of a letter, tried in order; the first that names exactly one valid letter wins.
_LETTER_ALONE = re.compile(r"^\s*[(\[]?([A-Za-z])[)\]]?[.:]?\s*$")
_ANSWER_IS = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?:?\s*(?:(?i:option|choice)\s+)?[(\[]?([A-Z])[)\]]?(?![\w])")
_LEADING = re.compile(r"^\s*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.):])(?=\s|$)")
_MARKED = re.compile(r"\(([A-Z])\)|\b(?i:option|choice)\s+([A-Z])\b")
# "The answer is A cell ..." and "answer is I think" use A and I as words, not as letters.
_WORD_AFTER = re.compile(r"\s+[a-z]")


def read_choice(text: str, choices: Sequence[str]) -> int | None:
    """The index of the choice the text names, by its first unambiguous reading, or None."""
    valid = LETTERS[: len(choices)]

    def one(letters: list[str]) -> int | None:
        found = {letter.upper() for letter in letters if letter and letter.upper() in valid}
        return valid.index(found.pop()) if len(found) == 1 else None

    match = _LETTER_ALONE.match(text)
    if match and (index := one([match.group(1)])) is not None:
        return index
    said = [m.group(1) for m in _ANSWER_IS.finditer(text)
            if not (m.group(1) in "AI" and _WORD_AFTER.match(text, m.end()))]
    if (index := one(said)) is not None:
        return index
    match = _LEADING.match(text)
    if match and (index := one([g for g in match.groups() if g])) is not None:
        return index
    same = [i for i, choice in enumerate(choices) if normalize(choice) and normalize(choice) == normalize(text)]
    if len(same) == 1:
        return same[0]
    return one([a or b for a, b in (m.groups() for m in _MARKED.finditer(text))])


class ChoiceLetter:
    """Multiple choice judged from the letter (or the exact choice text) the model wrote."""

    name, needs = "choice", "text"

    def score(self, item: TestItem, output: Output) -> Score | None:
        if not item.multiple_choice or item.gold is None or output.text is None:
            return None
        index = read_choice(output.text, item.choices)
        return _verdict(index == item.gold, letter=None if index is None else LETTERS[index])


def _likelihood_pick(item: TestItem, output: Output, *, per_char: bool) -> Score | None:
    """lm-evaluation-harness's multiple_choice: ``argmax(logprob)`` (acc) or ``argmax(logprob / chars)``
    (acc_norm, chars = len(choice)) against gold; numpy's argmax, so a tie goes to the first choice."""
    if not item.multiple_choice or item.gold is None or output.choices is None:
        return None
    if len(output.choices) != len(item.choices):
        raise ValueError(f"item {item.id!r} has {len(item.choices)} choices but its output has likelihoods "
                         f"for {len(output.choices)}")
    logprobs = np.array([c.logprob for c in output.choices], dtype=np.float64)
    if per_char:
        with np.errstate(divide="ignore", invalid="ignore"):  # an empty choice: as lm-eval, -inf never wins
            logprobs = logprobs / np.array([float(c.chars) for c in output.choices])
    pick = int(np.argmax(logprobs))
    return _verdict(pick == item.gold, pick=pick, letter=LETTERS[pick])


class LoglikAcc:
    """acc: the choice with the highest log-likelihood is the gold one."""

    name, needs = "loglik", "choices"

    def score(self, item: TestItem, output: Output) -> Score | None:
        return _likelihood_pick(item, output, per_char=False)


class LoglikAccNorm:
    """acc_norm: the choice with the highest log-likelihood per character is the gold one."""

    name, needs = "loglik_norm", "choices"

    def score(self, item: TestItem, output: Output) -> Score | None:
        return _likelihood_pick(item, output, per_char=True)


# ---- With documents: retrieval recall@k and citation accuracy ----------------------------------------------

def _gold_page(source: dict[str, Any], pages: Sequence[dict[str, Any]]) -> int | None:
    """The index of the gold page a retrieved source is on, or None: the document by filename or title
    (case-insensitive), and the page (a gold page without one accepts any page of its document)."""
    names = {str(source.get(key)).casefold() for key in ("filename", "title", "document") if source.get(key)}
    for i, gold in enumerate(pages):
        if str(gold.get("document", "")).casefold() in names and (
                gold.get("page") is None or _same_page(gold.get("page"), source.get("page"))):
            return i
    return None


def _same_page(a: Any, b: Any) -> bool:
    try:
        return int(a) == int(b)
    except (TypeError, ValueError):
        return False


class RecallAtK:
    """Retrieval recall@k: the share of gold pages found among the first k sources; correct when all are."""

    needs = "sources"

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ParameterError("scorer", f"recall@k needs a whole number k of at least 1, got {k!r}")
        self.k = k
        self.name = f"recall@{k}"

    def score(self, item: TestItem, output: Output) -> Score | None:
        if not item.pages or output.sources is None:
            return None
        found = {_gold_page(source, item.pages) for source in output.sources[: self.k]} - {None}
        share = len(found) / len(item.pages)
        return Score(share, len(found) == len(item.pages), {"found": len(found), "gold": len(item.pages)})


class CitationAccuracy:
    """Of the sources the answer cites as ``[n]``, the share that are gold pages; correct when every one is
    (an answer that cites nothing scores 0)."""

    name, needs = "citations", "text"

    def score(self, item: TestItem, output: Output) -> Score | None:
        if not item.pages or output.text is None:
            return None
        cited = cited_numbers(output.text)
        sources = output.sources or ()
        good = [n for n in cited if 1 <= n <= len(sources) and _gold_page(sources[n - 1], item.pages) is not None]
        share = len(good) / len(cited) if cited else 0.0
        return Score(share, bool(cited) and len(good) == len(cited), {"cited": cited, "on_gold": good})


# ---- An LLM judge with a rubric -----------------------------------------------------------------------------

DEFAULT_RUBRIC = (
    "5: correct and complete; says what the reference answer says, nothing false.\n"
    "4: correct; the essential point matches the reference, with a minor omission or imprecision.\n"
    "3: partly correct; some of the essential point, or correct with a notable error.\n"
    "2: mostly wrong; touches the topic but misses the essential point.\n"
    "1: wrong, off-topic, or no answer."
)
JUDGE_SYSTEM = ("You grade answers to questions against reference answers, strictly and consistently. "
                "Explain briefly, then end with one line of the form GRADE: n, where n is 1 to 5.")
JUDGE_CORRECT = 4  # a grade at or above which the answer counts as correct
JUDGE_MAX_TOKENS = 512
_GRADE = re.compile(r"GRADE\s*[:=]\s*\**\s*(\d+)", re.IGNORECASE)


def judge_prompt(item: TestItem, answer: str, rubric: str) -> str:
    """What the judge is asked: the question, the reference answers, the rubric and the answer to grade."""
    if item.multiple_choice and item.gold is not None:
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
        question = f"{item.question}\n\n{options}"
        references = [f"{LETTERS[item.gold]}. {item.choices[item.gold]}", *item.answers]
    else:
        question, references = item.question, list(item.answers)
    listed = "\n".join(f"- {r}" for r in references) or "- (none given: judge correctness yourself)"
    return (f"Question:\n{question}\n\nReference answer(s):\n{listed}\n\nRubric:\n{rubric}\n\n"
            f"Answer to grade:\n{answer}\n\nGrade the answer by the rubric. End with the line GRADE: n.")


def parse_grade(text: str) -> int | None:
    """The last ``GRADE: n`` in the judge's text, when n is 1 to 5."""
    grades = _GRADE.findall(text)
    return int(grades[-1]) if grades and 1 <= int(grades[-1]) <= 5 else None


class JudgeScorer:
    """An LLM judge: grades 1-5 by a rubric, greedy and seeded; value (n-1)/4, correct at ``JUDGE_CORRECT``."""

    name, needs = "judge", "text"

    def __init__(self, backend: Backend, rubric: str = DEFAULT_RUBRIC, model_name: str | None = None) -> None:
        if not rubric.strip():
            raise ParameterError("rubric", "the judge's rubric is empty")
        self.backend, self.rubric = backend, rubric
        self.model_name = model_name or backend.model_name
        # Greedy and seeded, so a rescore with the same judge gives the same grades.
        self.params = GenerationParams.create(temperature=0, seed=0, repetition_penalty=1.0,
                                              max_new_tokens=JUDGE_MAX_TOKENS)

    def score(self, item: TestItem, output: Output) -> Score | None:
        if output.text is None:
            return None
        prompt = judge_prompt(item, output.text, self.rubric)
        deltas: list[str] = []
        final: Finished | None = None
        for event in self.backend.stream([{"role": "user", "content": prompt}], self.params, system=JUDGE_SYSTEM):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            elif isinstance(event, Finished):
                final = event
        raw = final.text if final is not None else "".join(deltas)
        grade = parse_grade(raw)
        if grade is None:
            return Score(0.0, False, {"grade": None, "judge": self.model_name, "raw": raw,
                                      "error": "the judge gave no grade GRADE: 1-5"})
        return Score((grade - 1) / 4, grade >= JUDGE_CORRECT, {"grade": grade, "judge": self.model_name, "raw": raw})


# ---- The registry -------------------------------------------------------------------------------------------

SCORERS: dict[str, Callable[[], Scorer]] = {
    "exact": ExactMatch, "contains": Contains, "regex": RegexMatch, "f1": TokenF1, "choice": ChoiceLetter,
    "loglik": LoglikAcc, "loglik_norm": LoglikAccNorm, "citations": CitationAccuracy,
}
# Built with arguments, so not in SCORERS: recall@k (k from the name) and the judge (a backend).
PARAMETRIC = ("recall@k", "judge")
_RECALL = re.compile(r"recall@(\d+)")


def scorer_names() -> list[str]:
    """Every scorer name a user can give, ``recall@k`` standing for recall@1, recall@5, ..."""
    return [*SCORERS, *PARAMETRIC]


def make_scorer(spec: str, *, judge_backend: Backend | None = None) -> Scorer:
    """The scorer a name names: one of ``SCORERS``, ``recall@k`` (e.g. ``recall@5``), or ``judge``."""
    if not isinstance(spec, str):
        raise ParameterError("scorer", f"a scorer is named by a string, got {type(spec).__name__}")
    name = spec.strip().lower()
    if name in SCORERS:
        return SCORERS[name]()
    if match := _RECALL.fullmatch(name):
        return RecallAtK(int(match.group(1)))
    if name == "judge":
        if judge_backend is None:
            raise ParameterError("scorer", "the judge scorer needs a judge model: name one (e.g. --judge MODEL)")
        return JudgeScorer(judge_backend)
    raise ParameterError("scorer", f"unknown scorer {spec!r}; known: {', '.join(scorer_names())}")


def default_scorers(items: Iterable[TestItem]) -> list[str]:
    """The scorers a test set gets when none is named: the choice scorers if any item is multiple choice,
    exact, contains and F1 if any is a short answer (a chat model often answers in a full sentence: "The
    chemical symbol for iron is Fe." is right by contains, wrong by exact match, and asking a small model
    for the answer alone confused SmolLM2-135M more than it helped)."""
    items = list(items)
    names: list[str] = []
    if any(item.multiple_choice for item in items):
        names += ["choice", "loglik", "loglik_norm"]
    if any(not item.multiple_choice and item.answers for item in items):
        names += ["exact", "contains", "f1"]
    return names

"""Scorers: SQuAD's normalization and F1, the choice letter, lm-eval's acc and acc_norm, retrieval recall@k and
citation accuracy, the LLM judge on a real (scripted) backend, and the registry."""

from __future__ import annotations

import math

import pytest

from chatcore.core.errors import ParameterError
from chatcore.services.evaluation.scorers import (
    DEFAULT_RUBRIC,
    JUDGE_SYSTEM,
    SCORERS,
    ChoiceLikelihood,
    JudgeScorer,
    Output,
    RecallAtK,
    Score,
    default_scorers,
    make_scorer,
    normalize,
    parse_grade,
    read_choice,
    token_f1,
)
from chatcore.services.evaluation.testsets import TestItem as Item  # not "Test*": pytest would collect it
from chatcore.testing.engines import Scripted


def short(answers: tuple[str, ...] = ("Paris",), question: str = "What is the capital of France?") -> Item:
    return Item(id="s1", messages=({"role": "user", "content": question},), answers=answers)


CHOICES = ("mitochondria", "nucleus", "ribosome", "cell wall")


def mc(gold: int = 1, choices: tuple[str, ...] = CHOICES) -> Item:
    return Item(id="m1", messages=({"role": "user", "content": "Which organelle holds the DNA?"},),
                    choices=choices, gold=gold)


def scored(name: str, item: Item, text: str | None = None, **output) -> Score | None:
    return make_scorer(name).score(item, Output(text=text, **output))


# ---- normalization, exact, contains, regex, F1 -------------------------------------------------------------

def test_normalize_is_squads():
    assert normalize("  The Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize("an apple a day") == "apple day"
    assert normalize("theory") == "theory"  # an article only as a whole word


def test_exact_matches_any_accepted_answer_after_normalization():
    item = short(("Paris", "the city of Paris"))
    assert scored("exact", item, "paris.") == Score(1.0, True, {"matched": "Paris"})
    assert scored("exact", item, "The city of Paris!").detail["matched"] == "the city of Paris"
    assert scored("exact", item, "It is Paris") == Score(0.0, False, {"matched": None})


def test_contains_finds_an_answer_as_whole_words():
    item = short(("4",), "What is 2 + 2?")
    assert scored("contains", item, "2 + 2 = 4, of course").correct
    assert not scored("contains", item, "It is 14").correct  # "4" inside "14" is not the answer


def test_regex_searches_case_insensitively_and_names_a_bad_pattern():
    item = short((r"\bparis\b", r"lutetia(n)?"))
    assert scored("regex", item, "PARIS, France").detail["matched"] == r"\bparis\b"
    assert not scored("regex", item, "Lyon").correct
    bad = short(("([unclosed", "paris"))
    score = scored("regex", bad, "Paris")
    assert score.correct  # the valid pattern still judges the item
    assert "'([unclosed' is not a valid regular expression" in score.detail["error"]
    assert not scored("regex", short(("([unclosed",)), "Paris").correct


def test_f1_is_squads_token_f1_with_precision_and_recall():
    f1, precision, recall = token_f1("the big black cat", "a black cat")
    assert (precision, recall) == (2 / 3, 1.0)
    assert f1 == pytest.approx(0.8)
    score = scored("f1", short(("black cat", "dog")), "the big black cat")
    assert score.value == pytest.approx(0.8) and score.correct
    assert score.detail == {"precision": 2 / 3, "recall": 1.0}
    low = scored("f1", short(("the black cat sat on the mat",)), "a cat")  # 1 of 5 gold tokens: f1 = 1/3
    assert low.value == pytest.approx(1 / 3) and not low.correct
    assert scored("f1", short(("cat",)), "dog") == Score(0.0, False, {"precision": 0.0, "recall": 0.0})


def test_text_matching_scorers_skip_what_they_do_not_judge():
    for name in ("exact", "contains", "regex", "f1"):
        assert scored(name, mc(), "B") is None  # multiple choice: the choice scorers' job
        assert scored(name, short(()), "Paris") is None  # no accepted answer
        assert scored(name, short(), None) is None  # no generated text (a likelihood-only run)


# ---- multiple choice from the letter ------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["B", "(B)", "Answer: B", "B.", "The answer is B", "the correct answer is (B).",
                                  "b", "B) nucleus", "B. The nucleus holds it.", "nucleus", "The Nucleus",
                                  "I would pick option B because it holds chromosomes.", "The answer is B because"])
def test_choice_reads_the_letter(text):
    score = scored("choice", mc(gold=1), text)
    assert score == Score(1.0, True, {"letter": "B"})


@pytest.mark.parametrize("text", ["A cell keeps it in a membrane.", "The answer is A cell", "I think so",
                                  "Answer: E", "B or C", "Either (B) or (C)", ""])
def test_choice_refuses_what_names_no_single_valid_letter(text):
    assert scored("choice", mc(gold=1), text) == Score(0.0, False, {"letter": None})


def test_choice_takes_the_first_unambiguous_reading():
    # "Answer: C" is read before the parenthesised letters later in the text.
    assert read_choice("Answer: C. Not (A), not (B).", CHOICES) == 2
    # An ambiguous "answer" reading gives way to the next one.
    assert read_choice("D. Some say the answer is A, others the answer is B.", CHOICES) == 3
    assert scored("choice", short(), "B") is None


# ---- multiple choice from likelihoods: lm-evaluation-harness's acc and acc_norm ---------------------------

def likelihoods(*pairs: tuple[float, str]) -> tuple[ChoiceLikelihood, ...]:
    return tuple(ChoiceLikelihood(logprob=lp, greedy=False, tokens=1, chars=len(text)) for lp, text in pairs)


def test_acc_and_acc_norm_as_lm_eval_defines_them():
    # Raw: -4 ("nucleus") beats -6; per character: -6 / 29 beats -4 / 7.
    item = mc(gold=1, choices=("nucleus", "a long answer of twenty-eight"))
    output = Output(choices=likelihoods((-4.0, "nucleus"), (-6.0, "a long answer of twenty-eight")))
    assert len("a long answer of twenty-eight") == 29
    acc = make_scorer("loglik").score(item, output)
    norm = make_scorer("loglik_norm").score(item, output)
    assert acc == Score(0.0, False, {"pick": 0, "letter": "A"})
    assert norm == Score(1.0, True, {"pick": 1, "letter": "B"})


def test_likelihood_ties_go_to_the_first_choice_like_numpy_argmax():
    item = mc(gold=1, choices=("abc", "xyz", "def"))
    output = Output(choices=likelihoods((-3.0, "abc"), (-3.0, "xyz"), (-9.0, "def")))
    assert make_scorer("loglik").score(item, output).detail["pick"] == 0
    assert make_scorer("loglik_norm").score(item, output).detail["pick"] == 0


def test_likelihood_scorers_skip_items_without_choices_and_refuse_a_mismatch():
    assert make_scorer("loglik").score(short(), Output(text="Paris")) is None
    assert make_scorer("loglik_norm").score(mc(), Output(text="B")) is None  # no likelihoods to read
    with pytest.raises(ValueError, match="has 4 choices but its output has likelihoods for 2"):
        make_scorer("loglik").score(mc(), Output(choices=likelihoods((-1.0, "a"), (-2.0, "b"))))


# ---- with documents -----------------------------------------------------------------------------------------

GOLD = ({"document": "Cells.pdf", "page": 3}, {"document": "Genetics", "page": 7})


def paged(pages=GOLD) -> Item:
    return Item(id="d1", messages=({"role": "user", "content": "Where is DNA kept?"},), answers=("nucleus",),
                    pages=pages)


SOURCES = ({"filename": "other.pdf", "title": None, "page": 1},
           {"filename": "cells.PDF", "title": "Cell biology", "page": 3},
           {"filename": "gen.pdf", "title": "genetics", "page": 7},
           {"filename": "cells.pdf", "title": None, "page": 4})


def test_recall_at_k_counts_gold_pages_among_the_first_k_sources():
    item = paged()
    assert scored("recall@1", item, sources=SOURCES) == Score(0.0, False, {"found": 0, "gold": 2})
    assert scored("recall@2", item, sources=SOURCES) == Score(0.5, False, {"found": 1, "gold": 2})
    assert scored("recall@3", item, sources=SOURCES) == Score(1.0, True, {"found": 2, "gold": 2})  # by title
    # The same gold page found twice counts once.
    assert scored("recall@5", paged(GOLD[:1]), sources=(SOURCES[1], SOURCES[1])).value == 1.0
    assert scored("recall@5", short(), sources=SOURCES) is None
    assert make_scorer("recall@5").needs == "sources" and make_scorer("recall@5").name == "recall@5"


def test_citation_accuracy_is_the_share_of_cited_sources_on_gold_pages():
    item = paged()
    score = scored("citations", item, "DNA is in the nucleus [2]. It has chromosomes [1, 3]. See [9].",
                   sources=SOURCES)
    assert score.value == pytest.approx(2 / 4) and not score.correct
    assert score.detail == {"cited": [2, 1, 3, 9], "on_gold": [2, 3]}
    assert scored("citations", item, "In the nucleus [2], [3].", sources=SOURCES).correct
    assert scored("citations", item, "In the nucleus.", sources=SOURCES) == Score(0.0, False,
                                                                                   {"cited": [], "on_gold": []})
    assert scored("citations", short(), "In the nucleus [1].", sources=SOURCES) is None


# ---- the judge ------------------------------------------------------------------------------------------------

def test_parse_grade_reads_the_last_grade_line():
    assert parse_grade("Good.\nGRADE: 4") == 4
    assert parse_grade("grade: 2 at first... then\n**GRADE: 5**") == 5
    assert parse_grade("GRADE: 7") is None
    assert parse_grade("I would say four.") is None


def test_judge_grades_with_a_real_backend(hf_engine):
    backend = Scripted(hf_engine, "The answer names the capital correctly.\nGRADE: 4")
    judge = JudgeScorer(backend)
    score = judge.score(short(("Paris",)), Output(text="It is Paris."))
    assert score.value == 0.75 and score.correct
    assert score.detail["grade"] == 4 and score.detail["judge"] == hf_engine.model_name
    system, prompt = backend.prompts[-1]
    assert system == JUDGE_SYSTEM
    for part in ("What is the capital of France?", "- Paris", "It is Paris.", DEFAULT_RUBRIC, "GRADE: n"):
        assert part in prompt
    assert (judge.params.temperature, judge.params.seed) == (0.0, 0)


def test_judge_low_grade_and_unparseable_grade(hf_engine):
    low = JudgeScorer(Scripted(hf_engine, "Wrong city.\nGRADE: 2"), model_name="judge-x")
    assert low.score(short(), Output(text="Lyon")) == Score(0.25, False, {"grade": 2, "judge": "judge-x",
                                                                          "raw": "Wrong city.\nGRADE: 2"})
    unsure = JudgeScorer(Scripted(hf_engine, "Hard to say."))
    score = unsure.score(short(), Output(text="Lyon"))
    assert (score.value, score.correct, score.detail["raw"], score.detail["grade"]) == (0, False, "Hard to say.", None)


def test_judge_shows_the_gold_choice_of_a_multiple_choice_item(hf_engine):
    backend = Scripted(hf_engine, "GRADE: 5")
    assert make_scorer("judge", judge_backend=backend).score(mc(gold=1), Output(text="B")).value == 1.0
    assert "- B. nucleus" in backend.prompts[-1][1] and "D. cell wall" in backend.prompts[-1][1]


# ---- the registry ---------------------------------------------------------------------------------------------

def test_make_scorer_builds_each_known_name():
    for name in SCORERS:
        scorer = make_scorer(f"  {name.upper()} ")
        assert scorer.name == name and scorer.needs in ("text", "choices", "sources")
    assert make_scorer("loglik").needs == "choices" and make_scorer("choice").needs == "text"


def test_make_scorer_refuses_unknown_names_and_a_judge_without_a_model():
    with pytest.raises(ParameterError, match="unknown scorer 'bleu'; known: exact, contains, regex, f1, choice"):
        make_scorer("bleu")
    for bad in ("recall@0", "recall@", "recall@x"):
        with pytest.raises(ParameterError):
            make_scorer(bad)
    with pytest.raises(ParameterError, match="needs a judge model"):
        make_scorer("judge")
    with pytest.raises(ParameterError, match="at least 1"):
        RecallAtK(0)


def test_default_scorers_follow_the_kinds_of_items():
    assert default_scorers([mc()]) == ["choice", "loglik", "loglik_norm"]
    assert default_scorers([short()]) == ["exact", "contains", "f1"]
    assert default_scorers([short(), mc()]) == ["choice", "loglik", "loglik_norm", "exact", "contains", "f1"]
    assert default_scorers([]) == []


def test_scores_stay_in_range():
    for name in ("exact", "contains", "f1"):
        value = scored(name, short(("a b c d",)), "b c x").value
        assert 0.0 <= value <= 1.0 and not math.isnan(value)

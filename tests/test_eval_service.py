"""Evaluation runs on real tiny models and real SQLite: outputs with records, resume, rescore, reports,
isolation, and the arena's hidden names, votes and leaderboard."""

from __future__ import annotations

import json
import threading

import pytest

from chatcore.core.errors import ParameterError
from chatcore.engine.loglikelihood import loglikelihoods
from chatcore.services.evaluation.arena import Arena
from chatcore.services.evaluation.service import Evaluations
from chatcore.testing.evaluation import SCIENCE_ITEMS as ITEMS
from chatcore.testing.evaluation import SCIENCE_JSONL as JSONL
from storage.errors import NotFound
from storage.store import Store


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "chatcore.db") as opened:
        yield opened


@pytest.fixture()
def backends(hf_engine, tiny_engine):
    """Two configurations of the same tiny weights: the transformers loop and the fast decoder."""
    return {"hf": hf_engine, "fast": tiny_engine}


@pytest.fixture()
def evals(store, backends):
    return Evaluations(store, backends.__getitem__)


def add_set(evals: Evaluations, owner: str = "alice") -> dict:
    return evals.add_test_set(owner, JSONL, "tiny.jsonl", name="tiny")


def test_a_run_stores_every_output_with_its_record_and_scores(evals, backends):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf", "fast"])
    progress = evals.run("alice", run_id)
    assert (progress.status, progress.done, progress.total) == ("finished", 10, 10)
    rows = evals.outputs("alice", run_id)
    assert len(rows) == 10 and {r["model"] for r in rows} == {"hf", "fast"}
    for row in rows:
        assert row["error"] is None and row["text"] is not None
        assert row["record"]["weights_sha256"] == backends[row["model"]].info.weights_sha256
        assert row["record"]["seed"] == 0 and row["record"]["params"]["temperature"] == 0.0
        multiple = bool(row["item"].get("choices"))
        if multiple:
            assert {"choice", "loglik", "loglik_norm"} <= set(row["scores"])
            assert len(row["choices"]) == len(row["item"]["choices"])
        else:
            assert {"exact", "f1"} <= set(row["scores"]) and "loglik" not in row["scores"]


def test_choice_likelihoods_are_the_engines(evals, backends):
    """The stored log-likelihoods are lm-eval's pairs scored on the model: acc follows from them."""
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["loglik", "loglik_norm"])
    evals.run("alice", run_id)
    row = next(r for r in evals.outputs("alice", run_id) if r["key"] == "q1")
    expected = loglikelihoods(backends["hf"], [("Question: Which gas do plants take in for photosynthesis?\nAnswer:",
                                               " " + c) for c in ITEMS[0]["choices"]])
    assert [c["logprob"] for c in row["choices"]] == pytest.approx([e.logprob for e in expected], abs=1e-5)
    best = max(range(4), key=lambda i: expected[i].logprob)
    assert row["scores"]["loglik"]["correct"] == (best == 1)
    assert row["text"] is None  # nothing generated: no scorer needed text


def test_a_cancelled_run_keeps_its_outputs_and_resumes_where_it_stopped(evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf", "fast"], ["exact"])
    cancel = threading.Event()
    stopped = evals.run("alice", run_id, cancel=cancel,
                        on_progress=lambda p: cancel.set() if p.done >= 5 else None)
    assert stopped.status == "cancelled" and 5 <= stopped.done < 10
    before = {(r["key"], r["model"]): r["id"] for r in evals.outputs("alice", run_id)}
    resumed = evals.resume("alice", run_id)
    assert (resumed.status, resumed.done) == ("finished", 10)
    after = {(r["key"], r["model"]): r["id"] for r in evals.outputs("alice", run_id)}
    assert len(after) == 10 and all(after[key] == output_id for key, output_id in before.items())


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted_and_resumes(store, evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["exact"])
    assert evals.get_run("alice", run_id)["status"] == "running"  # as a kill -9 before any output leaves it
    fresh = Evaluations(store, evals.backend_for)  # the next start of the server
    assert fresh.mark_interrupted() == [run_id]
    assert fresh.get_run("alice", run_id)["status"] == "interrupted"
    assert fresh.resume("alice", run_id).status == "finished"


def test_rescore_never_generates_again(store, evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["exact"])
    evals.run("alice", run_id)

    def no_model(spec):
        raise AssertionError(f"rescoring loaded {spec}")

    offline = Evaluations(store, no_model)
    written = offline.rescore("alice", run_id, ["contains", "f1"])
    short = [item for item in ITEMS if "choices" not in item]
    assert written == 2 * len(short)  # text scorers leave multiple-choice items to the choice scorers
    rows = offline.outputs("alice", run_id)
    assert all({"exact", "contains", "f1"} <= set(r["scores"]) for r in rows if not r["item"].get("choices"))
    assert offline.get_run("alice", run_id)["scorers"] == ["exact", "contains", "f1"]


def test_rescore_with_what_the_run_did_not_compute_is_refused(evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["exact"])
    evals.run("alice", run_id)
    with pytest.raises(ParameterError, match="choice log-likelihoods"):
        evals.rescore("alice", run_id, ["loglik"])


def test_report_compares_two_models_with_intervals_and_mcnemar(evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf", "fast"], ["exact", "choice"])
    evals.run("alice", run_id)
    report = evals.report("alice", [run_id], "exact")
    assert {r.model for r in report.results} == {"hf", "fast"}
    for result in report.results:
        assert result.accuracy.n == 3  # the short-answer items: exact does not apply to choices
        assert result.accuracy.low <= result.accuracy.mean <= result.accuracy.high
        assert set(result.by_tag) == {"chemistry", "astronomy", "physics"}
    (comparison,) = report.comparisons
    assert 0 <= comparison.test.p_value <= 1 and comparison.items == 3
    markdown = report.to_markdown()
    assert "McNemar" in markdown and "95% interval" in markdown
    assert json.loads(json.dumps(report.to_dict()))["scorer"] == "exact"


def test_report_of_a_scorer_never_run_says_how_to_get_it(evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["exact"])
    evals.run("alice", run_id)
    with pytest.raises(ParameterError, match="rescore"):
        evals.report("alice", [run_id], "f1")


@pytest.mark.parametrize("models, scorers, message", [
    ([], None, "at least one model"),
    (["hf", "hf"], None, "named twice"),
    (["hf@speed=max"], None, "not an option"),
    (["hf"], ["bleu"], "bleu"),
    (["hf"], ["judge"], "judge model"),
    (["hf"], ["recall@5"], "library scope"),
])
def test_bad_runs_are_refused_before_anything_is_stored(evals, models, scorers, message):
    test_set = add_set(evals)
    with pytest.raises(ParameterError, match=message):
        evals.create_run("alice", test_set["id"], models, scorers)
    assert evals.runs("alice") == []


def test_another_owners_set_and_run_answer_like_missing_ones(evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["exact"])
    for call in (lambda o, i: evals.get_run(o, i), lambda o, i: evals.outputs(o, i),
                 lambda o, i: evals.report(o, [i]), lambda o, i: evals.rescore(o, i, ["f1"]),
                 lambda o, i: evals.resume(o, i), lambda o, i: evals.cancel(o, i), lambda o, i: evals.progress(o, i)):
        with pytest.raises(NotFound) as theirs:
            call("bob", run_id)
        with pytest.raises(NotFound) as missing:
            call("bob", run_id + 1000)
        assert str(theirs.value).replace(str(run_id), "N") == str(missing.value).replace(str(run_id + 1000), "N")
    with pytest.raises(NotFound):
        evals.test_set("bob", test_set["id"])
    with pytest.raises(NotFound):
        evals.create_run("bob", test_set["id"], ["hf"])


def test_a_background_run_reports_progress_and_finishes(evals):
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["exact"])
    evals.start("alice", run_id)
    evals.wait(run_id, timeout=300)
    progress = evals.progress("alice", run_id)
    assert progress.finished and progress.fraction == 1.0 and "5/5" in progress.describe()


# -- the arena ------------------------------------------------------------------------------------------------


def test_arena_hides_the_names_until_the_vote(store, backends):
    from chatcore.core.params import GenerationParams

    arena = Arena(store, backends.__getitem__)
    battle = arena.start("alice", "Name a noble gas.", ["hf", "fast"])
    views = list(arena.answer("alice", battle, GenerationParams.create(temperature=0, max_new_tokens=8, seed=1)))
    last = views[-1]
    assert last.finished and last.model_a is None and last.model_b is None
    assert arena.battle("alice", battle).model_a is None
    revealed = arena.vote("alice", battle, "a")
    assert {revealed.model_a, revealed.model_b} == {"hf", "fast"} and revealed.vote == "a"
    with pytest.raises(ParameterError, match="already has a vote"):
        arena.vote("alice", battle, "b")
    exported = arena.export("alice")
    assert exported[0]["vote"] == "a" and exported[0]["model_a"] == revealed.model_a


def test_arena_refuses_a_vote_before_both_answers_and_a_lone_model(store, backends):
    arena = Arena(store, backends.__getitem__)
    battle = arena.start("alice", "Name a noble gas.", ["hf", "fast"])
    with pytest.raises(ParameterError, match="both answers"):
        arena.vote("alice", battle, "a")
    with pytest.raises(ParameterError, match="two different models"):
        arena.start("alice", "Name a noble gas.", ["hf", "hf"])
    with pytest.raises(ParameterError, match="one of"):
        arena.vote("alice", battle, "c")
    with pytest.raises(NotFound):
        arena.battle("bob", battle)


def test_arena_leaderboard_says_not_enough_votes_then_ranks(store):
    from storage import evaluation as db

    arena = Arena(store, lambda spec: None)
    board = arena.leaderboard("alice")
    assert not board.enough and "not enough votes" in board.message
    for n in range(12):  # "strong" wins 10 of 12 against "weak"
        battle = db.create_battle(store, "alice", f"question {n}", "strong", "weak")
        db.save_battle_answer(store, "alice", battle, "a", "x", {"model": "strong"})
        db.save_battle_answer(store, "alice", battle, "b", "y", {"model": "weak"})
        db.vote(store, "alice", battle, "a" if n < 10 else "b")
    board = arena.leaderboard("alice")
    assert board.enough
    scores = {row[0]: row[1] for row in board.rows}
    assert scores["strong"] > scores["weak"]
    assert arena.leaderboard("bob").rows == [] or not arena.leaderboard("bob").enough


def test_feedback_export_holds_the_arena_votes_after_the_thumbs(store, backends, tmp_path):
    from chatcore.core.params import GenerationParams
    from chatcore.services.notes import export_feedback

    arena = Arena(store, backends.__getitem__)
    battle = arena.start("alice", "Name a noble gas.", ["hf", "fast"])
    list(arena.answer("alice", battle, GenerationParams.create(temperature=0, max_new_tokens=4, seed=1)))
    arena.vote("alice", battle, "tie")
    path = tmp_path / "feedback.jsonl"
    assert export_feedback(store, "alice", path) == 1
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["kind"] == "arena" and line["vote"] == "tie" and {line["model_a"], line["model_b"]} == {"hf", "fast"}
    assert export_feedback(store, "bob", tmp_path / "bob.jsonl") == 0


def test_a_run_scoped_to_documents_scores_retrieval_recall_and_citations(store, backends, tmp_path):
    """Gold pages in the test set: recall@k from the retrieved passages, citation accuracy from the [n]s."""
    from chatcore.services.library import Library, Scope
    from chatcore.testing.documents import fact_pages, make_pdf
    from chatcore.testing.engines import Scripted

    pages, gold = fact_pages()
    make_pdf(tmp_path / "report.pdf", pages)
    library = Library(store)
    job, _ = library.add_paths("alice", [tmp_path / "report.pdf"], "reports")
    library.run_job("alice", job)
    lines = [json.dumps({"id": f"f{n}", "question": question, "answer": "x",
                         "pages": [{"document": "report.pdf", "page": page}]})
             for n, (question, page) in enumerate(gold[:4])]
    evals = Evaluations(store, {"cites": Scripted(backends["hf"], "It is so [1].")}.__getitem__, library=library)
    test_set = evals.add_test_set("alice", "\n".join(lines), "gold.jsonl")
    with pytest.raises(ParameterError, match="library scope"):
        evals.create_run("alice", test_set["id"], ["cites"], ["recall@5"])
    run_id = evals.create_run("alice", test_set["id"], ["cites"], ["recall@5", "citations"], scope=Scope(("reports",)))
    assert evals.run("alice", run_id).status == "finished"
    rows = evals.outputs("alice", run_id)
    assert all(r["sources"] and r["sources"][0]["filename"] == "report.pdf" for r in rows)
    assert all(r["scores"]["recall@5"]["correct"] for r in rows)  # BM25 finds every fact's page (the library's bench)
    for row in rows:  # [1] is right exactly when the top passage is the gold page
        top_is_gold = row["sources"][0]["page"] == row["item"]["pages"][0]["page"]
        assert row["scores"]["citations"]["correct"] == top_is_gold
    report = evals.report("alice", [run_id], "recall@5")
    assert report.results[0].accuracy.mean == 1.0


def test_a_server_runs_two_configurations_through_its_model_pool(store, tiny_model_dir, tmp_path):
    """The server's Evaluations load each spec through the pool: the default and a bfloat16 copy of it."""
    from chatcore.core.settings import Settings
    from chatcore.services.evaluation import for_server
    from chatcore.services.models import ModelManager

    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=str(tiny_model_dir), device="cpu",
                        dtype="float32", compile="0")
    manager = ModelManager(settings)
    evals, _ = for_server(manager, store)
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["default", "default@dtype=bfloat16"], ["exact", "loglik"])
    assert evals.run("alice", run_id).status == "finished"
    dtypes = {r["model"]: r["record"]["dtype"] for r in evals.outputs("alice", run_id)}
    assert dtypes == {"default": "float32", "default@dtype=bfloat16": "bfloat16"}
    assert len(manager.loaded()) == 2  # both fit the default budget: neither was unloaded


def test_a_judge_model_grades_the_outputs_and_a_rescore_with_it_needs_no_other_model(store, backends):
    from chatcore.testing.engines import Scripted

    models = {"hf": backends["hf"], "judge": Scripted(backends["hf"], "Close enough.\nGRADE: 4")}
    evals = Evaluations(store, models.__getitem__)
    test_set = add_set(evals)
    run_id = evals.create_run("alice", test_set["id"], ["hf"], ["exact", "judge"], judge="judge")
    evals.run("alice", run_id)
    rows = evals.outputs("alice", run_id)
    assert all(r["scores"]["judge"]["value"] == 0.75 and r["scores"]["judge"]["correct"] for r in rows)
    assert models["judge"].prompts and "GRADE" in models["judge"].prompts[0][1] + (models["judge"].prompts[0][0] or "")


def test_a_remote_judge_is_a_model_spec():
    from chatcore.core.settings import Settings, model_settings

    settings = model_settings(Settings(), "llama3:8b@backend=openai,base_url=http://judge.lab:11434/v1")
    assert (settings.model, settings.backend, settings.base_url) == ("llama3:8b", "openai", "http://judge.lab:11434/v1")


def test_an_empty_answer_can_be_voted_both_bad(store):
    from storage import evaluation as db

    arena = Arena(store, lambda spec: None)
    battle = db.create_battle(store, "alice", "Say nothing.", "quiet", "loud")
    db.save_battle_answer(store, "alice", battle, "a", "", {"model": "quiet", "finish_reason": "stop"})
    db.save_battle_answer(store, "alice", battle, "b", "Something.", {"model": "loud"})
    assert arena.vote("alice", battle, "both_bad").vote == "both_bad"


def test_a_model_that_cannot_load_leaves_no_battle(store, backends):
    from chatcore.core.errors import ModelError
    from storage import evaluation as db

    def backend_for(spec):
        if spec == "broken":
            raise ModelError("could not load model 'broken'")
        return backends[spec]

    with pytest.raises(ModelError):
        Arena(store, backend_for).start("alice", "Hello", ["hf", "broken"])
    assert db.battles(store, "alice") == []


def test_a_server_refuses_a_model_it_does_not_have_before_storing_a_run(store, backends):
    evals = Evaluations(store, backends.__getitem__, known=lambda spec: spec in backends)
    test_set = add_set(evals)
    with pytest.raises(ParameterError, match="no model 'gpt-5'"):
        evals.create_run("alice", test_set["id"], ["hf", "gpt-5"])
    assert evals.runs("alice") == []

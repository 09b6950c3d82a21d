"""``/v1/eval`` and ``/v1/arena`` against a real server on a free port, over real SQLite and two real tiny
backends (the fast decoder and the transformers loop over the same weights), with two users' keys."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from chatcore.api.routes import create_api_app
from chatcore.services.evaluation.arena import Arena
from chatcore.services.evaluation.service import Evaluations
from chatcore.testing.engines import Held, endless
from chatcore.testing.evaluation import SCIENCE_JSONL as JSONL
from chatcore.testing.servers import manager_for, serve, two_accounts
from storage import Store

KEY = "eval-key-K"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("api-eval") / "chatcore.db")


@pytest.fixture(scope="module")
def keys(store: Store) -> dict[str, str]:
    """API keys of two accounts, ada and bob."""
    return two_accounts(store)


@pytest.fixture(scope="module")
def held(tiny_engine) -> Held:
    """A model whose answers never end on their own and can be held mid-answer: runs to cancel."""
    return Held(endless(tiny_engine))


@pytest.fixture(scope="module")
def server(tiny_engine, hf_engine, held: Held, store: Store, keys: dict[str, str]):
    backends = {"fast": tiny_engine, "hf": hf_engine, "held": held}
    evaluations = Evaluations(store, backends.__getitem__)
    arena = Arena(store, backends.__getitem__)
    app = create_api_app(manager=manager_for(tiny_engine), store=store, api_key=KEY, evaluations=evaluations,
                         arena=arena)
    with serve(app) as url:
        yield url


def http(server: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{server}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=120)


def wait_for_run(api: httpx.Client, run_id: int) -> dict:
    """Poll the run until nothing more will change (the test runner's own timeout applies)."""
    while True:
        run = api.get(f"/eval/runs/{run_id}").json()
        if run["finished"]:
            return run
        time.sleep(0.05)


def add_set(api: httpx.Client, name: str = "tiny") -> dict:
    response = api.post("/eval/test_sets", json={"name": name, "filename": "tiny.jsonl", "content": JSONL})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def ada_run(server: str, keys: dict[str, str]) -> dict:
    """Ada's finished run of the tiny set on two models."""
    with http(server, keys["ada"]) as api:
        test_set = add_set(api, "ada-set")
        response = api.post("/eval/runs", json={"test_set": test_set["id"], "models": ["hf", "fast"],
                                                "max_new_tokens": 8})
        assert response.status_code == 202, response.text
        started = response.json()
        assert started["object"] == "eval.run" and started["total"] == 10
        return {"test_set": test_set, "started": started, "finished": wait_for_run(api, started["id"])}


@pytest.fixture(scope="module")
def ada_battle(server: str, keys: dict[str, str]) -> dict:
    """Ada's battle between the two models, before and after her vote."""
    with http(server, keys["ada"]) as api:
        response = api.post("/arena/battles", json={"prompt": "Why is the sky blue?", "models": ["hf", "fast"],
                                                    "max_new_tokens": 8, "temperature": 0})
        assert response.status_code == 200, response.text
        answered = response.json()
        voted = api.post(f"/arena/battles/{answered['id']}/vote", json={"vote": "a"})
        assert voted.status_code == 200, voted.text
        return {"answered": answered, "voted": voted.json()}


def test_test_sets_are_uploaded_listed_shown_removed_and_restored(server: str, keys: dict[str, str]) -> None:
    with http(server, keys["bob"]) as api:
        uploaded = api.post("/eval/test_sets", files={"file": ("science.jsonl", JSONL.encode(), "application/json")},
                            data={"name": "uploaded"})
        assert uploaded.status_code == 201, uploaded.text
        body = uploaded.json()
        assert (body["object"], body["name"], body["items"], body["filename"]) == (
            "eval.test_set", "uploaded", 5, "science.jsonl")
        as_json = add_set(api, "as-json")
        assert as_json["sha256"] == body["sha256"]  # the same questions, whatever the way in
        names = [s["name"] for s in api.get("/eval/test_sets").json()["data"]]
        assert names[:2] == ["as-json", "uploaded"]
        shown = api.get(f"/eval/test_sets/{body['id']}").json()
        assert [item["id"] for item in shown["data"]] == ["q1", "q2", "q3", "q4", "q5"]
        assert shown["data"][0]["choices"][shown["data"][0]["gold"]] == "carbon dioxide"
        assert [i["id"] for i in api.get("/eval/test_sets/uploaded", params={"limit": 2}).json()["data"]] == ["q1", "q2"]
        removed = api.delete("/eval/test_sets/uploaded")
        assert removed.status_code == 200 and removed.json()["deleted"] is True
        assert api.get(f"/eval/test_sets/{body['id']}").status_code == 404
        restored = api.post(f"/eval/test_sets/{body['id']}/restore")
        assert restored.status_code == 200 and restored.json()["name"] == "uploaded"
        example = api.post("/eval/test_sets/example").json()
        assert example["name"] == "science-example" and example["items"] >= 50
        assert api.post("/eval/test_sets/example").json()["id"] == example["id"]  # stored once


@pytest.mark.parametrize(("request_kwargs", "param", "words"), [
    ({"json": {"name": "bad", "filename": "bad.jsonl", "content": '{"id": "a", "question": "x?", "answer": "y"}\n'
                                                                  '{"id": "b", "question": "", "answer": "z"}'}},
     "content", "line 2"),
    ({"files": {"file": ("bad.jsonl", b'{"id": "a", "question": "x?"}\n{"id": "a", "question": "y?", "answer": "n"}')}},
     "file", "line"),
    ({"json": {"name": "bad", "filename": "bad.txt", "content": "what"}}, "content", "not a test set file"),
    ({"json": {"name": "bad", "content": "x"}}, "filename", "is required"),
    ({"json": {"name": "bad", "filename": "a.jsonl", "content": "", "extra": 1}}, "extra", "not a known field"),
    ({"content": b"plain", "headers": {"content-type": "text/plain"}}, "file", "multipart/form-data"),
    ({"files": {"name": (None, "no file")}}, "file", "field 'file'"),
])
def test_a_bad_test_set_is_400_naming_the_parameter_and_the_line(server: str, keys: dict[str, str],
                                                                  request_kwargs: dict, param: str, words: str) -> None:
    with http(server, keys["bob"]) as api:
        before = len(api.get("/eval/test_sets").json()["data"])
        response = api.post("/eval/test_sets", **request_kwargs)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and words in error["message"], error
        assert len(api.get("/eval/test_sets").json()["data"]) == before  # nothing half-stored


def test_a_taken_name_is_400_naming_name(server: str, keys: dict[str, str]) -> None:
    with http(server, keys["bob"]) as api:
        add_set(api, "taken")
        response = api.post("/eval/test_sets", json={"name": "taken", "filename": "t.jsonl", "content": JSONL})
    assert response.status_code == 400 and response.json()["error"]["param"] == "name"
    assert "exists" in response.json()["error"]["message"]


def test_a_run_on_two_models_computes_in_the_background_and_reports(server: str, keys: dict[str, str],
                                                                    ada_run: dict) -> None:
    run = ada_run["finished"]
    assert (run["status"], run["done"], run["total"], run["fraction"]) == ("finished", 10, 10, 1.0)
    assert run["models"] == ["hf", "fast"] and run["test_set"] == "ada-set"
    assert run["scorers"] == ["choice", "loglik", "loglik_norm", "exact", "contains", "f1"]
    with http(server, keys["ada"]) as api:
        assert [r["id"] for r in api.get("/eval/runs").json()["data"]] == [run["id"]]
        outputs = api.get(f"/eval/runs/{run['id']}/outputs").json()["data"]
        assert len(outputs) == 10 and {o["model"] for o in outputs} == {"hf", "fast"}
        assert all(o["record"]["params"]["max_new_tokens"] == 8 for o in outputs)
        report = api.get("/eval/report", params={"runs": str(run["id"]), "scorer": "loglik"}).json()
        assert report["object"] == "eval.report" and report["scorer"] == "loglik"
        assert sorted(r["model"] for r in report["results"]) == ["fast", "hf"]
        assert all(r["accuracy"]["n"] == 2 for r in report["results"])
        assert [(c["model_a"], c["model_b"]) for c in report["comparisons"]] == [("hf", "fast")]
        markdown = api.get("/eval/report", params={"runs": run["id"], "format": "md"})
        assert markdown.headers["content-type"].startswith("text/markdown")
        assert markdown.text.startswith("# Evaluation report: ada-set")
        csv = api.get("/eval/report", params={"runs": run["id"], "format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv") and "attachment" in csv.headers["content-disposition"]
        assert csv.text.splitlines()[0] == "item,question,accepted,model,correct,value,output"


def test_a_rescore_scores_again_without_generating(server: str, keys: dict[str, str], ada_run: dict) -> None:
    run_id = ada_run["finished"]["id"]
    with http(server, keys["ada"]) as api:
        before = {o["id"]: o["text"] for o in api.get(f"/eval/runs/{run_id}/outputs").json()["data"]}
        response = api.post(f"/eval/runs/{run_id}/rescore", json={"scorers": ["contains"]})
        assert response.status_code == 200, response.text
        assert response.json()["scores_written"] == 6  # the three short answers on two models
        assert "contains" in response.json()["scorers"]
        after = api.get(f"/eval/runs/{run_id}/outputs").json()["data"]
        assert {o["id"]: o["text"] for o in after} == before
        assert sum("contains" in o["scores"] for o in after) == 6
        assert api.get("/eval/report", params={"runs": run_id, "scorer": "contains"}).json()["scorer"] == "contains"
        bad = api.post(f"/eval/runs/{run_id}/rescore", json={"scorers": ["bogus"]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "scorers"


def test_a_cancelled_run_keeps_its_outputs_and_resumes(server: str, keys: dict[str, str], held: Held) -> None:
    with http(server, keys["ada"]) as api:
        test_set = add_set(api, "to-cancel")
        with held.holding():
            started = api.post("/eval/runs", json={"test_set": "to-cancel", "models": ["held"], "scorers": ["exact"],
                                                   "max_new_tokens": 4})
            assert started.status_code == 202, started.text
            run_id = started.json()["id"]
            held.wait_until_held(1)
            cancelled = api.post(f"/eval/runs/{run_id}/cancel")
            assert cancelled.status_code == 200
            run = wait_for_run(api, run_id)
        assert run["status"] == "cancelled" and run["done"] < run["total"] == test_set["items"]
        assert api.post(f"/eval/runs/{run_id}/cancel").json()["status"] == "cancelled"  # again: no change
        resumed = api.post(f"/eval/runs/{run_id}/resume")
        assert resumed.status_code == 202, resumed.text
        run = wait_for_run(api, run_id)
        assert (run["status"], run["done"], run["total"]) == ("finished", 5, 5)
        assert len(api.get(f"/eval/runs/{run_id}/outputs").json()["data"]) == 5
        again = api.post(f"/eval/runs/{run_id}/resume")
        assert again.status_code == 400 and again.json()["error"]["param"] == "run"


@pytest.mark.parametrize(("body", "param"), [
    ({"models": ["hf"]}, "test_set"),
    ({"test_set": "ada-set"}, "models"),
    ({"test_set": "ada-set", "models": []}, "models"),
    ({"test_set": "ada-set", "models": ["hf", "hf"]}, "models"),
    ({"test_set": "ada-set", "models": ["hf@color=red"]}, "models"),
    ({"test_set": "ada-set", "models": ["hf"], "scorers": ["bogus"]}, "scorers"),
    ({"test_set": "ada-set", "models": ["hf"], "scorers": ["judge"]}, "judge"),
    ({"test_set": "ada-set", "models": ["hf"], "max_new_tokens": 0}, "max_new_tokens"),
    ({"test_set": "ada-set", "models": ["hf"], "max_new_tokens": "many"}, "max_new_tokens"),
    ({"test_set": "ada-set", "models": ["hf"], "collections": []}, "collections"),
    ({"test_set": "ada-set", "models": "hf"}, "models"),
])
def test_a_bad_run_is_400_naming_the_parameter(server: str, keys: dict[str, str], ada_run: dict, body: dict,
                                               param: str) -> None:
    with http(server, keys["ada"]) as api:
        before = len(api.get("/eval/runs").json()["data"])
        response = api.post("/eval/runs", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param, response.json()
        assert len(api.get("/eval/runs").json()["data"]) == before  # nothing stored


@pytest.mark.parametrize(("params", "param"), [({}, "runs"), ({"runs": "x"}, "runs"), ({"runs": "1,,2"}, "runs"),
                                               ({"runs": "1", "format": "xml"}, "format")])
def test_a_bad_report_request_is_400_naming_the_parameter(server: str, keys: dict[str, str], params: dict,
                                                          param: str) -> None:
    with http(server, keys["ada"]) as api:
        response = api.get("/eval/report", params=params)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_an_unknown_scorer_in_a_report_is_400(server: str, keys: dict[str, str], ada_run: dict) -> None:
    with http(server, keys["ada"]) as api:
        response = api.get("/eval/report", params={"runs": ada_run["finished"]["id"], "scorer": "judge"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "scorer"


def test_an_arena_battle_hides_the_names_until_the_vote(server: str, keys: dict[str, str], ada_battle: dict) -> None:
    answered, voted = ada_battle["answered"], ada_battle["voted"]
    assert answered["object"] == "arena.battle" and answered["finished"] is True
    assert answered["model_a"] is None and answered["model_b"] is None and answered["vote"] is None
    assert answered["answer_a"] and answered["answer_b"]
    assert voted["vote"] == "a" and {voted["model_a"], voted["model_b"]} == {"hf", "fast"}
    assert (voted["answer_a"], voted["answer_b"]) == (answered["answer_a"], answered["answer_b"])
    with http(server, keys["ada"]) as api:
        assert api.get(f"/arena/battles/{answered['id']}").json()["model_a"] == voted["model_a"]
        assert [b["id"] for b in api.get("/arena/battles").json()["data"]] == [answered["id"]]
        board = api.get("/arena/leaderboard").json()
        assert board["object"] == "arena.leaderboard" and board["enough"] is False
        assert board["message"] == "not enough votes yet (1 of 10)"
        assert board["rows"][0]["model"] == voted["model_a"] and board["rows"][0]["wins"] == 1
        assert api.get("/arena/leaderboard", params={"min_votes": 1}).json()["enough"] is True
        votes = api.get("/arena/votes").json()["data"]
        assert [(v["kind"], v["vote"], v["model_a"]) for v in votes] == [("arena", "a", voted["model_a"])]
        lines = api.get("/arena/votes", params={"format": "jsonl"})
        assert lines.headers["content-type"].startswith("application/x-ndjson")
        assert [json.loads(line)["id"] for line in lines.text.splitlines()] == [answered["id"]]
        twice = api.post(f"/arena/battles/{answered['id']}/vote", json={"vote": "b"})
        assert twice.status_code == 400 and twice.json()["error"]["param"] == "vote"
        assert "already has a vote" in twice.json()["error"]["message"]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/arena/battles", {"prompt": "  ", "models": ["hf", "fast"]}, "prompt"),
    ("/arena/battles", {"prompt": "hi", "models": ["hf"]}, "models"),
    ("/arena/battles", {"prompt": "hi", "models": ["hf", "fast"], "temperature": 9}, "temperature"),
    ("/arena/battles", {"models": ["hf", "fast"]}, "prompt"),
])
def test_a_bad_battle_is_400_naming_the_parameter(server: str, keys: dict[str, str], path: str, body: dict,
                                                  param: str) -> None:
    with http(server, keys["bob"]) as api:
        before = len(api.get("/arena/battles").json()["data"])
        response = api.post(path, json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
        assert len(api.get("/arena/battles").json()["data"]) == before


def test_a_bad_vote_or_format_is_400(server: str, keys: dict[str, str], ada_battle: dict) -> None:
    with http(server, keys["ada"]) as api:
        response = api.post(f"/arena/battles/{ada_battle['answered']['id']}/vote", json={"vote": "c"})
        assert response.status_code == 400 and response.json()["error"]["param"] == "vote"
        assert api.get("/arena/votes", params={"format": "xml"}).json()["error"]["param"] == "format"
        assert api.get("/arena/leaderboard", params={"min_votes": "0"}).json()["error"]["param"] == "min_votes"


def test_another_users_ids_answer_exactly_as_missing_ones(server: str, keys: dict[str, str], ada_run: dict,
                                                          ada_battle: dict) -> None:
    """Bob sees none of Ada's test sets, runs or battles: each id of hers answers as an id that does not exist."""
    theirs = {"set": ada_run["test_set"]["id"], "run": ada_run["finished"]["id"],
              "battle": ada_battle["answered"]["id"]}
    missing = 999_999
    cases = [
        ("GET", "/eval/test_sets/{}", "set", None), ("DELETE", "/eval/test_sets/{}", "set", None),
        ("POST", "/eval/test_sets/{}/restore", "set", None),
        ("GET", "/eval/runs/{}", "run", None), ("POST", "/eval/runs/{}/cancel", "run", None),
        ("POST", "/eval/runs/{}/resume", "run", None), ("POST", "/eval/runs/{}/rescore", "run", {"scorers": ["f1"]}),
        ("GET", "/eval/runs/{}/outputs", "run", None), ("GET", "/eval/report?runs={}", "run", None),
        ("GET", "/arena/battles/{}", "battle", None), ("POST", "/arena/battles/{}/vote", "battle", {"vote": "b"}),
        ("POST", "/eval/runs", "set", None),
    ]
    with http(server, keys["bob"]) as bob, http(server, keys["ada"]) as ada:
        for method, path, kind, body in cases:
            if path == "/eval/runs":  # a run of her test set, named by id
                mine = bob.post(path, json={"test_set": theirs[kind], "models": ["hf"]})
                absent = bob.post(path, json={"test_set": missing, "models": ["hf"]})
            else:
                mine = bob.request(method, path.format(theirs[kind]), json=body)
                absent = bob.request(method, path.format(missing), json=body)
            assert mine.status_code == absent.status_code == 404, (path, mine.text)
            assert mine.json()["error"] == {**absent.json()["error"], "message": absent.json()["error"][
                "message"].replace(str(missing), str(theirs[kind]))}, path
        by_name = bob.get("/eval/test_sets/ada-set")
        no_name = bob.get("/eval/test_sets/no-such-set")
        assert by_name.status_code == no_name.status_code == 404
        assert by_name.json()["error"]["message"].replace("ada-set", "no-such-set") == no_name.json()["error"]["message"]
        report = bob.get("/eval/report", params={"runs": f"{theirs['run']},{missing}"})
        assert report.status_code == 404
        # Nothing of hers in his lists, and everything still hers.
        assert theirs["set"] not in {s["id"] for s in bob.get("/eval/test_sets").json()["data"]}
        assert theirs["run"] not in {r["id"] for r in bob.get("/eval/runs").json()["data"]}
        assert theirs["battle"] not in {b["id"] for b in bob.get("/arena/battles").json()["data"]}
        assert bob.get("/arena/votes").json()["data"] == []
        assert ada.get(f"/eval/test_sets/{theirs['set']}").status_code == 200
        assert ada.get(f"/eval/runs/{theirs['run']}").json()["status"] == "finished"
        assert ada.get(f"/arena/battles/{theirs['battle']}").json()["vote"] == "a"


def test_evaluation_needs_a_key_like_the_rest_of_v1(server: str) -> None:
    with httpx.Client(base_url=f"{server}/v1") as anonymous:
        for path in ("/eval/test_sets", "/eval/runs", "/arena/leaderboard"):
            response = anonymous.get(path)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_a_server_without_history_has_no_evaluations(tiny_engine) -> None:
    with serve(create_api_app(manager=manager_for(tiny_engine), store=None)) as url:
        with httpx.Client(base_url=f"{url}/v1") as api:
            response = api.get("/eval/runs")
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_history"

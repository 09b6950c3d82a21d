"""``chatcore eval`` and ``chatcore arena`` on a real store and the tiny model in two configurations
(``DIR`` and ``DIR@quant=none``), each command loading its models as a user's would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatcore.core.settings import Settings
from chatcore.testing.commands import invoker
from chatcore.testing.evaluation import SCIENCE_ITEMS as ITEMS
from storage import Store
from storage import evaluation as store_evaluation


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the file: the quantization check runs once per model, not once per command."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cli(cache: Path, monkeypatch: pytest.MonkeyPatch):
    return invoker(monkeypatch, cache=cache)


@pytest.fixture
def science(tmp_path: Path) -> Path:
    path = tmp_path / "science.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in ITEMS) + "\n")
    return path


def json_of(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_test_sets_are_added_listed_shown_removed_and_restored(cli, science: Path, tmp_path: Path) -> None:
    assert cli("eval", "sets", "list").stdout.startswith("No test sets. Add one with: chatcore eval sets add FILE")
    added = cli("eval", "sets", "add", str(science), "--name", "lab")
    assert added.exit_code == 0 and added.stdout.strip() == "Added test set 1 'lab': 5 items (from science.jsonl)"
    shown = cli("eval", "sets", "show", "lab", "--limit", "2")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert "2 multiple choice, 3 short answer" in lines[1]
    assert lines[2] == ("  q1: Which gas do plants take in for photosynthesis?  "
                        "[A oxygen | B* carbon dioxide | C helium | D neon]  #biology")
    assert lines[3] == "  q2: What is the chemical symbol of sodium?  → Na  #chemistry"
    assert lines[-1] == "  (2 of 5; all: --limit 0)"
    assert [i["id"] for i in json_of(cli("eval", "sets", "show", "1", "--json", "--limit", "0"))["items"]] == [
        "q1", "q2", "q3", "q4", "q5"]
    example = cli("eval", "sets", "example")
    assert example.exit_code == 0 and "'science-example'" in example.stdout
    assert [s["name"] for s in json_of(cli("eval", "sets", "list", "--json"))] == ["science-example", "lab"]
    assert json_of(cli("eval", "sets", "show", "example", "--json"))["name"] == "science-example"
    removed = cli("eval", "sets", "remove", "lab")
    assert removed.stdout.strip() == "Removed test set 1 'lab'. Undo with: chatcore eval sets restore 1"
    gone = cli("eval", "sets", "show", "lab")
    assert gone.exit_code == 1 and "no test set lab" in gone.stderr
    assert cli("eval", "sets", "restore", "1").stdout.startswith("Restored test set 1 'lab'")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "x?", "answer": "y"}\n{"id": "b", "question": "x?", "choices": "no"}\n')
    refused = cli("eval", "sets", "add", str(bad))
    assert refused.exit_code == 1 and "line 2" in refused.stderr and '"choices"' in refused.stderr
    assert len(json_of(cli("eval", "sets", "list", "--json"))) == 2  # nothing half-stored
    taken = cli("eval", "sets", "add", str(science), "--name", "lab")
    assert taken.exit_code == 1 and "a test set named 'lab' exists" in taken.stderr


def test_a_run_on_two_configurations_reports_rescores_lists_and_shows(cli, science: Path,
                                                                      tiny_model_dir: Path) -> None:
    a, b = str(tiny_model_dir), f"{tiny_model_dir}@quant=none"
    result = cli("eval", "run", str(science), "--model", a, "--model", b, "--max-new-tokens", "8")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"Run 1: science on {a}, {b}: finished, 10 of 10 outputs.\nAccuracy:\n")
    assert re.search(rf"  loglik\s+{re.escape(a)}: \d+\.\d% \(95% CI \d+\.\d%–\d+\.\d%, n=2\)", out)
    assert re.search(rf"  exact\s+{re.escape(b)}: \d+\.\d% \(95% CI", out)
    assert f"McNemar (paired):\n  choice       {a} vs {b}: " in out
    assert out.rstrip().endswith("Report: chatcore eval report 1 [--md]; per item: chatcore eval show 1")
    assert "Run 1: science (5 items) on 2 models" in result.stderr and "Loading " in result.stderr
    assert "10/10" in result.stderr  # the progress bar reached the end

    again = cli("eval", "run", str(science), "--model", a, "--max-new-tokens", "8", "--scorer", "f1", "--json")
    body = json_of(again)
    assert body["run"]["test_set_id"] == 1 and list(body["reports"]) == ["f1"]  # the identical set reused
    assert len(json_of(cli("eval", "sets", "list", "--json"))) == 1

    runs = json_of(cli("eval", "list", "--json"))
    assert [(r["id"], r["status"], r["done"], r["total"]) for r in runs] == [(2, "finished", 5, 5),
                                                                             (1, "finished", 10, 10)]
    listing = cli("eval", "list").stdout.splitlines()
    assert listing[0].split() == ["ID", "STATUS", "DONE", "STARTED", "TEST", "SET:", "MODELS"]
    assert listing[2].split()[:3] == ["1", "finished", "10/10"]

    report = json_of(cli("eval", "report", "1", "--json", "--scorer", "loglik"))
    assert report["scorer"] == "loglik" and sorted(r["model"] for r in report["results"]) == sorted([a, b])
    assert [(c["model_a"], c["model_b"], c["items"]) for c in report["comparisons"]] == [(a, b, 2)]
    markdown = cli("eval", "report", "1", "--md")
    assert markdown.stdout.startswith("# Evaluation report: science (runs 1)\n\nScorer: `choice`.")
    assert "## Paired comparison (McNemar)" in markdown.stdout
    text = cli("eval", "report", "1", "2", "--scorer", "f1").stdout
    assert "runs 1, 2" in text and f"{a} (run 1)" in text and f"{a} (run 2)" in text
    csv_path = science.parent / "out" / "disagreements.csv"
    written = cli("eval", "report", "1", "--csv", str(csv_path))
    assert written.exit_code == 0 and f"to {csv_path}" in written.stderr
    assert csv_path.read_text().splitlines()[0] == "item,question,accepted,model,correct,value,output"

    shown = json_of(cli("eval", "show", "1", "--json"))
    assert len(shown["outputs"]) == 10 and shown["models"] == [a, b]
    assert all(o["record"]["params"]["max_new_tokens"] == 8 for o in shown["outputs"])
    lines = cli("eval", "show", "1").stdout.splitlines()
    assert lines[2] == "q1: Which gas do plants take in for photosynthesis?"
    assert any(line.startswith("    choice ") and "loglik" in line for line in lines)

    rescored = cli("eval", "rescore", "1", "--scorer", "contains")
    assert rescored.exit_code == 0, rescored.output
    assert rescored.stdout.startswith("Rescored run 1 with contains: 6 scores written, nothing generated.")
    assert json_of(cli("eval", "show", "1", "--json"))["outputs"][2]["text"] == shown["outputs"][2]["text"]
    assert "contains" in json_of(cli("eval", "list", "--json"))[1]["scorers"]
    assert json_of(cli("eval", "report", "1", "--scorer", "contains", "--json"))["scorer"] == "contains"


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "run", "no-such-set", "--model", "default"], "no test set no-such-set"),
    (["eval", "run", "example", "--model", "a", "--model", "a"], "the same model is named twice"),
    (["eval", "run", "example", "--model", "a@colour=red"], "is not an option"),
    (["eval", "run", "example", "--model", "a", "--scorer", "bogus"], "unknown scorer 'bogus'"),
    (["eval", "run", "example", "--model", "a", "--scorer", "judge"], "needs a judge model"),
    (["eval", "run", "example", "--model", "a", "--max-new-tokens", "0"], "max_new_tokens"),
    (["eval", "run", "example", "--model", "a", "--docs", "papers"], "papers"),
    (["eval", "report", "7"], "no run 7"),
    (["eval", "show", "7"], "no run 7"),
    (["eval", "resume", "7"], "no run 7"),
    (["eval", "rescore", "7", "--scorer", "f1"], "no run 7"),
    (["eval", "sets", "remove", "nothing"], "no test set nothing"),
    (["arena", "vote", "7", "a"], "no battle 7"),
])
def test_bad_input_is_one_clear_line_before_any_model_loads(cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and "Traceback" not in result.output and "Loading" not in result.stderr


def test_ctrl_c_cancels_a_run_cleanly_and_resume_finishes_it(cli, cache: Path, tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    """SIGINT mid-run: the run is stored cancelled with its finished outputs; `eval resume` computes the rest."""
    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps({"id": f"n{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i)})
                            + "\n" for i in range(200)))
    command = [sys.executable, "-c", "from chatcore.cli import main; main()", "eval", "run", str(many),
               "--model", str(tiny_model_dir), "--scorer", "exact", "--max-new-tokens", "64"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "CHATCORE_CACHE": str(cache)})
    seen = b""
    while not re.search(rb"\b[1-9]\d*/200\b", seen):  # the bar shows finished outputs: the run is under way
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    process.send_signal(signal.SIGINT)
    stdout, rest = process.communicate()
    stderr = (seen + rest).decode(errors="replace")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert re.search(r"Cancelled run 1 after \d+ of 200 outputs; resume with: chatcore eval resume 1", stderr)
    store = Store(Settings().db_path)
    run = store_evaluation.get_run(store, "local", 1)
    assert run["status"] == "cancelled" and 0 < run["done"] < 200
    assert len(store_evaluation.outputs(store, "local", 1)) == run["done"]

    resumed = cli("eval", "resume", "1", "--json")
    body = json_of(resumed)
    assert f"Resuming run 1: {run['done']} of 200 outputs done" in resumed.stderr
    assert (body["run"]["status"], body["run"]["done"]) == ("finished", 200)
    assert body["reports"]["exact"]["results"][0]["accuracy"]["n"] == 200
    assert len(store_evaluation.outputs(store, "local", 1)) == 200  # each item once
    finished = cli("eval", "resume", "1")
    assert finished.exit_code == 1 and "run 1 is finished; nothing to resume" in finished.stderr


def test_the_arena_hides_the_names_until_the_vote(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    a, b = str(tiny_model_dir), f"{tiny_model_dir}@quant=none"
    result = cli("arena", "ask", "Why is the sky blue?", "--model", a, "--model", b, "--vote", "a",
                 "--max-tokens", "8", "--temperature", "0")
    assert result.exit_code == 0, result.output
    before_vote, reveal = result.stdout.split("Vote: ")
    assert before_vote.startswith("── Model A ──\n") and "── Model B ──\n" in before_vote
    assert a not in before_vote and "quant" not in before_vote  # the names stay hidden until the vote
    match = re.fullmatch(r"A is better\. Model A was (.+); Model B was (.+) \(battle 1\)\.\n", reveal)
    assert match and {match.group(1), match.group(2)} == {a, b}

    asked = cli("arena", "ask", "Name a planet.", "--model", a, "--model", b, "--max-tokens", "8",
                "--temperature", "0", input="maybe\nb\n")
    assert asked.exit_code == 0, asked.output
    assert "Which is better? [a/b/tie/both_bad]" in asked.stderr and "B is better." in asked.stdout

    unvoted = cli("arena", "ask", "Name a star.", "--model", a, "--model", b, "--max-tokens", "8",
                  "--temperature", "0", input="")
    assert unvoted.exit_code == 1 and "vote later with: chatcore arena vote 3" in unvoted.stderr
    voted = json_of(cli("arena", "vote", "3", "tie", "--json"))
    assert voted["vote"] == "tie" and {voted["model_a"], voted["model_b"]} == {a, b}

    board = json_of(cli("arena", "leaderboard", "--json"))
    assert board["enough"] is False and board["message"] == "not enough votes yet (3 of 10)"
    assert sorted(row["model"] for row in board["rows"]) == sorted([a, b])
    text = cli("arena", "leaderboard", "--min-votes", "3").stdout.splitlines()
    assert text[0].split() == ["RANK", "SCORE", "95%", "INTERVAL", "VOTES", "WINS", "MODEL"] and len(text) == 4
    assert len(cli("arena", "battles").stdout.splitlines()) == 3

    output = tmp_path / "votes.jsonl"
    exported = cli("arena", "export", str(output))
    assert exported.stdout.strip() == f"Exported 3 votes to {output}."
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["kind"], r["id"], r["vote"]) for r in records] == [("arena", 1, "a"), ("arena", 2, "b"),
                                                                   ("arena", 3, "tie")]
    twice = cli("arena", "vote", "1", "b")
    assert twice.exit_code == 1 and "already has a vote" in twice.stderr


def test_the_arena_refuses_one_model_before_loading_any(cli) -> None:
    result = cli("arena", "ask", "hi", "--model", "only-one")
    assert result.exit_code == 1 and "the arena needs two different models" in result.stderr
    assert "Loading" not in result.stderr

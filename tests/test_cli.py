"""The ``chatcore`` CLI end to end with the tiny model: streaming, JSON, errors, saving."""

from __future__ import annotations

import json

import pytest

from chatcore.testing.commands import invoker


@pytest.fixture
def cli(tiny_model_dir, tmp_path, monkeypatch):
    """Invoke ``chatcore`` with the tiny model and a private cache."""
    return invoker(monkeypatch, cache=tmp_path / "cache", model=tiny_model_dir)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--temperature", "5", "temperature must be in the range [0, 2], got 5"),
        ("--max-tokens", "0", "max_new_tokens must be in the range [1,"),
        ("--top-p", "0", "top_p must be in the range (0, 1], got 0"),
        ("--top-k", "-2", "top_k must be 0 (off) or a positive integer"),
        ("--repetition-penalty", "3", "repetition_penalty must be in the range [1, 2]"),
        ("--seed", "x", "seed must be an integer"),
        ("--temperature", "nan", "temperature must be a finite number"),
    ],
)
def test_bad_parameters_are_refused_before_loading(cli, flag, value, message):
    result = cli("ask", flag, value, "hello")
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_ask_streams_the_same_greedy_answer_twice(cli):
    first = cli("ask", "--temperature", "0", "--max-tokens", "16", "--no-save", "What is entropy?")
    second = cli("ask", "--temperature", "0", "--max-tokens", "16", "--no-save", "What is entropy?")
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout and len(first.stdout) > 1


def test_ask_json_prints_the_final_event(cli):
    result = cli("ask", "--json", "--temperature", "0", "--max-tokens", "8", "--no-save", "Hi")
    data = json.loads(result.stdout)
    assert data["completion_tokens"] <= 8
    assert data["finish_reason"] in ("stop", "length")
    assert data["prompt_tokens"] > 0 and data["ttft_ms"] > 0
    # dtype names the compute dtype, plus the weight quantization the fast Llama path chose ("bfloat16+int4").
    assert data["extra"]["dtype"].split("+")[0] in ("float32", "bfloat16") and len(data["extra"]["weights_sha256"]) == 64


def test_ask_saves_and_continues(cli):
    from chatcore.core.settings import Settings
    from storage import Store

    first = json.loads(cli("ask", "--json", "-t", "0", "--max-tokens", "6", "First question").stdout)
    cid = first["conversation_id"]
    again = json.loads(cli("ask", "--json", "-t", "0", "--max-tokens", "6", "-c", str(cid), "Follow-up").stdout)
    assert again["conversation_id"] == cid
    conversation = Store(Settings().db_path).get_conversation("local", cid)
    roles = [m["role"] for m in conversation["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    answer = conversation["messages"][1]
    assert answer["complete"] and answer["content"] == first["text"]
    assert answer["params"]["seed"] == first["seed"] and answer["completion_tokens"] == first["completion_tokens"]


def test_continue_unknown_conversation_is_a_clear_error(cli):
    result = cli("ask", "-c", "999", "hello")
    assert result.exit_code == 1 and "999" in result.output and "Traceback" not in result.output


def test_empty_prompt_is_refused(cli):
    result = cli("ask", "   ")
    assert result.exit_code == 1 and "the message is empty" in result.output


def test_missing_models_are_clear_errors(cli, tmp_path):
    result = cli("ask", "--model", str(tmp_path / "missing.gguf"), "hi")
    assert result.exit_code == 1 and "GGUF file not found" in result.output
    result = cli("ask", "--model", "not a model", "hi")
    assert result.exit_code == 1 and "unknown model 'not a model'" in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_gpu_is_a_clear_error(cli):
    result = cli("ask", "--device", "cuda", "hi")
    assert result.exit_code == 1 and "no CUDA GPU is available" in result.output


def test_chat_keeps_the_conversation(cli):
    result = cli("chat", "-t", "0", "--max-tokens", "5", input="Hello there\nAnd again\n/exit\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("assistant> ") == 2
    assert result.stderr.count("prompt tokens reused") == 1  # the second turn, from the first one's cache
    from chatcore.core.settings import Settings
    from storage import Store

    [conversation] = Store(Settings().db_path).list_conversations("local")
    assert conversation["title"].startswith("Hello there")


def test_template_without_its_variables_is_refused_naming_them(cli):
    result = cli("ask", "--template", "experiment-design")
    assert result.exit_code == 1
    assert "missing" in result.output and "Traceback" not in result.output


def test_template_fills_the_prompt(cli):
    from chatcore.cli.prompts import load_library
    from chatcore.core.settings import Settings

    template = load_library(Settings()).get("stats-explainer")
    values = [f"--var={k}=sample value" for k in template.required]
    result = cli("ask", "--json", "--max-tokens", "4", "--no-save", "--template", "stats-explainer", *values)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["prompt_tokens"] > len(template.body) // 2  # the byte tokenizer: ~1 token a char


def test_reproduce_of_a_missing_answer_fails_before_loading_a_model(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("CHATCORE_MODEL", str(tmp_path / "no-such-model"))  # loading it would fail otherwise
    result = cli("reproduce", "424242")
    assert result.exit_code == 1
    assert "424242" in result.output and "no-such-model" not in result.output
    assert "Traceback" not in result.output


def test_reproduce_matches_the_saved_answer(cli):
    first = json.loads(cli("ask", "--json", "-t", "1.0", "--max-tokens", "10", "Sample something").stdout)
    from chatcore.core.settings import Settings
    from storage import Store

    answer = Store(Settings().db_path).get_conversation("local", first["conversation_id"])["messages"][-1]
    result = cli("reproduce", str(answer["id"]))
    assert result.exit_code == 0, result.output
    # The answer streams as it is, then one newline ends the line; a sampled answer may end in "\n" itself.
    # Bytes, because click's Result.stdout turns "\r\n" into "\n", and the random model can sample a "\r".
    assert result.stdout_bytes == (first["text"] + "\n").encode()
    assert "identical to the saved answer" in result.stderr

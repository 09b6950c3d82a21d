"""Perplexity: the sliding window agrees with one full pass, and the CLI prints a finite value."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from click.testing import CliRunner

from chatcore.cli import main
from chatcore.engine.perplexity import perplexity

TEXT = "The quick brown fox jumps over the lazy dog. " * 12


def reference(model, tokenizer, text: str) -> float:
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
    return math.exp(F.cross_entropy(logits[0, :-1], ids[0, 1:]).item())


def test_one_window_equals_a_full_pass(tiny_engine):
    result = perplexity(tiny_engine.model, tiny_engine.tokenizer, TEXT, window=2048)
    assert result.tokens == len(tiny_engine.tokenizer.encode(TEXT, add_special_tokens=False)) - 1
    assert math.isclose(result.perplexity, reference(tiny_engine.model, tiny_engine.tokenizer, TEXT), rel_tol=1e-4)


def test_sliding_window_scores_every_token_once(tiny_engine):
    windows = []
    result = perplexity(tiny_engine.model, tiny_engine.tokenizer, TEXT, window=128, stride=64,
                        progress=lambda n, total: windows.append((n, total)))
    assert result.tokens == len(tiny_engine.tokenizer.encode(TEXT, add_special_tokens=False)) - 1
    assert len(windows) > 3 and windows[-1][0] == len(windows)
    assert math.isfinite(result.perplexity) and result.perplexity > 1


def test_cli_prints_perplexity(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATCORE_CACHE", str(tmp_path / "cache"))
    sample = tmp_path / "sample.txt"
    sample.write_text(TEXT)
    result = CliRunner().invoke(main, ["eval", "perplexity", "--model", str(tiny_model_dir), str(sample)])
    assert result.exit_code == 0, result.output
    value = float(result.stdout.strip().removeprefix("perplexity: "))
    assert math.isfinite(value) and value > 1


def test_cli_refuses_binary_files(tiny_model_dir, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\xfe\x00garbage")
    result = CliRunner().invoke(main, ["eval", "perplexity", "--model", str(tiny_model_dir), str(blob)])
    assert result.exit_code == 1 and "not UTF-8 text" in result.output

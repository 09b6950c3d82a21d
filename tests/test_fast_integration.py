"""The fast decoder on the real default model: exact in float32, within 2% perplexity quantized."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chatcore.core.settings import DEFAULT_MODEL, Settings

pytestmark = pytest.mark.integration
QUESTIONS = ["What are three benefits of regular exercise?", "Explain what a hypothesis is, in two sentences."]


@pytest.fixture(scope="module")
def directory() -> Path:
    from chatcore.engine import sources

    return sources.ensure_local(DEFAULT_MODEL, Settings())


def test_float32_greedy_tokens_equal_transformers_generate(directory, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatcore.core.params import GenerationParams
    from chatcore.engine.fast.engine import load_fast

    tokenizer = AutoTokenizer.from_pretrained(directory)
    settings = Settings(cache=tmp_path, device="cpu", dtype="float32", quant="none")
    engine = load_fast(settings, directory, tokenizer, torch.device("cpu"), torch.float32)
    reference_model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    for question in QUESTIONS:
        history = [{"role": "user", "content": question}]
        final = list(engine.stream(history, GenerationParams.create(temperature=0, repetition_penalty=1,
                                                                     max_new_tokens=48)))[-1]
        prompt = torch.tensor([tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True,
                                                             return_dict=True)["input_ids"]])
        with torch.inference_mode():
            reference = reference_model.generate(prompt, max_new_tokens=48, do_sample=False)
        assert final.text == tokenizer.decode(reference[0, prompt.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_perplexity_within_two_percent_of_float32(directory, mode):
    from transformers import AutoConfig, AutoTokenizer

    from chatcore.engine.fast.engine import (
        CALIBRATION_TEXT,
        LazyState,
        quantized_perplexity,
    )

    config = AutoConfig.from_pretrained(directory)
    state = LazyState(sorted(directory.glob("*.safetensors")))
    ids = torch.tensor([AutoTokenizer.from_pretrained(directory).encode(CALIBRATION_TEXT, add_special_tokens=False)])
    reference = quantized_perplexity(config, state, ids, "none")
    assert quantized_perplexity(config, state, ids, mode) <= reference * 1.02

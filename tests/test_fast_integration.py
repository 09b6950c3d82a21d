"""The fast decoder on the real default model: exact in float32, within 2% perplexity quantized."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chatcore.core.settings import Settings

pytestmark = pytest.mark.integration
QUESTIONS = ["What are three benefits of regular exercise?", "Explain what a hypothesis is, in two sentences."]
# Greedy tokens compared per question: past the prompt's ~30 positions, enough for a wrong rotary
# position, head grouping or norm to change the text, and a third less decoding than 48.
TOKENS = 32


@pytest.fixture(scope="module")
def directory(default_model_dir: Path) -> Path:
    return default_model_dir


def test_float32_greedy_tokens_equal_transformers_generate(directory, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatcore.core.params import GenerationParams
    from chatcore.engine.fast.engine import load_fast

    tokenizer = AutoTokenizer.from_pretrained(directory)
    # The eager step: compiling it ("auto" does for a real model) cost ~4 of a cold run's 11 minutes on
    # 2 cores, and this test is about the decoder's arithmetic on real weights, not torch.compile's.
    settings = Settings(cache=tmp_path, device="cpu", dtype="float32", quant="none", compile="0")
    engine = load_fast(settings, directory, tokenizer, torch.device("cpu"), torch.float32)
    reference_model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    for question in QUESTIONS:
        history = [{"role": "user", "content": question}]
        final = list(engine.stream(history, GenerationParams.create(temperature=0, repetition_penalty=1,
                                                                     max_new_tokens=TOKENS)))[-1]
        prompt = torch.tensor([tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True,
                                                             return_dict=True)["input_ids"]])
        with torch.inference_mode():
            reference = reference_model.generate(prompt, max_new_tokens=TOKENS, do_sample=False)
        assert final.text == tokenizer.decode(reference[0, prompt.shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def calibration(directory: Path) -> tuple:
    """(config, weights, calibration ids, float32 perplexity): shared by both quantized modes."""
    from transformers import AutoConfig, AutoTokenizer

    from chatcore.engine.fast.engine import CALIBRATION_TEXT, LazyState, quantized_perplexity

    config = AutoConfig.from_pretrained(directory)
    state = LazyState(sorted(directory.glob("*.safetensors")))
    ids = torch.tensor([AutoTokenizer.from_pretrained(directory).encode(CALIBRATION_TEXT, add_special_tokens=False)])
    return config, state, ids, quantized_perplexity(config, state, ids, "none")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_perplexity_within_two_percent_of_float32(calibration, mode):
    from chatcore.engine.fast.engine import quantized_perplexity

    config, state, ids, reference = calibration
    assert quantized_perplexity(config, state, ids, mode) <= reference * 1.02

"""CUDA graphs for torch's decode step: bucketing and padding change nothing, captures replay exactly.

The padding and bucketing run on any machine (``capture=False`` runs the same padded step eagerly);
the captures themselves, and the engine on CUDA, run where a GPU is (``bench/cuda-check.sh``).
"""

from __future__ import annotations

import threading

import pytest
import torch

from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.engine.fast.engine import FastEngine, load_fast
from chatcore.engine.fast.graphs import MIN_SPAN, StepGraphs, bucket
from chatcore.engine.fast.model import from_hf_state
from chatcore.testing.engines import QUESTIONS, final_answer
from chatcore.testing.tiny import tiny_model, tiny_tokenizer

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/cuda-check.sh runs these)")
DEVICES = [pytest.param("cpu", False, id="cpu-uncaptured"), pytest.param("cuda", False, id="cuda-captured", marks=CUDA),
           pytest.param("cuda", True, id="cuda-compiled-captured", marks=CUDA)]


@pytest.fixture(scope="module")
def sharp_hf():
    """The tiny model with weights scaled up, so that its tokens depend on the whole context."""
    model = tiny_model(len(tiny_tokenizer()), seed=5)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_(10)
    return model


def test_bucket_rounds_up_to_a_power_of_two_between_floor_and_ceiling():
    assert [bucket(n, 1, 8) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert [bucket(n, 256, 2048) for n in (1, 128, 256, 257, 1024, 1025, 5000)] == [256, 256, 256, 512, 1024, 2048, 2048]
    assert bucket(700, 256, 600) == 600  # a cache shorter than the bucket caps it


def _twins(hf, device: str, slots: int = 8, length: int = 600, compiled: bool = False):
    """Two decoders over the same weights and prompts: one steps through StepGraphs (capturing
    ``torch.compile``'s step when ``compiled``), one exactly."""
    models = []
    for _ in range(2):
        model = from_hf_state(hf.config, hf.state_dict(), torch.float32).to(device)
        model.setup_cache(slots, length)
        models.append(model)
    step = torch.compile(models[0].torch_step, dynamic=True) if compiled else None
    graphs = StepGraphs(models[0], step, capture=device == "cuda")  # zeroes its cache
    models[1].clear(0, 0, length)  # the exact step reads up to its length, so make every slot finite there
    for slot in range(1, slots):
        models[1].clear(slot, 0, length)
    return graphs, models


@pytest.mark.parametrize(("device", "compiled"), DEVICES)
def test_padded_bucketed_steps_equal_the_exact_step_and_touch_no_other_slot(sharp_hf, device, compiled):
    graphs, (ours, exact) = _twins(sharp_hf, device, compiled=compiled)
    torch.manual_seed(0)
    # Three rows in slots out of order (padded to four), one of them crossing the 256-position span bucket;
    # slot 0 holds a prompt that takes no part and must come out untouched.
    lengths = {5: 250, 1: 17, 6: 40, 0: 30}
    prompts = {slot: torch.randint(3, sharp_hf.config.vocab_size, (1, n), device=device) for slot, n in lengths.items()}
    with torch.inference_mode():
        for model in (ours, exact):
            for slot, prompt in prompts.items():
                model.prefill(prompt, slot)
        idle = [block.attn.cache.k[0].clone() for block in ours.layers]
        slots = torch.tensor([5, 1, 6], device=device)
        pos = torch.tensor([lengths[5], lengths[1], lengths[6]], device=device)
        tokens = torch.tensor([prompts[s][0, -1].item() for s in (5, 1, 6)], device=device)
        for step in range(12):
            length = int(pos.max()) + 1
            got = graphs(tokens, pos, slots, length)
            want = exact.decode(tokens, pos, length, slots)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            tokens, pos = want.argmax(-1), pos + 1
        # Five rows pad to eight: the bucket the three rows above never used.
        slots5 = torch.tensor([0, 1, 2, 5, 6], device=device)
        pos5 = torch.tensor([lengths[0], int(pos[1]), 0, int(pos[0]), int(pos[2])], device=device)
        tokens5 = torch.tensor([7, 8, 9, 10, 11], device=device)
        torch.testing.assert_close(graphs(tokens5, pos5, slots5, int(pos5.max()) + 1),
                                   exact.decode(tokens5, pos5, int(pos5.max()) + 1, slots5), atol=1e-4, rtol=1e-4)
    for block, before in zip(ours.layers, idle):
        assert torch.equal(block.attn.cache.k[0, :, : lengths[0]], before[:, : lengths[0]])
    for mine, theirs in zip(ours.layers, exact.layers):  # the padding rows wrote nothing the real rows did not
        for slot, end in ((5, int(pos[0])), (1, int(pos[1])), (6, int(pos[2])), (2, 1)):
            torch.testing.assert_close(mine.attn.cache.v[slot, :, :end], theirs.attn.cache.v[slot, :, :end],
                                       atol=1e-5, rtol=1e-5)
    assert graphs.captured == [(4, MIN_SPAN), (4, 512), (8, 512)]


@CUDA
def test_a_replayed_graph_reads_new_inputs_each_time(sharp_hf):
    graphs, (ours, exact) = _twins(sharp_hf, "cuda", slots=2, length=300)
    with torch.inference_mode():
        for token in range(3, 20):
            tokens = torch.tensor([token, token + 1], device="cuda")
            pos = torch.tensor([token, 2 * token], device="cuda")
            slots = torch.tensor([0, 1], device="cuda")
            torch.testing.assert_close(graphs(tokens, pos, slots, 2 * token + 1),
                                       exact.decode(tokens, pos, 2 * token + 1, slots), atol=1e-4, rtol=1e-4)
    assert graphs.captured == [(2, MIN_SPAN)]


def _cuda_engine(directory, tmp_path, dtype: str, compile_step: str = "auto") -> FastEngine:
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=str(directory), device="cuda",
                        dtype=dtype, quant="auto", compile=compile_step)
    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    engine = load_fast(settings, directory, tiny_tokenizer(), torch.device("cuda"), torch_dtype)
    assert isinstance(engine, FastEngine)
    return engine


@CUDA
@pytest.mark.parametrize("compile_step", ["auto", "1"])  # auto: the tiny model is not worth compiling
def test_on_cuda_the_engine_replays_graphs_and_its_greedy_answers_equal_transformers(tiny_model_dir, tmp_path,
                                                                                     compile_step):
    engine = _cuda_engine(tiny_model_dir, tmp_path, "float32", compile_step)
    assert engine.kernels == "cuda-graphs" and engine.quant == "none"
    assert engine.step.compiled == (compile_step == "1")
    reference_model = engine.model.to("cuda")
    tokenizer = engine.tokenizer
    params = GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=40)
    for history in QUESTIONS[:3]:
        ours = final_answer(engine, params, history)
        assert ours.extra["kernels"] == "cuda-graphs" and ours.extra["device"].startswith("cuda")
        prompt = torch.tensor([tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True,
                                                             return_dict=True)["input_ids"]], device="cuda")
        reference = reference_model.generate(prompt, max_new_tokens=40, do_sample=False, eos_token_id=2, pad_token_id=0)
        assert ours.text == tokenizer.decode(reference[0, prompt.shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def bf16_cuda_engines(tiny_model_dir, tmp_path_factory):
    """The tiny model on CUDA in bfloat16: as served (graphs), and the same decoder stepping eagerly."""
    engine = _cuda_engine(tiny_model_dir, tmp_path_factory.mktemp("bf16"), "bfloat16")
    eager = FastEngine(engine.decoder, engine.tokenizer, engine.info, config=engine.config,
                       directory=engine.directory, quant=engine.quant, compile_step=False, graphs=False)
    engine.scheduler.reuse_prefixes = eager.scheduler.reuse_prefixes = False  # two schedulers, one cache
    return engine, eager


@CUDA
def test_on_cuda_in_bfloat16_graphs_answer_as_the_eager_step_does(bf16_cuda_engines):
    engine, eager = bf16_cuda_engines
    assert engine.info.dtype == "bfloat16" and engine.kernels == "cuda-graphs" and eager.kernels == "torch"
    params = GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=30)
    assert [final_answer(engine, params, q).text for q in QUESTIONS] == [final_answer(eager, params, q).text for q in QUESTIONS]
    sampled = GenerationParams.create(temperature=0.8, top_p=0.9, seed=7, max_new_tokens=20)
    assert final_answer(engine, sampled).text == final_answer(engine, sampled).text  # the seed fixes a sampled answer


@CUDA
def test_on_cuda_concurrent_answers_share_steps_and_equal_sequential_ones(bf16_cuda_engines):
    engine, _ = bf16_cuda_engines
    params = GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=30)
    expected = [final_answer(engine, params, q).text for q in QUESTIONS]
    steps, rows = engine.scheduler.steps, engine.scheduler.rows
    results: list[str | None] = [None] * len(QUESTIONS)

    def worker(i: int) -> None:
        results[i] = final_answer(engine, params, QUESTIONS[i]).text

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(QUESTIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert (engine.scheduler.rows - rows) / (engine.scheduler.steps - steps) > 1.5
    assert results == expected

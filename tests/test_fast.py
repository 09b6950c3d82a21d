"""The fast Llama decoder (chatcore.engine.fast) on the tiny model: exactness, quantization and batching."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from chatcore.core.events import Finished, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.engine.fast import quant
from chatcore.engine.fast.engine import (
    CALIBRATION_TEXT,
    FastEngine,
    load_fast,
    perplexity,
    quantized_perplexity,
)
from chatcore.engine.fast.model import KVCache, from_hf_state, supports
from chatcore.engine.fast.scheduler import Done, Request, Scheduler
from chatcore.engine.fast.step import CompiledStep, TorchStep
from chatcore.testing.engines import QUESTIONS, final_answer
from chatcore.testing.tiny import poison_cache, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def hf():
    return tiny_model(len(tiny_tokenizer()))


def _engine(directory: Path, tmp_path: Path, quant_mode: str) -> FastEngine:
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=str(directory), device="cpu",
                        dtype="auto", quant=quant_mode)
    engine = load_fast(settings, directory, tiny_tokenizer(), torch.device("cpu"), torch.float32)
    assert isinstance(engine, FastEngine)
    return engine


def test_llama_is_supported_and_others_fall_back(hf):
    assert supports(hf.config) is None
    from transformers import GPT2Config

    assert supports(GPT2Config()) is not None


def test_prefill_chunks_and_batched_decode_equal_transformers_logits(hf):
    model = from_hf_state(hf.config, hf.state_dict(), torch.float32)
    model.setup_cache(3, 64)
    model.clear(0, 0, 64)
    model.clear(2, 0, 64)
    ids = torch.randint(0, hf.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = hf(ids).logits[0]  # [S, V]
        torch.testing.assert_close(model.score(ids)[0], reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.prefill(ids[:, :10], slot=2)[0], reference[9], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.prefill(ids[:, 10:16], slot=2, start=10)[0], reference[15], atol=1e-5, rtol=1e-5)
        model.prefill(ids[:, :3], slot=0)
        for p in range(16, 24):  # slot 2 decodes next to slot 0 (another sequence) and slot 1 (free)
            logits = model.decode(torch.tensor([ids[0, 3].item(), 0, ids[0, p].item()]), torch.tensor([3, 0, p]), 32)
            torch.testing.assert_close(logits[2], reference[p], atol=1e-5, rtol=1e-5)


def test_a_compiled_step_that_fails_says_so_and_decodes_eagerly_from_then_on(hf, capsys):
    model = from_hf_state(hf.config, hf.state_dict(), torch.float32)
    model.setup_cache(2, 32)
    for slot in range(2):
        model.clear(slot, 0, 32)
    step = CompiledStep(model, TorchStep(model))

    def broken(*args):
        raise RuntimeError("no compiler today")

    step.function = broken  # torch.compile's step fails on its first call, as it does without a compiler
    tokens, pos, slots = torch.tensor([5, 6]), torch.tensor([0, 0]), torch.tensor([1, 0])
    assert step.compiled
    logits = step.decode(tokens, pos, slots, 32)
    assert not step.compiled and "no compiler today" in capsys.readouterr().err
    assert torch.equal(logits, TorchStep(model).decode(tokens, pos, slots, 32))
    assert step.decode(tokens, pos, slots, 32).shape == logits.shape and capsys.readouterr().err == ""  # said once


def test_a_dropped_model_is_freed_at_once_though_it_holds_its_step(hf):
    """A step the model holds refers back to it weakly: a reference cycle would keep the weights (the
    float32 model of a quantization check, say) until a garbage collection."""
    model = from_hf_state(hf.config, hf.state_dict(), torch.float32)
    model.setup_cache(1, 8)
    assert isinstance(model.step, TorchStep)
    freed = weakref.ref(model)
    gc.disable()
    try:
        del model
        assert freed() is None
    finally:
        gc.enable()


def test_an_int8_cache_keeps_each_position_to_half_a_step_and_clears_and_copies_its_scales():
    cache = KVCache(slots=2, n_kv_heads=2, length=8, head_dim=16, dtype=torch.float32, quantized=True)
    k, v = torch.randn(2, 2, 5, 16, generator=torch.Generator().manual_seed(4)).unbind(0)
    k[0, 1] = 0  # an all-zero head: scale 0, codes 128 (keys) and 0 (values)
    index = (slice(1, 2), slice(None), slice(2, 7))
    cache.write(index, k[None], v[None])
    keys, values = cache.read(index, torch.float32)
    for original, restored in ((k, keys[0]), (v, values[0])):
        step = original.abs().amax(dim=-1, keepdim=True) / 127
        assert ((restored - original).abs() <= step / 2 + 1e-6).all()
    assert torch.equal(keys[0, 0, 1], torch.zeros(16)) and cache.k.dtype == torch.uint8 and cache.v.dtype == torch.int8
    cache.copy(1, 0, 7)
    assert torch.equal(torch.cat(cache.read((0, slice(None), slice(2, 7)), torch.float32)), torch.cat([keys[0], values[0]]))
    cache.k_scale.fill_(float("nan"))  # clear must reach the scales too: they alone decide a position's value
    cache.v_scale.fill_(float("nan"))
    cache.clear(1, 0, 8)
    assert not torch.cat(cache.read((1, slice(None), slice(None)), torch.float32)).any()


def test_an_int8_cache_gives_the_torch_path_nearly_its_float_logits(hf):
    ids = torch.randint(0, hf.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(5))
    logits = {}
    for quantized in (False, True):
        model = from_hf_state(hf.config, hf.state_dict(), torch.float32)
        model.setup_cache(2, 32, quantized=quantized)
        model.clear(1, 0, 32)  # torch's step reads every position below its length (masked, but NaN-unsafe)
        with torch.inference_mode():
            model.prefill(ids[:, :10], slot=1)
            model.prefill(ids[:, 10:16], slot=1, start=10)  # a later chunk reads the cache
            logits[quantized] = torch.cat([model.decode(ids[0, p : p + 1], torch.tensor([p]), 32, torch.tensor([1]))
                                           for p in range(16, 24)])
    relative = (logits[True] - logits[False]).norm(dim=-1) / logits[False].norm(dim=-1)
    assert relative.max() < 0.02 and relative.max() > 0  # close, and really quantized
    assert torch.equal(logits[True].argmax(-1), logits[False].argmax(-1))


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_linears_compute_their_dequantized_weights(mode):
    weight = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    layer = quant.Int8Linear(weight) if mode == "int8" else quant.Int4Linear(weight, 32)
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(1)).bfloat16()
    expected = x.float() @ layer.dequantized().T
    torch.testing.assert_close(layer(x).float(), expected, atol=0.05 * expected.abs().max().item(), rtol=0.02)
    relative = (layer.dequantized() - weight).norm() / weight.norm()
    assert relative < (0.01 if mode == "int8" else 0.1)


def test_int4_reproduces_weights_already_on_a_4bit_grid():
    # GGUF Q4_1 weights (the default model's source) are on exactly this grid: int4 must be near lossless.
    q = torch.randint(0, 16, (32, 64), generator=torch.Generator().manual_seed(2)).float()
    q[:, ::32], q[:, 1::32] = 0, 15  # every group spans the full range
    scales = torch.rand(32, 2, 1, generator=torch.Generator().manual_seed(3)) / 10 + 0.01
    weight = ((q.view(32, 2, 32) - 8) * scales).view(32, 64)
    relative = (quant.Int4Linear(weight, 32).dequantized() - weight).norm() / weight.norm()
    assert relative < 0.01


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_perplexity_within_two_percent(hf, mode):
    ids = torch.tensor([tiny_tokenizer().encode(CALIBRATION_TEXT[:400], add_special_tokens=False)])
    reference = quantized_perplexity(hf.config, hf.state_dict(), ids, "none")
    model = from_hf_state(hf.config, hf.state_dict(), torch.float32)
    assert perplexity(model, ids) == pytest.approx(reference)
    assert quantized_perplexity(hf.config, hf.state_dict(), ids, mode) <= reference * 1.02


def test_auto_quant_picks_a_quantization_and_remembers_it(tiny_model_dir, tmp_path):
    engine = _engine(tiny_model_dir, tmp_path, "auto")
    assert engine.quant in ("int4", "int8")
    assert list((tmp_path / "cache" / "fast").glob("quant-*.json"))
    assert final_answer(engine, GenerationParams.create(temperature=0, max_new_tokens=8)).extra["quant"] == engine.quant


def test_lazy_state_reads_each_tensor_from_the_files_when_asked(tmp_path):
    from safetensors.torch import save_file

    from chatcore.engine.fast.engine import LazyState

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5.0)}
    save_file({"a": tensors["a"]}, str(tmp_path / "one.safetensors"))
    save_file({"b": tensors["b"]}, str(tmp_path / "two.safetensors"))
    state = LazyState(sorted(tmp_path.glob("*.safetensors")))
    assert sorted(state) == ["a", "b"] and state.parameters() == 17 and "a" in state
    assert torch.equal(state["a"], tensors["a"])
    assert torch.equal(state.pop("b"), tensors["b"])
    assert "b" not in state and len(state) == 1 and state.parameters() == 12


def test_explicit_float32_means_exact_weights(tiny_model_dir, tmp_path):
    settings = Settings(home=tmp_path, cache=tmp_path, model=str(tiny_model_dir), device="cpu", dtype="float32")
    engine = load_fast(settings, tiny_model_dir, tiny_tokenizer(), torch.device("cpu"), torch.float32)
    assert engine.quant == "none" and engine.info.dtype == "float32"


@pytest.fixture(scope="module")
def exact_engine(tiny_model_dir, tmp_path_factory):
    return _engine(tiny_model_dir, tmp_path_factory.mktemp("exact"), "none")


def test_greedy_answers_equal_transformers_generate(exact_engine):
    tokenizer = exact_engine.tokenizer
    for history in QUESTIONS[:3]:
        ours = final_answer(exact_engine, GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=40),
                       history)
        prompt = torch.tensor([tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True,
                                                             return_dict=True)["input_ids"]])
        reference = exact_engine.model.generate(prompt, max_new_tokens=40, do_sample=False, eos_token_id=2, pad_token_id=0)
        assert ours.text == tokenizer.decode(reference[0, prompt.shape[1]:], skip_special_tokens=True)


def test_concurrent_requests_join_one_batch_and_match_sequential(exact_engine):
    params = GenerationParams.create(temperature=0, max_new_tokens=30)
    expected = [final_answer(exact_engine, params, q).text for q in QUESTIONS]
    scheduler = exact_engine.scheduler
    steps, rows = scheduler.steps, scheduler.rows
    results: list[str | None] = [None] * len(QUESTIONS)

    def worker(i: int) -> None:
        results[i] = final_answer(exact_engine, params, QUESTIONS[i]).text

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == expected
    assert (scheduler.rows - rows) / (scheduler.steps - steps) > 1.5  # steps carried several requests at once


def test_more_requests_than_slots_wait_for_a_free_slot(exact_engine):
    params = GenerationParams.create(temperature=0, max_new_tokens=6)
    count = exact_engine.scheduler.slots + 3
    results: list[str | None] = [None] * count

    def worker(i: int) -> None:
        results[i] = final_answer(exact_engine, params, QUESTIONS[i % len(QUESTIONS)]).finish_reason

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r in ("stop", "length") for r in results)


def test_cancel_and_abandon_free_the_slot_at_once(exact_engine):
    scheduler = exact_engine.scheduler
    cancel = threading.Event()
    long = GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=1500)
    stream = exact_engine.stream(QUESTIONS[1], long, cancel=cancel)
    next(stream)  # Started
    next(e for e in stream if isinstance(e, TextDelta))
    assert scheduler.running == 1
    cancel.set()
    assert list(stream)[-1].finish_reason == "cancelled"
    deadline = time.monotonic() + 10
    while scheduler.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.running == 0
    # A consumer that simply stops reading (a closed browser tab) frees its slot too.
    stream = exact_engine.stream(QUESTIONS[2], long)
    next(stream)
    next(e for e in stream if isinstance(e, TextDelta))
    stream.close()
    deadline = time.monotonic() + 10
    while scheduler.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.running == 0


def test_sampling_is_reproducible_per_seed(exact_engine):
    params = [GenerationParams.create(temperature=1.2, seed=s, max_new_tokens=20) for s in (5, 5, 6)]
    texts = [final_answer(exact_engine, p).text for p in params]
    assert texts[0] == texts[1] != texts[2]


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_packed_weights_cache_round_trips(mode, tmp_path):
    """The second load reads the packed weights from disk and computes exactly what the first did."""
    from chatcore.engine.fast.engine import quantize_cached

    def build():
        torch.manual_seed(0)
        # Odd sizes (a 259-token vocabulary) put tensors at unaligned offsets in the file.
        return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 259))

    x = torch.randn(3, 64, dtype=torch.bfloat16)
    first, second = build().to(torch.bfloat16), build().to(torch.bfloat16)
    path = tmp_path / "packed.safetensors"
    quantize_cached(first, mode, path)
    [written] = list(tmp_path.glob("packed*.safetensors"))
    quantize_cached(second, mode, path)
    assert list(tmp_path.glob("packed*.safetensors")) == [written]
    assert torch.equal(first(x), second(x))


@pytest.fixture(scope="module")
def sharp_hf():
    """The tiny model with its weights scaled up: its greedy tokens depend on the whole context.

    At initialisation scale the tiny model repeats one token whatever came before, so a wrong KV cache
    would not show in its answers.
    """
    model = tiny_model(len(tiny_tokenizer()), seed=3)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_(10)
    return model


def _greedy_tokens(hf, prompt: list[int], new: int) -> list[int]:
    """transformers' greedy continuation of ``prompt``, one token at a time with no cache."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        for _ in range(new):
            ids = torch.cat([ids, hf(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


def _drain(request: Request) -> tuple[list[int], Done]:
    """The tokens a hand-driven request received, and the ``Done`` that ended them."""
    items = []
    while not isinstance(item := request.out.get_nowait(), Done):
        items.append(item)
    return items, item


def _by_hand(scheduler: Scheduler, prompts: list[list[int]], new: int) -> list[Request]:
    """Queue greedy requests for ``prompts`` at once, then let the scheduler admit them in one go."""
    params = GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=new)
    requests = [Request(prompt, params, torch.Generator(), None, frozenset()) for prompt in prompts]
    for request in requests:
        scheduler.enqueue(request)
    scheduler.admit()
    return requests


def _run_by_hand(scheduler: Scheduler, steps: int = 100) -> None:
    """Step the scheduler until nothing runs (at most ``steps`` steps)."""
    for _ in range(steps):
        if not scheduler.running:
            return
        scheduler.step()


def _scheduler_over_nan_cache(hf, slots: int, length: int, copy: bool = False, together: Callable | None = None,
                              together_rows: int = 0):
    """A Scheduler to drive by hand (no worker thread) over the float32 torch path, its cache all NaN.
    ``together(prompts, prefill)`` stands for a batched prefill call, given the one-prompt prefill."""
    model = from_hf_state(hf.config, hf.state_dict(), torch.float32)
    model.setup_cache(slots, length)
    poison_cache(model)

    def prefill(tokens, slot, start):
        with torch.inference_mode():
            return model.prefill(tokens, slot, start)

    def decode(tokens, pos, rows, bucket):
        with torch.inference_mode():
            return model.decode(tokens, pos, bucket, rows)

    return Scheduler(prefill, decode, slots=slots, length=length, clear=model.clear, device=torch.device("cpu"),
                     copy=model.copy_prefix if copy else None,
                     prefill_together=None if together is None else lambda prompts: together(prompts, prefill),
                     together_rows=together_rows)


def test_requests_of_different_lengths_share_steps_over_uninitialized_cache(sharp_hf):
    """A short request decoding next to a long one reads its slot up to the long one's length.

    Driven step by step (no worker thread), so it is deterministic: a long prompt runs while short ones
    join mid-way, one is cancelled, and a slot freed by a finished request is reused. Every greedy answer
    must equal transformers' greedy tokens for its prompt, even though the cache memory started as NaN.
    """
    g = torch.Generator().manual_seed(7)
    specs = [(300, 60), (12, 8), (40, 30), (25, 12), (7, 40), (90, 20)]  # (prompt length, new tokens)
    prompts = [torch.randint(3, sharp_hf.config.vocab_size, (n,), generator=g).tolist() for n, _ in specs]

    def request(i: int, cancel: threading.Event | None = None) -> Request:
        params = GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=specs[i][1])
        return Request(prompts[i], params, torch.Generator(), cancel, frozenset())

    def reference(i: int) -> list[int]:
        return _greedy_tokens(sharp_hf, prompts[i], specs[i][1])

    together = _scheduler_over_nan_cache(sharp_hf, slots=4, length=512)
    reqs = [request(0), request(1)]
    cancel = threading.Event()
    reqs.append(request(2, cancel))
    for r in reqs:
        together.enqueue(r)
    together.admit()
    for step in range(100):
        if step == 3:  # two requests join a running batch mid-way
            for i in (3, 4):
                reqs.append(request(i))
                together.enqueue(reqs[-1])
        if step == 5:
            cancel.set()
        if step == 12:  # request 1 has finished: its slot is reused
            reqs.append(request(5))
            together.enqueue(reqs[-1])
        together.admit()
        if not together.running:
            break
        together.step()
    assert not together.running
    results = [_drain(r) for r in reqs]
    assert results[2][1].reason == "cancelled"
    for i, (tokens, done) in enumerate(results):
        assert done.error is None, f"request {i}: {done.error}"
        expected = reference(i)
        if i == 2:
            assert tokens == expected[: len(tokens)]
            continue
        assert done.reason == "length"
        assert tokens == expected, f"request {i} differs from transformers' greedy tokens"


def test_held_prefixes_are_reused_and_answers_stay_exact(sharp_hf):
    """A conversation's next turn, and a prompt that shares another's beginning, prefill only what is new.

    Driven step by step over a NaN cache: the first answer's slot stays free while another request
    decodes (those steps must leave its cache alone), then the next turn continues from it, and a third
    prompt copies the shared beginning from a running slot. Every answer must equal transformers'
    greedy tokens, and the scheduler must have run only the tokens no slot held.
    """
    scheduler = _scheduler_over_nan_cache(sharp_hf, slots=3, length=256, copy=True)
    g = torch.Generator().manual_seed(11)

    def tokens(n: int) -> list[int]:
        return torch.randint(3, sharp_hf.config.vocab_size, (n,), generator=g).tolist()

    def submit(prompt: list[int], new: int) -> Request:
        return _by_hand(scheduler, [prompt], new)[0]

    def run(steps: int = 100) -> None:
        _run_by_hand(scheduler, steps)

    def answer(request: Request) -> list[int]:
        items, done = _drain(request)
        assert done.reason == "length", done
        return items

    def reference(prompt: list[int], new: int) -> list[int]:
        return _greedy_tokens(sharp_hf, prompt, new)

    base, tail_a, tail_b = tokens(20), tokens(6), tokens(4)
    if tail_b[0] == tail_a[0]:  # the two prompts must part right after the shared base
        tail_b[0] = tail_a[0] % (sharp_hf.config.vocab_size - 3) + 3
    first = base + tail_a
    a = submit(first, 8)
    run()
    answer_a = answer(a)
    other = submit(tokens(15), 12)
    run(4)  # the first answer's slot is free now, and must keep its keys and values through these steps
    turn_two = first + answer_a + tokens(5)
    c = submit(turn_two, 10)
    b = submit(base + tail_b, 10)  # its beginning is held by the running second turn
    run()
    assert answer(c) == reference(turn_two, 10)
    assert answer(b) == reference(base + tail_b, 10)
    assert answer(other) == reference(other.prompt, 12)
    assert answer_a == reference(first, 8)
    # The second turn reused the first prompt and the 7 answer tokens fed back (not the last, never fed);
    # the third prompt the 20 shared tokens.
    assert scheduler.reused == len(first) + 7 + 20
    assert scheduler.prefilled == len(first) + 15 + (len(turn_two) - len(first) - 7) + len(tail_b)


def test_the_next_turn_of_a_conversation_prefills_only_what_is_new(exact_engine):
    scheduler = exact_engine.scheduler
    params = GenerationParams.create(temperature=0, max_new_tokens=12)
    first = final_answer(exact_engine, params, QUESTIONS[4])
    history = QUESTIONS[4] + [{"role": "assistant", "content": first.text},
                              {"role": "user", "content": "And at sunset, why is it red?"}]
    reused = scheduler.reused
    warm = final_answer(exact_engine, params, history)
    assert scheduler.reused - reused >= first.prompt_tokens  # at least the whole first prompt
    scheduler.reuse_prefixes = False
    try:
        cold = final_answer(exact_engine, params, history)
    finally:
        scheduler.reuse_prefixes = True
    assert warm.text == cold.text


def test_staggered_and_cancelled_streams_over_uninitialized_cache_match_single_streams(
        tiny_model_dir, tmp_path, exact_engine):
    """Eight streams of different lengths at once, some cancelled, on a fresh engine whose cache is NaN."""
    engine = _engine(tiny_model_dir, tmp_path, "none")
    poison_cache(engine.decoder)
    long_history = [{"role": "user", "content": "Tell me everything about the sky. " * 12}]
    histories = [long_history] + QUESTIONS + [long_history]
    lengths = [120, 10, 25, 6, 40, 15, 30, 80]
    params = [GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=n) for n in lengths]
    expected = [final_answer(exact_engine, p, h).text for p, h in zip(params, histories)]
    results: list[Finished | BaseException | None] = [None] * len(histories)
    cancels = {3: threading.Event(), 6: threading.Event()}
    started = threading.Barrier(len(histories))

    def worker(i: int) -> None:
        try:
            started.wait(timeout=30)
            time.sleep(0.002 * i)  # staggered: later ones join a running batch
            results[i] = final_answer(engine, params[i], histories[i], cancel=cancels.get(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(histories))]
    for t in threads:
        t.start()
    time.sleep(0.01)
    for c in cancels.values():
        c.set()
    for t in threads:
        t.join(timeout=120)
    for i, result in enumerate(results):
        assert isinstance(result, Finished), f"stream {i}: {result!r}"
        if i in cancels and result.finish_reason == "cancelled":
            assert expected[i].startswith(result.text)
        else:
            assert result.text == expected[i], f"stream {i} differs from the same request alone"


def test_prompts_that_arrive_together_share_prefill_calls_and_answers_stay_exact(sharp_hf):
    """Five prompts at once, up to 40 tokens a call: the first two share a call; the third continues the
    first's beginning, so it waits for it and copies it; the fourth joins the third; the fifth is too
    long to join them. Every answer must equal transformers' greedy tokens."""
    calls: list[list[tuple[int, int, int]]] = []

    def together(prompts, prefill):
        calls.append([(tokens.shape[1], slot, start) for tokens, slot, start in prompts])
        return torch.cat([prefill(tokens, slot, start) for tokens, slot, start in prompts])

    scheduler = _scheduler_over_nan_cache(sharp_hf, slots=5, length=128, copy=True, together=together,
                                          together_rows=40)
    g = torch.Generator().manual_seed(12)

    def tokens(n: int) -> list[int]:
        return torch.randint(3, sharp_hf.config.vocab_size, (n,), generator=g).tolist()

    base = tokens(20)
    prompts = [base + tokens(5), tokens(12), base + tokens(4), tokens(10), tokens(30)]
    if prompts[2][20] == prompts[0][20]:  # the two must part right after the shared base
        prompts[2][20] = prompts[0][20] % (sharp_hf.config.vocab_size - 3) + 3
    requests = _by_hand(scheduler, prompts, 6)
    _run_by_hand(scheduler)
    rows = [[n for n, _, _ in call] for call in calls]
    assert rows == [[25, 12], [4, 10]] and scheduler.prefill_calls == 3  # the fifth alone, one prompt
    assert scheduler.reused == 20 and scheduler.prefilled == 25 + 12 + 4 + 10 + 30
    for prompt, request in zip(prompts, requests):
        items, done = _drain(request)
        assert done.reason == "length" and items == _greedy_tokens(sharp_hf, prompt, 6)


def test_a_failed_shared_prefill_fails_its_requests_and_frees_their_slots(sharp_hf):
    def together(prompts, prefill):
        raise RuntimeError("the kernels broke")

    scheduler = _scheduler_over_nan_cache(sharp_hf, slots=2, length=64, together=together, together_rows=64)
    broken = _by_hand(scheduler, [[5, 6, 7], [8, 9]], 4)
    for request in broken:
        items, done = _drain(request)
        assert items == [] and done.reason == "error" and "kernels broke" in str(done.error)
    assert scheduler.running == 0
    (alone,) = _by_hand(scheduler, [[5, 6, 7]], 4)  # one prompt alone takes the one-prompt call
    _run_by_hand(scheduler)
    items, done = _drain(alone)
    assert done.reason == "length" and items == _greedy_tokens(sharp_hf, [5, 6, 7], 4)

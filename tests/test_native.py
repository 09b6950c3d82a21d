"""ChatCore's C++ kernels (chatcore.engine.fast.native): formats, linears and the whole one-token step.

They run where the CPU has AVX-512 VNNI (these machines do); elsewhere the tests that need them skip,
and the engine keeps torch's kernels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from chatcore.core.errors import ParameterError
from chatcore.core.settings import Settings
from chatcore.engine.fast import native, quant
from chatcore.engine.fast.engine import (
    CALIBRATION_TEXT,
    load_fast,
    quantized_perplexity,
)
from chatcore.engine.fast.model import KVCache, from_hf_state
from chatcore.engine.fast.step import NATIVE_PREFILL_ROWS, attach_native
from chatcore.testing.tiny import poison_cache, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def kernels(kernel_builds: Path):
    if (why := native.unavailable_reason()) is not None:
        pytest.skip(f"native kernels unavailable: {why}")
    module = native.load(kernel_builds.parent)
    assert module is not None, native.unavailable_reason()
    return module


@pytest.fixture(scope="module", params=[16, 64], ids=["head_dim16", "head_dim64"])
def hf(request):
    """The tiny model (head_dim 16: the generic attention loop over a bfloat16 cache) and one with
    head_dim 64, whose attention takes the vectorised path over an int8 cache (64 and 128 do)."""
    if request.param == 16:
        return tiny_model(len(tiny_tokenizer()))
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer()), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=2048, tie_word_embeddings=True, eos_token_id=2, bos_token_id=0)
    return LlamaForCausalLM(config).eval()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("bits", [4, 8])
def test_packing_round_trips_weights_already_on_the_grid(bits):
    if bits == 4:  # codes 0..15 with a bf16 scale and minimum per group of 32, as GGUF Q4_1 weights are
        q = torch.randint(0, 16, (40, 64), generator=_gen(0)).float()
        q[:, ::32], q[:, 1::32] = 0, 15  # every group spans the full range
        scale = (torch.rand(40, 2, 1, generator=_gen(1)) / 10 + 0.01).bfloat16().float()
        low = (torch.rand(40, 2, 1, generator=_gen(2)) - 1).bfloat16().float()
        weight = (q.view(40, 2, 32) * scale + low).view(40, 64)
        restored = native.unpack_q4(*native.pack_q4(weight), 40)
    else:
        scales = torch.rand(40, generator=_gen(1)) / 100 + 1e-3
        weight = torch.randint(-127, 128, (40, 64), generator=_gen(0)).float() * scales[:, None]
        weight[:, 0] = 127 * scales  # the largest magnitude sets the scale
        restored = native.unpack_q8(*native.pack_q8(weight), 40)
    torch.testing.assert_close(restored, weight, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 3, 8, 11, 17])  # AMX tiles of 16 from 4 rows (q8) and 16 (q4)
@pytest.mark.parametrize("shape", [(48, 64), (40, 96), (8, 32)])  # 40 and 8 leave a partial block of 16
def test_quantized_linear_computes_its_dequantized_weight(kernels, bits, rows, shape):
    weight = torch.randn(*shape, generator=_gen(3)) * 0.05
    layer = quant.NativeLinear(weight, bits, kernels)
    x = torch.randn(rows, shape[1], generator=_gen(4))
    expected = x @ layer.dequantized().T
    got = layer(x)
    assert got.shape == (rows, shape[0])
    # Activations are quantized to int8 per group of 32: about 0.5% relative error.
    assert ((got - expected).norm() / expected.norm()).item() < 0.02
    assert ((layer.dequantized() - weight).norm() / weight.norm()).item() < (0.1 if bits == 4 else 0.01)


@pytest.mark.parametrize("bits", [4, 8])
def test_a_row_gets_the_same_bits_whatever_rows_share_its_product(kernels, bits):
    """Batch invariance: alone (vpdpbusd), beside 7 others, or in a prompt chunk of 16+ rows (AMX tiles,
    a partial last tile included), a row's product is the same to the bit."""
    layer = quant.NativeLinear(torch.randn(40, 96, generator=_gen(5)) * 0.05, bits, kernels)
    x = torch.randn(37, 96, generator=_gen(6))
    alone = torch.cat([layer.kernel.forward(x[i : i + 1]) for i in range(37)])
    for rows in (8, 16, 37):
        assert torch.equal(layer.kernel.forward(x[:rows]), alone[:rows]), rows


def test_a_bad_input_is_a_clear_error(kernels):
    layer = quant.NativeLinear(torch.randn(16, 64), 4, kernels)
    with pytest.raises(RuntimeError, match="input must be"):
        layer.kernel.forward(torch.randn(2, 32))
    with pytest.raises(RuntimeError, match="multiple of 32"):
        kernels.QLinear(4, torch.zeros(1, 256, dtype=torch.uint8), torch.zeros(32, dtype=torch.bfloat16), 16, 48)


def test_linears_called_from_many_threads_at_once_give_their_serial_results(kernels):
    """The worker pool under races: jobs from several threads (the GIL released) start and end while
    workers join late, and every job must still see exactly its own chunks done once."""
    import threading

    layers = [quant.NativeLinear(torch.randn(160, 96, generator=_gen(i)) * 0.05, bits, kernels)
              for i, bits in enumerate((4, 8, 4))]
    inputs = [torch.randn(rows, 96, generator=_gen(10 + rows)) for rows in (1, 5, 8)]
    expected = [[layer.kernel.forward(x) for x in inputs] for layer in layers]
    wrong: list[str] = []

    def hammer(index: int) -> None:
        for round_ in range(150):
            layer, x = index % 3, (index + round_) % 3
            if not torch.equal(layers[layer].kernel.forward(inputs[x]), expected[layer][x]):
                wrong.append(f"thread {index}, round {round_}")

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def _native_model(hf, kernels, mode: str = "int4", slots: int = 3, length: int = 64):
    model = quant.quantize(from_hf_state(hf.config, hf.state_dict(), torch.bfloat16), mode, kernels=kernels)
    model.setup_cache(slots, length, quantized=native.int8_cache_fits(model.cfg.head_dim))  # as the engine does
    for slot in range(slots):
        model.clear(slot, 0, length)
    assert attach_native(kernels, model)
    return model


def test_the_cpp_step_agrees_with_the_torch_path_over_the_same_weights(hf, kernels):
    model = _native_model(hf, kernels)
    ids = torch.randint(0, hf.config.vocab_size, (1, 24), generator=_gen(1))
    with torch.inference_mode():
        reference = model.score(ids)[0].float()  # torch ops in bfloat16 (whatever the step), the same quantized linears
        model.prefill(ids[:, :10], slot=2)
        model.prefill(ids[:, :3], slot=0)
        for p in range(10, 24):  # slot 2 decodes next to slot 0 (another sequence) and slot 1 (free)
            logits = model.decode(torch.tensor([ids[0, 3].item(), 0, ids[0, p].item()]), torch.tensor([3, 0, p]), 32)
            relative = (logits[2] - reference[p]).norm() / reference[p].norm()
            assert relative < 0.05
            assert logits[2].argmax() == reference[p].argmax()


def test_a_prompt_chunk_equals_the_same_tokens_one_at_a_time(hf, kernels):
    model = _native_model(hf, kernels)
    ids = torch.randint(0, hf.config.vocab_size, (12,), generator=_gen(2))
    step = model.step.kernel
    with torch.inference_mode():
        chunk = step.forward(ids, torch.full((12,), 1), torch.arange(12), torch.arange(12))  # slot 1, all logits
        singles = torch.cat([step.forward(ids[i : i + 1], torch.tensor([2]), torch.tensor([i]), torch.tensor([0]))
                             for i in range(12)])  # slot 2, one token a step
        mixed = step.forward(torch.tensor([ids[5].item(), ids[11].item()]), torch.tensor([1, 2]),
                             torch.tensor([5, 11]), torch.tensor([1, 0]))  # two slots in one step, rows reordered
    torch.testing.assert_close(chunk, singles, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed, torch.stack([singles[11], singles[5]]), atol=1e-4, rtol=1e-4)


def test_the_cpp_step_reads_only_the_positions_requests_wrote(hf, kernels):
    """The engine hands the C++ step a cache it never clears ahead (uninitialised memory): NaN in every
    unwritten position must change nothing."""
    model = _native_model(hf, kernels)  # every slot zeroed
    ids = torch.randint(0, hf.config.vocab_size, (40,), generator=_gen(8))

    def answer() -> torch.Tensor:
        with torch.inference_mode():
            logits = [model.prefill(ids[None, :20], slot=1)]
            for p in range(20, 40):  # with slot 0 decoding beside it, from a shorter prompt
                logits.append(model.decode(torch.stack([ids[p - 15], ids[p]]), torch.tensor([p - 15, p]), 64,
                                           torch.tensor([0, 1]))[1:])
        return torch.cat(logits)

    with torch.inference_mode():
        model.prefill(ids[None, :5], slot=0)
    clean = answer()
    poison_cache(model)
    with torch.inference_mode():
        model.prefill(ids[None, :5], slot=0)
    assert torch.equal(answer(), clean)


def test_a_long_context_cut_into_parts_attends_as_a_whole(hf, kernels):
    # One row over 300 positions is split into parts (flash-decoding) and merged; the 300 rows of a
    # prompt chunk are not. Both must give the last position the same logits.
    model = _native_model(hf, kernels, slots=2, length=320)
    ids = torch.randint(0, hf.config.vocab_size, (300,), generator=_gen(6))
    step = model.step.kernel
    with torch.inference_mode():
        whole = step.forward(ids, torch.zeros(300, dtype=torch.long), torch.arange(300), torch.tensor([299]))
        step.forward(ids[:299], torch.ones(299, dtype=torch.long), torch.arange(299), torch.tensor([298]))
        parted = step.forward(ids[299:], torch.tensor([1]), torch.tensor([299]), torch.tensor([0]))
    torch.testing.assert_close(parted, whole, atol=1e-4, rtol=1e-4)


def test_the_cpp_quantizer_writes_the_bytes_of_torchs_arithmetic(kernels):
    """The step's cache writes (quantize_heads) and KVCache's torch ops (prefill's): the same bytes, zero heads too."""
    heads = torch.randn(50, 64, generator=_gen(11)) * torch.logspace(-3, 2, 50)[:, None]
    heads[7] = 0
    torch_side = KVCache(1, 50, 1, 64, torch.float32, quantized=True)
    torch_side.write((0, slice(None), slice(None)), heads[:, None], -heads[:, None])
    keys, key_scales = kernels.quantize_heads(heads, 128)
    values, value_scales = kernels.quantize_heads(-heads, 0)
    cpp_side = {"k": keys, "v": values.view(torch.int8), "k_scale": key_scales, "v_scale": value_scales}
    for name, written in cpp_side.items():
        assert torch.equal(getattr(torch_side, name)[0, :, 0], written), name
    assert torch_side.k[0, 7].eq(128).all() and torch_side.k_scale[0, 7].eq(0).all()


def test_the_torch_prefill_and_the_cpp_step_read_each_others_cache(hf, kernels):
    """Prompts over NATIVE_PREFILL_ROWS tokens prefill through torch where bfloat16 GEMMs are fast (the
    C++ step elsewhere): what torch writes, the C++ step must read, and the reverse (int8 codes and
    scales at head_dim 64, bfloat16 at 16)."""
    model = _native_model(hf, kernels, slots=4, length=200)
    ids = torch.randint(0, hf.config.vocab_size, (151,), generator=_gen(9))
    other = torch.randint(0, hf.config.vocab_size, (150,), generator=_gen(10))
    step = model.step.kernel
    assert NATIVE_PREFILL_ROWS < 150 - 20
    with torch.inference_mode():
        model.torch_prefill(ids[None, :150], slot=0)  # torch writes all 150
        step.forward(ids[:20], torch.ones(20, dtype=torch.long), torch.arange(20), torch.tensor([19]))
        model.torch_prefill(ids[None, 20:150], slot=1, start=20)  # torch reads the C++ step's 20, writes 130
        step.forward(ids[:150], torch.full((150,), 2), torch.arange(150), torch.tensor([149]))  # C++ alone
        step.forward(other, torch.full((150,), 3), torch.arange(150), torch.tensor([149]))  # another context
        logits = model.decode(ids[150].repeat(4), torch.full((4,), 150), 160, torch.arange(4))
    assert model.layers[0].attn.cache.quantized == (model.cfg.head_dim == 64)
    relative = [((logits[row] - logits[2]).norm() / logits[2].norm()).item() for row in range(4)]
    # The same context by either path: ~1% apart (bfloat16 GEMMs against the 4-bit kernels); another
    # context, 30-70%: the logits do hang on what the cache holds.
    assert relative[0] < 0.03 and relative[1] < 0.03 and relative[3] > 0.15, relative
    assert logits[0].argmax() == logits[1].argmax() == logits[2].argmax()
    for block in model.layers:  # and the bytes themselves: torch reads what either path wrote alike
        torch_written, cpp_written = (torch.cat(block.attn.cache.read((slot, slice(None), slice(None, 150)), torch.float32))
                                      for slot in (0, 2))
        assert (torch_written - cpp_written).norm() / cpp_written.norm() < 0.05


def test_long_prompts_prefill_where_this_cpu_multiplies_them_fastest(hf, kernels):
    """Where bfloat16 GEMMs are fast (AMX, AVX-512 BF16) a prompt over NATIVE_PREFILL_ROWS tokens goes
    through torch's GEMMs over each layer's dense copy; elsewhere through the C++ step, the layers
    keeping no copy."""
    model = quant.quantize(from_hf_state(hf.config, hf.state_dict(), torch.bfloat16), "int4", dense_prefill=True,
                           kernels=kernels)
    model.setup_cache(2, 200, quantized=native.int8_cache_fits(model.cfg.head_dim))
    assert attach_native(kernels, model)
    layers = [linear for block in model.layers for linear in (block.attn.wqkv, block.attn.wo, block.mlp.w13, block.mlp.w2)]
    assert all((linear.dense is not None) == quant.NATIVE_DENSE_PREFILL for linear in layers)
    assert model.output.dense is None  # a prefill needs only the last position's logits
    ids = torch.randint(0, hf.config.vocab_size, (1, NATIVE_PREFILL_ROWS + 20), generator=_gen(13))
    s = ids.shape[1]
    with torch.inference_mode():
        served = model.prefill(ids, slot=0)
        by_torch = model.torch_prefill(ids, slot=1)
        by_step = model.step.kernel.forward(ids[0], torch.ones(s, dtype=torch.long), torch.arange(s),
                                            torch.tensor([s - 1]))
    assert torch.equal(served, by_torch if quant.NATIVE_DENSE_PREFILL else by_step)
    assert not torch.equal(by_torch, by_step)  # the two paths do differ, so the check above tells them apart


def test_prompts_prefilled_together_get_the_bits_of_prompts_prefilled_alone(hf, kernels):
    """One C++ call for three prompts (one continuing what its slot holds) against a call each."""
    model = _native_model(hf, kernels, slots=6, length=64)
    ids = torch.randint(0, hf.config.vocab_size, (30,), generator=_gen(12))
    prompts = [(ids[None, :10], 0, 0), (ids[None, 15:22], 1, 5), (ids[None, 22:25], 2, 0)]
    with torch.inference_mode():
        for slot in (1, 4):
            model.prefill(ids[None, 10:15], slot)  # what slot 1 (and its twin, 4) holds before
        together = model.prefill_together(prompts)
        alone = torch.cat([model.prefill(tokens, slot + 3, start) for tokens, slot, start in prompts])
        assert torch.equal(together, alone)
        later = model.decode(ids[25:28], torch.tensor([10, 12, 3]), 64, torch.tensor([0, 1, 2]))
        assert torch.equal(later, model.decode(ids[25:28], torch.tensor([10, 12, 3]), 64, torch.tensor([3, 4, 5])))


def test_a_long_row_decoded_beside_others_gets_the_bits_it_gets_alone(hf, kernels):
    """Attention cuts a long context into parts and merges them, which rounds differently from one pass.
    The cut must follow the row's own context, not how many rows share the step: an answer served beside
    other requests has to reproduce when it is re-run alone."""
    rows, start = 8, 800  # past the first cut (768 positions)
    model = _native_model(hf, kernels, slots=rows, length=start + 16)
    ids = torch.randint(0, hf.config.vocab_size, (start + 1,), generator=_gen(14))
    with torch.inference_mode():
        for slot in range(rows):
            model.prefill(ids[None, :start], slot)
        token, position = ids[start:], torch.tensor([start])
        alone = model.decode(token, position, start + 16, torch.tensor([0]))
        beside = model.decode(token.repeat(rows), position.repeat(rows), start + 16, torch.arange(rows))
    assert torch.equal(beside[0], alone[0]) and torch.equal(beside[rows - 1], alone[0])


def test_a_row_asked_for_twice_gets_its_logits_twice(hf, kernels):
    step = _native_model(hf, kernels).step.kernel
    with torch.inference_mode():
        logits = step.forward(torch.tensor([5]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0, 0, 0]))
    assert logits.shape == (3, hf.config.vocab_size)
    torch.testing.assert_close(logits[0], logits[2], rtol=0, atol=0)


def test_the_cpp_step_refuses_what_is_out_of_range(hf, kernels):
    step = _native_model(hf, kernels).step.kernel
    one = torch.tensor([0])
    with pytest.raises(RuntimeError, match="token id"):
        step.forward(torch.tensor([10**6]), one, one, one)
    with pytest.raises(RuntimeError, match="slot"):
        step.forward(one, torch.tensor([3]), one, one)
    with pytest.raises(RuntimeError, match="position"):
        step.forward(one, one, torch.tensor([64]), one)
    with pytest.raises(RuntimeError, match="logit row"):
        step.forward(one, one, one, torch.tensor([1]))


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_native_perplexity_through_the_step_within_two_percent(hf, kernels, mode):
    ids = torch.tensor([tiny_tokenizer().encode(CALIBRATION_TEXT[:300], add_special_tokens=False)])
    reference = quantized_perplexity(hf.config, hf.state_dict(), ids, "none")
    assert quantized_perplexity(hf.config, hf.state_dict(), ids, mode, kernels) <= reference * 1.02


def test_the_engine_decodes_with_the_native_step(tiny_model_dir, tmp_path, kernels):
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=str(tiny_model_dir), device="cpu",
                        dtype="auto", quant="int4")
    engine = load_fast(settings, tiny_model_dir, tiny_tokenizer(), torch.device("cpu"), torch.float32)
    assert engine.kernels == "native" and not engine.step.compiled
    assert list((tmp_path / "cache" / "fast").glob("packed-*-int4-native*.safetensors"))
    from chatcore.core.params import GenerationParams

    events = list(engine.stream([{"role": "user", "content": "hello"}],
                                GenerationParams.create(temperature=0, max_new_tokens=12)))
    assert events[-1].extra["kernels"] == "native" and events[-1].completion_tokens >= 1


@pytest.mark.parametrize("kv_cache", ["int8", "bfloat16"])
def test_the_kv_cache_setting_picks_the_engines_cache(hf, kernels, kv_cache, tmp_path):
    directory = tmp_path / "model"
    hf.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=str(directory), device="cpu",
                        quant="int4", kv_cache=kv_cache)
    engine = load_fast(settings, directory, tiny_tokenizer(), torch.device("cpu"), torch.float32)
    cache = engine.decoder.layers[0].attn.cache
    # int8 where the C++ step reads it (heads of 64 or 128; the other model's are 16)
    assert engine.kernels == "native" and cache.quantized == (kv_cache == "int8" and hf.config.head_dim == 64)
    assert cache.k.dtype == (torch.uint8 if cache.quantized else torch.bfloat16)
    from chatcore.core.params import GenerationParams

    final = list(engine.stream([{"role": "user", "content": "hello"}],
                               GenerationParams.create(temperature=0, max_new_tokens=6)))[-1]
    assert final.finish_reason in ("stop", "length") and final.completion_tokens >= 1
    assert final.extra["kv_cache"] == ("int8" if cache.quantized else "bfloat16")  # saved with the answer
    with pytest.raises(ParameterError, match="kv_cache must be one of int8, bfloat16"):
        load_fast(replace(settings, kv_cache="fp8"), directory, tiny_tokenizer(), torch.device("cpu"), torch.float32)


def test_argmax_picks_the_first_largest_value(kernels):
    logits = torch.randn(5, 1000, generator=_gen(5))
    logits[2, 17] = logits[2, 900] = 1e4  # a tie: the first index wins, as torch.argmax
    assert kernels.argmax(logits).tolist() == logits.argmax(dim=-1).tolist()
    assert kernels.argmax(logits).tolist()[2] == 17


def test_a_build_left_locked_by_a_killed_process_still_loads(kernels, kernel_builds):
    # torch's builder waits forever while its `lock` file exists; a process killed mid-build leaves one.
    directory = kernel_builds / native.build_key(native.cpu_flags())
    (directory / "lock").touch()
    script = ("import sys; from pathlib import Path; from chatcore.engine.fast import native; "
              "sys.exit(0 if native.load(Path(sys.argv[1])) is not None else 1)")
    done = subprocess.run([sys.executable, "-c", script, str(kernel_builds.parent)], timeout=300,
                          env={**os.environ, "CHATCORE_KERNELS": str(kernel_builds)})
    assert done.returncode == 0
    assert not (directory / "lock").exists()


def test_the_build_key_follows_the_instruction_set_only():
    flags = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "amx_int8", "hypervisor"}
    assert native.build_key(flags) == native.build_key(flags - {"hypervisor"} | {"tsc_known_freq"})
    assert native.build_key(flags) != native.build_key(flags - {"amx_int8"})


def test_without_the_kernels_the_engine_keeps_torchs(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATCORE_NATIVE", "0")
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=str(tiny_model_dir), device="cpu",
                        dtype="auto", quant="int4")
    engine = load_fast(settings, tiny_model_dir, tiny_tokenizer(), torch.device("cpu"), torch.float32)
    assert engine.kernels == "torch"
    assert native.unavailable_reason() == "turned off by CHATCORE_NATIVE=0"


@pytest.mark.parametrize(("flags", "runs", "width"), [
    ({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16"}, True, "avx512"),
    ({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}, True, "avx2"),  # no BF16
    ({"avx2", "fma", "avx512f"}, True, "avx2"),  # AVX-512 without VNNI
    ({"avx2", "fma"}, True, "avx2"),
    ({"avx", "sse4_2"}, False, None),
])
def test_the_kernels_run_on_avx512_vnni_or_avx2_with_fma(monkeypatch, flags, runs, width):
    monkeypatch.setattr(native, "cpu_flags", lambda: flags)
    monkeypatch.setattr(native, "build_failure", None)
    reason = native.unavailable_reason()
    assert (reason is None) == runs
    if runs:
        assert native.instruction_set() == width
    else:
        assert "AVX2 with FMA" in reason


def test_the_build_key_covers_the_header_the_source_includes(monkeypatch, tmp_path):
    flags = native.cpu_flags()
    before = native.build_key(flags)
    header = tmp_path / "avx512_on_avx2.h"
    header.write_bytes(native.HEADERS[0].read_bytes() + b"\n// changed\n")
    monkeypatch.setattr(native, "HEADERS", (header,))
    assert native.build_key(flags) != before

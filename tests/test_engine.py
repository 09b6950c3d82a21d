"""The local decoder on a tiny random model: determinism, sampling, bounds, stops and cancellation."""

from __future__ import annotations

import threading

import pytest
import torch

from chatcore.events import Finished, Started, TextDelta
from chatcore.params import GenerationParams

QUESTION = [{"role": "user", "content": "Name three benefits of exercise."}]


def run(engine, params: GenerationParams, history=QUESTION, **kwargs) -> tuple[list, Finished]:
    events = list(engine.stream(history, params, **kwargs))
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Finished)
    return events, events[-1]


def test_events_are_started_deltas_then_finished(tiny_engine):
    events, final = run(tiny_engine, GenerationParams.create(temperature=0, max_new_tokens=12))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert all(isinstance(e, TextDelta) for e in events[1:-1])
    assert "".join(d.text for d in deltas) == final.text
    assert final.prompt_tokens == events[0].prompt_tokens > 0
    assert final.ttft_ms is not None and final.total_ms >= final.ttft_ms


def test_temperature_zero_is_deterministic(tiny_engine):
    params = GenerationParams.create(temperature=0, max_new_tokens=20)
    assert run(tiny_engine, params)[1].text == run(tiny_engine, params)[1].text


def test_same_seed_repeats_and_other_seeds_differ(tiny_engine):
    sampled = [run(tiny_engine, GenerationParams.create(temperature=1.5, seed=s, max_new_tokens=24))[1].text
               for s in (7, 7, 8)]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


def test_seed_is_drawn_and_reported_when_not_given(tiny_engine):
    _, a = run(tiny_engine, GenerationParams.create(temperature=1.5, max_new_tokens=16))
    _, b = run(tiny_engine, GenerationParams.create(temperature=1.5, seed=a.seed, max_new_tokens=16))
    assert a.seed is not None and a.text == b.text


def test_top_k_one_equals_greedy(tiny_engine):
    greedy = run(tiny_engine, GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=24))[1]
    top1 = run(tiny_engine, GenerationParams.create(temperature=1.3, top_k=1, repetition_penalty=1,
                                                    seed=3, max_new_tokens=24))[1]
    assert top1.text == greedy.text


def test_greedy_matches_transformers_generate(tiny_engine):
    for penalty in (1.0, 1.3):
        ours = run(tiny_engine, GenerationParams.create(temperature=0, repetition_penalty=penalty,
                                                        max_new_tokens=32))
        prompt = torch.tensor([tiny_engine.tokenizer.apply_chat_template(
            QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]])
        reference = tiny_engine.model.generate(prompt, max_new_tokens=32, do_sample=False,
                                               repetition_penalty=penalty, eos_token_id=2, pad_token_id=0)
        expected = tiny_engine.tokenizer.decode(reference[0, prompt.shape[1]:], skip_special_tokens=True)
        assert ours[1].text == expected


def test_max_new_tokens_bounds_the_answer(tiny_engine):
    _, final = run(tiny_engine, GenerationParams.create(temperature=0, max_new_tokens=5))
    assert final.completion_tokens <= 5
    if final.completion_tokens == 5:
        assert final.finish_reason == "length"


def test_stop_string_cuts_the_answer(tiny_engine):
    full = run(tiny_engine, GenerationParams.create(temperature=0, max_new_tokens=30))[1].text
    stop = full[10:13]
    events, final = run(tiny_engine, GenerationParams.create(temperature=0, max_new_tokens=30, stop=[stop]))
    assert final.finish_reason == "stop"
    assert final.text == full[: full.index(stop)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == final.text


def test_cancellation_stops_the_computation(tiny_engine):
    cancel = threading.Event()
    produced = 0
    for event in tiny_engine.stream(QUESTION, GenerationParams.create(temperature=0, max_new_tokens=200),
                                    cancel=cancel):
        if isinstance(event, TextDelta):
            produced += 1
            cancel.set()
        final = event
    assert final.finish_reason == "cancelled"
    assert final.completion_tokens <= 2  # the step in flight may finish, no more


def test_concurrent_streams_match_sequential(tiny_engine):
    params = GenerationParams.create(temperature=0, max_new_tokens=24)
    questions = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(4)]
    expected = [run(tiny_engine, params, q)[1].text for q in questions]
    results: list[str | None] = [None] * 4

    def worker(i: int) -> None:
        results[i] = run(tiny_engine, params, questions[i])[1].text

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == expected


def test_context_window_errors_name_max_new_tokens(tiny_engine):
    from chatcore.errors import ParameterError

    with pytest.raises(ParameterError, match="max_new_tokens"):
        list(tiny_engine.stream(QUESTION, GenerationParams.create(max_new_tokens=tiny_engine.context_window)))

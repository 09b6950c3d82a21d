"""The local decoder on a tiny random model: determinism, sampling, bounds, stops and cancellation."""

from __future__ import annotations

import threading

import pytest
import torch

from chatcore.core.events import Finished, Started, TextDelta
from chatcore.core.params import GenerationParams

QUESTION = [{"role": "user", "content": "Name three benefits of exercise."}]


def run(engine, params: GenerationParams, history=QUESTION, **kwargs) -> tuple[list, Finished]:
    events = list(engine.stream(history, params, **kwargs))
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], Finished)
    return events, events[-1]


def test_events_are_started_deltas_then_finished(any_engine):
    events, final = run(any_engine, GenerationParams.create(temperature=0, max_new_tokens=12))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert all(isinstance(e, TextDelta) for e in events[1:-1])
    assert "".join(d.text for d in deltas) == final.text
    assert final.prompt_tokens == events[0].prompt_tokens > 0
    assert final.ttft_ms is not None and final.total_ms >= final.ttft_ms


def test_temperature_zero_is_deterministic(any_engine):
    params = GenerationParams.create(temperature=0, max_new_tokens=20)
    assert run(any_engine, params)[1].text == run(any_engine, params)[1].text


def test_same_seed_repeats_and_other_seeds_differ(any_engine):
    sampled = [run(any_engine, GenerationParams.create(temperature=1.5, seed=s, max_new_tokens=24))[1].text
               for s in (7, 7, 8)]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


def test_seed_is_drawn_and_reported_when_not_given(any_engine):
    _, a = run(any_engine, GenerationParams.create(temperature=1.5, max_new_tokens=16))
    _, b = run(any_engine, GenerationParams.create(temperature=1.5, seed=a.seed, max_new_tokens=16))
    assert a.seed is not None and a.text == b.text


def test_top_k_one_equals_greedy(any_engine):
    greedy = run(any_engine, GenerationParams.create(temperature=0, repetition_penalty=1, max_new_tokens=24))[1]
    top1 = run(any_engine, GenerationParams.create(temperature=1.3, top_k=1, repetition_penalty=1,
                                                    seed=3, max_new_tokens=24))[1]
    assert top1.text == greedy.text


def test_greedy_matches_transformers_generate(any_engine):
    for penalty in (1.0, 1.3):
        ours = run(any_engine, GenerationParams.create(temperature=0, repetition_penalty=penalty,
                                                        max_new_tokens=32))
        prompt = torch.tensor([any_engine.tokenizer.apply_chat_template(
            QUESTION, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]])
        reference = any_engine.model.generate(prompt, max_new_tokens=32, do_sample=False,
                                               repetition_penalty=penalty, eos_token_id=2, pad_token_id=0)
        expected = any_engine.tokenizer.decode(reference[0, prompt.shape[1]:], skip_special_tokens=True)
        assert ours[1].text == expected


def test_max_new_tokens_bounds_the_answer(any_engine):
    _, final = run(any_engine, GenerationParams.create(temperature=0, max_new_tokens=5))
    assert final.completion_tokens <= 5
    if final.completion_tokens == 5:
        assert final.finish_reason == "length"


def test_stop_string_cuts_the_answer(any_engine):
    full = run(any_engine, GenerationParams.create(temperature=0, max_new_tokens=30))[1].text
    stop = full[10:13]
    events, final = run(any_engine, GenerationParams.create(temperature=0, max_new_tokens=30, stop=[stop]))
    assert final.finish_reason == "stop"
    assert final.text == full[: full.index(stop)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == final.text


def test_cancellation_stops_the_computation(any_engine):
    cancel = threading.Event()
    produced = 0
    for event in any_engine.stream(QUESTION, GenerationParams.create(temperature=0, max_new_tokens=200),
                                    cancel=cancel):
        if isinstance(event, TextDelta):
            produced += 1
            cancel.set()
        final = event
    assert final.finish_reason == "cancelled"
    assert final.completion_tokens <= 2  # the step in flight may finish, no more


def test_concurrent_streams_match_sequential(any_engine):
    params = GenerationParams.create(temperature=0, max_new_tokens=24)
    questions = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(4)]
    expected = [run(any_engine, params, q)[1].text for q in questions]
    results: list[str | None] = [None] * 4

    def worker(i: int) -> None:
        results[i] = run(any_engine, params, questions[i])[1].text

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == expected


def test_context_window_errors_name_max_new_tokens(any_engine):
    from chatcore.core.errors import ParameterError

    with pytest.raises(ParameterError, match="max_new_tokens"):
        list(any_engine.stream(QUESTION, GenerationParams.create(max_new_tokens=any_engine.context_window)))


def test_engine_is_usable_from_another_thread_between_tokens(any_engine):
    """A consumer may resume the stream on another thread (Gradio does): no thread-local state may leak."""
    stream = any_engine.stream(QUESTION, GenerationParams.create(temperature=0, max_new_tokens=12))
    events = [next(stream), next(stream)]
    box: list = []
    worker = threading.Thread(target=lambda: box.extend(stream))
    worker.start()
    worker.join(timeout=60)
    final = box[-1]
    assert isinstance(final, Finished) and final.completion_tokens >= 1
    assert "".join(e.text for e in events[1:] + box if isinstance(e, TextDelta)) == final.text

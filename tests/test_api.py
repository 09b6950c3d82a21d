"""The OpenAI-compatible API, through the official ``openai`` client against a real uvicorn server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

from chatcore.api.routes import create_api_app, mount_api, v1_mount
from chatcore.core.settings import Settings
from chatcore.services.accounts import Accounts
from chatcore.services.models import ModelManager
from chatcore.testing.servers import manager_for, serve
from storage import Store

KEY = "test-key-K"
HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("api") / "chatcore.db")


@pytest.fixture(scope="module")
def server(tiny_engine, store: Store):
    with serve(create_api_app(manager=manager_for(tiny_engine), store=store, api_key=KEY)) as url:
        yield url


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def model(tiny_engine) -> str:
    return tiny_engine.model_name


def test_models_are_listed_with_their_window(client: openai.OpenAI, tiny_engine) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [tiny_engine.model_name]
    assert models[0].max_model_len == tiny_engine.context_window
    assert client.models.retrieve(tiny_engine.model_name).id == tiny_engine.model_name


def test_greedy_completion_has_usage_and_is_saved_as_api(client: openai.OpenAI, model: str, store: Store) -> None:
    response = client.chat.completions.create(model=model, messages=HI, temperature=0, max_tokens=6)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == model
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 6
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + 6
    conversation_id = response.model_extra["chatcore"]["conversation_id"]
    saved = store.get_conversation("local", conversation_id)
    assert saved["source"] == "api"
    assert [(m["role"], m["content"]) for m in saved["messages"]] == [
        ("user", "Hello there"), ("assistant", choice.message.content)
    ]
    assert saved["messages"][1]["finish_reason"] == "length" and saved["messages"][1]["complete"]


def test_store_false_saves_nothing(client: openai.OpenAI, model: str, store: Store) -> None:
    before = store.count_conversations("local")
    response = client.chat.completions.create(model=model, messages=HI, temperature=0, max_tokens=3, store=False)
    assert response.model_extra["chatcore"]["conversation_id"] is None
    assert store.count_conversations("local") == before


def test_streaming_gives_the_same_text_in_several_chunks_and_usage_last(client: openai.OpenAI, model: str) -> None:
    whole = client.chat.completions.create(model=model, messages=HI, temperature=0, max_tokens=8, store=False)
    chunks = list(client.chat.completions.create(
        model=model, messages=HI, temperature=0, max_tokens=8, stream=True,
        stream_options={"include_usage": True}, store=False,
    ))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert len({c.id for c in chunks}) == 1


def test_usage_reports_the_prompt_tokens_served_from_the_cache(client: openai.OpenAI, model: str) -> None:
    """A conversation's next turn resends its history: those tokens come from the KV cache, and usage
    says how many, under OpenAI's own name for them."""
    turn = [{"role": "system", "content": "You answer questions about the weather, briefly."},
            {"role": "user", "content": "Why is the sky blue at noon?"}]
    first = client.chat.completions.create(model=model, messages=turn, temperature=0, max_tokens=5, store=False)
    turn += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And red at sunset?"}]
    second = client.chat.completions.create(model=model, messages=turn, temperature=0, max_tokens=5, store=False)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens


def test_eight_clients_at_once_all_stream_before_any_finishes(client: openai.OpenAI, model: str) -> None:
    """As many answers run as the decoder has slots (8): none of the eight waits for another to end."""
    first: dict[int, float] = {}
    ended: dict[int, float] = {}
    reasons: list[str] = []

    def ask(i: int) -> None:
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"stream {i}"}],
                                                max_tokens=600, temperature=0, stream=True, store=False)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first.setdefault(i, time.monotonic())
            if chunk.choices and chunk.choices[0].finish_reason:
                reasons.append(chunk.choices[0].finish_reason)
        ended[i] = time.monotonic()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reasons == ["length"] * 8, reasons  # greedy, the tiny model runs to max_tokens: only slots end it
    assert max(first.values()) < min(ended.values())


def test_streaming_without_include_usage_sends_no_usage(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=HI, max_tokens=3, stream=True, store=False))
    assert all(c.usage is None and c.choices for c in chunks)


def test_the_raw_stream_is_server_sent_events_ending_in_done(server: str, model: str) -> None:
    body = {"model": model, "messages": HI, "max_tokens": 3, "stream": True, "store": False}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    json.loads(lines[-2].removeprefix("data: "))


def test_seed_temperature_top_p_and_stop_are_honoured(client: openai.OpenAI, model: str) -> None:
    def ask(**kwargs):
        return client.chat.completions.create(model=model, messages=HI, max_tokens=12, store=False, **kwargs)

    first = ask(temperature=1.0, top_p=0.9, seed=1234)
    again = ask(temperature=1.0, top_p=0.9, seed=1234)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.model_extra["chatcore"]["seed"] == 1234
    text = first.choices[0].message.content
    stop = text[3:5]
    stopped = ask(temperature=1.0, top_p=0.9, seed=1234, stop=[stop])
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    limited = client.chat.completions.create(model=model, messages=HI, max_completion_tokens=2, store=False)
    assert limited.usage.completion_tokens == 2


def test_system_and_earlier_turns_reach_the_model(client: openai.OpenAI, model: str, store: Store) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "One"},
                {"role": "assistant", "content": "Two"}, {"role": "user", "content": [{"type": "text", "text": "Three"}]}]
    short = client.chat.completions.create(model=model, messages=messages[-1:], max_tokens=1, store=False)
    response = client.chat.completions.create(model=model, messages=messages, max_tokens=1)
    assert response.usage.prompt_tokens > short.usage.prompt_tokens
    saved = store.get_conversation("local", response.model_extra["chatcore"]["conversation_id"])
    assert saved["system_prompt"] == "Be brief."


@pytest.mark.parametrize(("fields", "param"), [
    ({"temperature": 7}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 10**9}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"seed": -1}, "seed"),
    ({"stop": [""]}, "stop"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
    ({"model": ""}, "model"),
])
def test_bad_parameters_get_400_with_an_openai_error_body(server: str, model: str, fields: dict, param: str) -> None:
    body = {"model": model, "messages": HI, "store": False, **fields}
    response = httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_temperature_7_is_refused_through_the_client(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=HI, temperature=7)
    assert caught.value.status_code == 400
    assert "temperature" in caught.value.message and caught.value.body["param"] == "temperature"


def test_a_prompt_too_long_for_the_window_is_context_length_exceeded(client: openai.OpenAI, model: str,
                                                                     tiny_engine) -> None:
    long = "word " * tiny_engine.context_window
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": long}], max_tokens=4,
                                       store=False)
    assert caught.value.body["code"] == "context_length_exceeded"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=HI)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_a_wrong_or_missing_key_is_401(server: str, model: str) -> None:
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model=model, messages=HI)
    assert caught.value.body["code"] == "invalid_api_key"
    response = httpx.post(f"{server}/v1/chat/completions", json={"model": model, "messages": HI})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_invalid_json_is_400(server: str) -> None:
    response = httpx.post(f"{server}/v1/chat/completions", content=b"{nope",
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_a_client_that_disconnects_stops_the_decoder(server: str, model: str, store: Store) -> None:
    # Greedy: the tiny model then runs to max_tokens, so only the disconnect can end it early.
    body = {"model": model, "messages": [{"role": "user", "content": "disconnect me"}], "max_tokens": 1500,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        lines = response.iter_lines()
        first = json.loads(next(lines).removeprefix("data: "))
        for _ in range(3):
            next(lines)
    conversation_id = first["chatcore"]["conversation_id"]
    deadline = time.monotonic() + 30
    while True:
        answer = store.get_conversation("local", conversation_id)["messages"][-1]
        if answer["role"] == "assistant" and answer["finish_reason"] is not None:
            break
        assert time.monotonic() < deadline, "the decoder did not stop"
        time.sleep(0.1)
    assert answer["finish_reason"] == "cancelled" and not answer["complete"]
    assert 0 < answer["completion_tokens"] < 1500


def test_per_user_keys_save_under_that_user(server: str, store: Store, model: str) -> None:
    accounts = Accounts(store)
    accounts.add("ada", "ada-password")
    accounts.add("bob", "bob-password")
    ada_key, bob_key = accounts.issue_key("ada"), accounts.issue_key("bob")
    ada = openai.OpenAI(base_url=f"{server}/v1", api_key=ada_key, max_retries=0)
    response = ada.chat.completions.create(model=model, messages=[{"role": "user", "content": "ada's secret"}],
                                           max_tokens=2)
    conversation_id = response.model_extra["chatcore"]["conversation_id"]
    assert store.get_conversation("ada", conversation_id)["messages"][0]["content"] == "ada's secret"
    for other in ("bob", "local"):
        assert conversation_id not in {c["id"] for c in store.list_conversations(other)}
    assert [c.id for c in openai.OpenAI(base_url=f"{server}/v1", api_key=bob_key).models.list()] == [model]
    accounts.revoke_keys("ada")
    with pytest.raises(openai.AuthenticationError):
        ada.models.list()


def test_open_when_no_key_and_no_accounts_then_closed_once_an_account_exists(tiny_engine, tmp_path: Path) -> None:
    store = Store(tmp_path / "open.db")
    with serve(create_api_app(manager=manager_for(tiny_engine), store=store)) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 200  # single user on 127.0.0.1
        Accounts(store).add("ada", "ada-password")
        response = httpx.get(f"{url}/v1/models")
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_a_model_still_loading_is_503(tmp_path: Path) -> None:
    manager = ModelManager(Settings(), loader=lambda settings, progress: time.sleep(30))
    manager.start()
    with serve(create_api_app(manager=manager, store=None)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="any", messages=HI)
    assert caught.value.status_code == 503 and "loading" in caught.value.message


def test_mount_api_goes_ahead_of_a_catch_all_mount(tiny_engine, tmp_path: Path) -> None:
    app = FastAPI()
    app.router.routes.append(Mount("/", app=PlainTextResponse("the web app")))
    mount_api(app, manager=manager_for(tiny_engine), store=None, api_key=KEY)
    with serve(app) as url:
        assert httpx.get(f"{url}/").text == "the web app"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list()] == [tiny_engine.model_name]


def test_mounts_on_a_gradio_app_on_the_same_port(tiny_engine) -> None:
    """What app.py does: Gradio builds its app on the /v1 route, then serves both on one port."""
    import socket

    gr = pytest.importorskip("gradio")
    with gr.Blocks(analytics_enabled=False) as demo:
        gr.Markdown("ChatCore test page")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = v1_mount(manager=manager_for(tiny_engine), store=None, api_key=KEY)
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        app_kwargs={"routes": [api]})
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/").status_code == 200
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        chunks = list(client.chat.completions.create(model=tiny_engine.model_name, messages=HI, max_tokens=4,
                                                     temperature=0, stream=True))  # greedy: no early end
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        demo.close()


def test_serve_api_runs_a_whole_server_in_its_own_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "CHATCORE_API_KEY": KEY, "CHATCORE_MODEL": str(tiny_model_dir), "CHATCORE_DEVICE": "cpu",
           "CHATCORE_DTYPE": "float32", "CHATCORE_CACHE": str(tmp_path / "cache")}
    code = f"from chatcore.api.routes import serve_api; from chatcore.core.settings import Settings; serve_api(Settings(), port={port})"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).parent.parent)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        deadline = time.monotonic() + 120
        while True:
            try:
                models = client.models.list().data
                break
            except (openai.APIConnectionError, openai.InternalServerError):  # starting, or 503 while loading
                assert time.monotonic() < deadline and process.poll() is None, "the server did not come up"
                time.sleep(0.2)
        reply = client.chat.completions.create(model=models[0].id, messages=HI, temperature=0, max_tokens=3)
        assert reply.usage.completion_tokens == 3
        conversation = Store(Settings().db_path).list_conversations("local")[0]  # CHATCORE_HOME is per test
        assert conversation["source"] == "api"
    finally:
        process.terminate()
        process.wait(30)

"""Remote backends: a second ChatCore answering through the first, and every way a network can fail."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from chatcore.api.routes import create_api_app
from chatcore.core.errors import ModelError
from chatcore.core.events import Finished, Started, TextDelta
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.engine import remote
from chatcore.engine.loader import load_backend
from chatcore.engine.remote import RemoteBackend
from chatcore.services.chat import ChatService
from chatcore.services.models import ModelManager
from chatcore.testing.servers import manager_for, serve
from storage import Store

KEY = "K"
HI = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def first_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("first") / "chatcore.db")


@pytest.fixture(scope="module")
def first(tiny_engine, first_store: Store):
    """ChatCore serving the tiny model, with an API key."""
    with serve(create_api_app(manager=manager_for(tiny_engine), store=first_store, api_key=KEY)) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def second_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("second") / "chatcore.db")


@pytest.fixture(scope="module")
def second(first: str, second_store: Store, tmp_path_factory: pytest.TempPathFactory):
    """A second ChatCore whose backend is the first: --backend openai --base-url FIRST --backend-api-key K."""
    settings = Settings(home=tmp_path_factory.mktemp("second-home"), backend="openai", base_url=first,
                        backend_api_key=KEY)
    manager = ModelManager(settings, loader=load_backend)
    manager.start()
    manager.wait()
    assert manager.ready, manager.status
    with serve(create_api_app(manager=manager, store=second_store, api_key=KEY)) as url:
        yield f"{url}/v1"


def _client(base_url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def _events(backend, params: GenerationParams, **kwargs):
    events = list(backend.stream(HI, params, **kwargs))
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    return events, events[-1]


def test_second_chatcore_lists_the_first_ones_models(first: str, second: str, tiny_engine) -> None:
    models = _client(second).models.list().data
    assert [m.id for m in models] == [tiny_engine.model_name]
    assert models[0].max_model_len == tiny_engine.context_window


def test_second_chatcore_gives_the_same_greedy_and_seeded_answers(first: str, second: str, tiny_engine,
                                                                  second_store: Store) -> None:
    model = tiny_engine.model_name
    for sampling in ({"temperature": 0}, {"temperature": 1.0, "top_p": 0.9, "seed": 99, "stop": ["zz"]}):
        direct = _client(first).chat.completions.create(model=model, messages=HI, max_tokens=10, store=False, **sampling)
        relayed = _client(second).chat.completions.create(model=model, messages=HI, max_tokens=10, **sampling)
        assert relayed.choices[0].message.content == direct.choices[0].message.content
        counts = ("prompt_tokens", "completion_tokens", "total_tokens")
        assert [getattr(relayed.usage, k) for k in counts] == [getattr(direct.usage, k) for k in counts]
        # The first server's figure, relayed: it had just answered the same prompt (all but its last token).
        assert relayed.usage.prompt_tokens_details.cached_tokens == relayed.usage.prompt_tokens - 1
        assert relayed.choices[0].finish_reason == direct.choices[0].finish_reason
    saved = second_store.get_conversation("local", relayed.model_extra["chatcore"]["conversation_id"])
    answer = saved["messages"][-1]
    assert saved["source"] == "api" and answer["model"] == model
    assert answer["params"]["backend"] == first and answer["params"]["seed"] == 99
    streamed = _client(second).chat.completions.create(model=model, messages=HI, max_tokens=10, stream=True,
                                                       store=False, **sampling)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == direct.choices[0].message.content


def test_every_parameter_is_passed_through(first: str, tiny_engine) -> None:
    params = GenerationParams.create(temperature=0.8, top_p=0.7, top_k=5, repetition_penalty=1.3, seed=5,
                                     max_new_tokens=7, stop=["q"])
    local = list(tiny_engine.stream(HI, params))[-1]
    _, final = _events(RemoteBackend(first, tiny_engine.model_name, api_key=KEY), params)
    assert (final.text, final.finish_reason, final.completion_tokens, final.prompt_tokens, final.seed) == (
        local.text, local.finish_reason, local.completion_tokens, local.prompt_tokens, 5)
    request = RemoteBackend(first, "m", api_key=KEY).request(HI, params, "sys", 5)
    assert request["messages"][0] == {"role": "system", "content": "sys"}
    assert (request["temperature"], request["top_p"], request["max_tokens"], request["seed"], request["stop"]) == (
        0.8, 0.7, 7, 5, ["q"])
    assert request["extra_body"] == {"top_k": 5, "repetition_penalty": 1.3}


def test_cancel_closes_the_stream_and_stops_the_server(first: str, first_store: Store, tiny_engine) -> None:
    backend = RemoteBackend(first, tiny_engine.model_name, api_key=KEY)
    cancel = threading.Event()
    events = []
    # Greedy: the tiny model then runs to max_new_tokens, so only the cancel can end it early. Sampled, it may
    # reach its end-of-sequence token before the client has read four events.
    params = GenerationParams.create(temperature=0, max_new_tokens=1500)
    before = first_store.count_conversations("local")
    for event in backend.stream([{"role": "user", "content": "stop me"}], params, cancel=cancel):
        events.append(event)
        if isinstance(event, TextDelta) and len(events) == 4:
            cancel.set()
    final = events[-1]
    assert final.finish_reason == "cancelled" and final.text == "".join(e.text for e in events[1:-1])
    # The first ChatCore saw the connection close and stopped its decoder, keeping the partial answer.
    assert first_store.count_conversations("local") == before + 1
    conversation = first_store.list_conversations("local")[0]
    for _ in range(300):
        answer = first_store.get_conversation("local", conversation["id"])["messages"][-1]
        if answer["finish_reason"]:
            break
        threading.Event().wait(0.1)
    assert answer["finish_reason"] == "cancelled" and answer["completion_tokens"] < 1500


def test_connect_picks_the_named_model_or_the_first_for_the_default(first: str, tiny_engine) -> None:
    default = RemoteBackend.connect(Settings(backend="openai", base_url=first, backend_api_key=KEY))
    named = RemoteBackend.connect(Settings(backend="openai", base_url=first, backend_api_key=KEY,
                                           model=tiny_engine.model_name))
    assert default.model_name == named.model_name == tiny_engine.model_name
    assert default.context_window == tiny_engine.context_window
    with pytest.raises(ModelError, match="does not serve 'llama-70b'; it serves: "):
        RemoteBackend.connect(Settings(backend="openai", base_url=first, backend_api_key=KEY, model="llama-70b"))
    with pytest.raises(ModelError, match="refused the API key"):
        RemoteBackend.connect(Settings(backend="openai", base_url=first, backend_api_key="wrong"))
    with pytest.raises(ModelError, match="needs a server"):
        load_backend(Settings(backend="openai"))
    with pytest.raises(ModelError, match="unknown backend"):
        load_backend(Settings(backend="carrier-pigeon"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server_is_a_clear_message(tiny_engine) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(ModelError, match=f"could not reach the backend at {url}"):
        RemoteBackend.connect(Settings(backend="openai", base_url=url))
    _, final = _events(RemoteBackend(url, "m"), GenerationParams())
    assert final.finish_reason == "error" and final.error.startswith(f"could not reach the backend at {url}")


def test_a_refused_request_says_why(first: str, tiny_engine) -> None:
    # The server's window is smaller than the default assumed here: the server refuses, and says why.
    backend = RemoteBackend(first, tiny_engine.model_name, api_key=KEY, context_window=100_000)
    _, final = _events(backend, GenerationParams.create(max_new_tokens=50_000))
    assert final.finish_reason == "error"
    assert "refused the request (HTTP 400): max_tokens must be in the range" in final.error


def _flaky_server(pieces: list[str], then: str):
    """An OpenAI-style server that streams ``pieces`` and then hangs up or goes silent."""

    async def completions(request):
        async def body():
            for piece in pieces:
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "flaky",
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            if then == "hang up":
                raise ConnectionResetError("simulated crash")
            await asyncio.sleep(30)

        return StreamingResponse(body(), media_type="text/event-stream")

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "flaky", "object": "model", "created": 0,
                                                         "owned_by": "test"}]})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/v1/models", models)])


@pytest.mark.parametrize(("then", "message"), [
    ("hang up", "the backend at {url}"),
    ("go silent", "did not answer in time"),
])
def test_a_failure_mid_answer_keeps_the_partial_answer(then: str, message: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "READ_TIMEOUT_S", 1.0)
    with serve(_flaky_server(["Partial ", "answer"], then)) as base:
        url = f"{base}/v1"
        backend = RemoteBackend.connect(Settings(backend="openai", base_url=url))
        store = Store(tmp_path / "chatcore.db")
        events = list(ChatService(lambda: backend, store).ask("Hello", GenerationParams()))
        final = events[-1]
        assert final.finish_reason == "error" and final.text == "Partial answer"
        assert message.format(url=url) in final.error
        saved = store.get_conversation("local", events[0].conversation_id)["messages"][-1]
        assert (saved["content"], saved["finish_reason"], saved["complete"]) == ("Partial answer", "error", False)
        # Through a ChatCore API in front: non-streaming is a 502 with the reason, streaming an error event.
        with serve(create_api_app(manager=manager_for(backend), store=None)) as front:
            client = _client(f"{front}/v1", "x")
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="flaky", messages=HI)
            assert caught.value.status_code == 502 and message.format(url=url) in caught.value.message
            seen = []
            with pytest.raises(openai.APIError, match="Partial|backend"):
                for chunk in client.chat.completions.create(model="flaky", messages=HI, stream=True):
                    seen.append(chunk.choices[0].delta.content or "")
            assert "".join(seen) == "Partial answer"


def test_cli_ask_through_a_remote_backend(first: str, tiny_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from chatcore.cli import main

    direct = _client(first).chat.completions.create(model=tiny_engine.model_name, messages=HI, temperature=0,
                                                    max_tokens=6, store=False)
    monkeypatch.setenv("CHATCORE_BACKEND_API_KEY", KEY)
    result = CliRunner().invoke(main, ["ask", "Hello there", "--backend", "openai", "--base-url", first,
                                       "-t", "0", "--max-tokens", "6", "--json", "--no-save"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["text"] == direct.choices[0].message.content
    assert answer["finish_reason"] == "length" and answer["extra"]["backend"] == first
    unreachable = CliRunner().invoke(main, ["ask", "hi", "--backend", "openai", "--base-url",
                                            f"http://127.0.0.1:{_closed_port()}/v1", "--no-save"])
    assert unreachable.exit_code == 1 and "could not reach the backend" in unreachable.output

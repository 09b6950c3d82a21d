"""What ``python app.py`` and ``chatcore serve`` start: the page and the OpenAI API on one port, with the
official ``openai`` client, a second ChatCore answering through the first, and logins once accounts exist.

``server.start`` is ``server.serve`` without blocking: the same settings, loader, accounts check and mount.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from chatcore.core.settings import Settings
from chatcore.services.accounts import Accounts
from chatcore.web import app, server
from storage import Store

KEY = "serving-key-K"
HI = [{"role": "user", "content": "Hello there"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def _start(settings: Settings):
    """Start a whole ChatCore; returns (demo, url) once its model answers on /v1."""
    port = _free_port()
    demo = server.start(settings, port=port, quiet=True)
    return demo, _ready(port, settings.api_key or "none")


def _ready(port: int, key: str) -> str:
    """The server's URL, once its model answers on /v1."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _client(url, key).models.list()
            return url
        except openai.InternalServerError:  # 503 while the model loads
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def first(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``python app.py --api-key K --model TINY``."""
    base = tmp_path_factory.mktemp("first")
    settings = Settings(home=base / "home", cache=base / "cache", model=str(tiny_model_dir), device="cpu",
                        dtype="float32", api_key=KEY)
    demo, url = _start(settings)
    yield url, settings
    demo.close()


def test_the_page_and_the_api_share_one_port(first) -> None:
    url, settings = first
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "ChatCore" in page.text
    assert httpx.get(f"{url}/config").status_code == 200  # an API key alone forces no login on the page
    client = _client(url)
    models = client.models.list().data
    assert [m.id for m in models] == [settings.model]

    reply = client.chat.completions.create(model=settings.model, messages=HI, temperature=0, max_tokens=6)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6 and reply.usage.prompt_tokens > 0
    saved = Store(settings.db_path).get_conversation("local", reply.model_extra["chatcore"]["conversation_id"])
    assert saved["source"] == "api" and saved["messages"][-1]["content"] == reply.choices[0].message.content

    chunks = list(client.chat.completions.create(model=settings.model, messages=HI, temperature=0, max_tokens=6,
                                                 stream=True, store=False))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2 and "".join(pieces) == reply.choices[0].message.content

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=settings.model, messages=HI, temperature=7)
    assert refused.value.status_code == 400 and "temperature" in refused.value.message
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        _client(url, "wrong-key").models.list()
    assert unauthorized.value.status_code == 401


def test_a_second_chatcore_answers_through_the_first(first, tmp_path: Path) -> None:
    """``python app.py --backend openai --base-url FIRST/v1 --backend-api-key K``: same greedy answer,
    through its own API and through its web page's handlers."""
    url, settings = first
    direct = _client(url).chat.completions.create(model=settings.model, messages=HI, temperature=0, max_tokens=8,
                                                  store=False)
    second_settings = Settings(home=tmp_path / "second", backend="openai", base_url=f"{url}/v1",
                               backend_api_key=KEY, api_key="second-key")
    demo, second = _start(second_settings)
    try:
        relayed = _client(second, "second-key").chat.completions.create(
            model=settings.model, messages=HI, temperature=0, max_tokens=8)
        assert relayed.choices[0].message.content == direct.choices[0].message.content
        counts = ("prompt_tokens", "completion_tokens", "total_tokens")
        assert [getattr(relayed.usage, k) for k in counts] == [getattr(direct.usage, k) for k in counts]
        # The first server's figure, relayed: it had just answered the same prompt (all but its last token).
        assert relayed.usage.prompt_tokens_details.cached_tokens == relayed.usage.prompt_tokens - 1
        from chatcore.web.workspace import StopSignal

        page = _page_of(demo)

        outputs = list(page.respond("Hello there", None, StopSignal(), "", 0.0, 0.95, 50, 8, 1.1, ""))
        conversation_id = outputs[-1][1]
        answer = Store(second_settings.db_path).get_conversation("local", conversation_id)["messages"][-1]
        assert answer["content"] == direct.choices[0].message.content and answer["params"]["backend"] == f"{url}/v1"
    finally:
        demo.close()


def test_accounts_turn_on_the_login_and_the_api_still_takes_the_key(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model=str(tiny_model_dir), device="cpu",
                        dtype="float32", api_key=KEY)
    settings.home.mkdir(parents=True)
    Accounts(Store(settings.db_path)).add("ada", "ada-password")
    demo, url = _start(settings)
    try:
        assert httpx.get(f"{url}/config").status_code == 401
        with httpx.Client(base_url=url) as browser:
            refused = browser.post("/login", data={"username": "ada", "password": "wrong-password"})
            assert refused.status_code == 400
            assert browser.post("/login", data={"username": "ada", "password": "ada-password"}).status_code == 200
            assert browser.get("/config").status_code == 200
        assert [m.id for m in _client(url).models.list()] == [settings.model]
    finally:
        demo.close()


def test_a_client_polling_at_start_up_hears_loading_from_the_first_answer_never_404(
        tiny_engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python app.py`` polled from its first moment: the first answer of /v1/models is 503 "still loading".

    The launch is held just after its server starts listening, until that first answer lands: were /v1
    mounted only after the launch, as it once was, the answer would be Gradio's 404.
    """
    import gradio.http_server

    import chatcore.engine.loader

    released = threading.Event()
    monkeypatch.setattr(chatcore.engine.loader, "load_backend",
                        lambda settings, progress: released.wait(60) and tiny_engine)
    answers: list[httpx.Response] = []
    answered = threading.Event()
    real_start_server = gradio.http_server.start_server

    def start_server_then_hold(*args, **kwargs):
        started = real_start_server(*args, **kwargs)
        answered.wait(30)
        return started

    monkeypatch.setattr(gradio.http_server, "start_server", start_server_then_hold)
    port = _free_port()

    def poll() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10))
                answered.set()
                return
            except httpx.TransportError:  # not listening yet
                time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    demo = server.start(Settings(home=tmp_path / "home", cache=tmp_path / "cache", model="tiny"), port=port,
                        quiet=True, concurrency=3)
    try:
        api = next(route.app for route in demo.app.router.routes if route.name == "openai-api")
        assert api.state.admission.running == 3  # --concurrency bounds the API's answers as the page's
        poller.join(60)
        assert answers, "the server never answered"
        first = answers[0]
        assert first.status_code == 503, first.text
        assert "still loading" in first.json()["error"]["message"]
        released.set()
        url = _ready(port, "none")
        assert [m.id for m in _client(url, "none").models.list()] == [tiny_engine.model_name]
    finally:
        released.set()
        demo.close()


def _page_of(demo) -> app.ChatApp:
    """The ChatApp behind a launched page, from its handlers."""
    for fn in demo.fns.values():
        page = getattr(fn.fn, "__self__", None)
        if isinstance(page, app.ChatApp):
            return page
    raise AssertionError("no ChatApp handler found")


def test_serve_has_the_api_and_backend_flags() -> None:
    from click.testing import CliRunner

    from chatcore.cli import main

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--api-key", "--api-only", "--backend", "--base-url", "--backend-api-key", "--quant", "--model"):
        assert flag in result.output, flag
    args = server.parse_args(["--api-key", "K", "--backend", "openai", "--base-url", "http://h/v1",
                           "--backend-api-key", "B", "--quant", "int8"])
    assert (args.api_key, args.backend, args.base_url, args.backend_api_key, args.quant) == (
        "K", "openai", "http://h/v1", "B", "int8")


def test_serve_api_only_calls_serve_api_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import chatcore.api.routes
    from chatcore.cli import main

    calls = []
    monkeypatch.setattr(chatcore.api.routes, "serve_api",
                        lambda settings, host, port, concurrency: calls.append((settings, host, port, concurrency)))
    monkeypatch.setenv("CHATCORE_API_KEY", "from-env")
    result = CliRunner().invoke(main, ["serve", "--api-only", "--port", "9001", "--backend", "openai",
                                       "--base-url", "http://gpu:8000/v1", "--quant", "int4", "--concurrency", "3"])
    assert result.exit_code == 0, result.output
    settings, host, port, concurrency = calls[0]
    assert (host, port, settings.api_key, settings.backend, settings.base_url, settings.quant, concurrency) == (
        "127.0.0.1", 9001, "from-env", "openai", "http://gpu:8000/v1", "int4", 3)

"""Hostile and broken input through the service, the API, the command line and the web page alike.

Every payload gets a clear error naming what is wrong, before any model work, and no row changes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest
from click.testing import CliRunner

from chatcore.api.routes import create_api_app
from chatcore.cli import main
from chatcore.core.errors import ParameterError
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.services.chat import ChatService
from chatcore.testing.reliability import record
from chatcore.testing.servers import manager_for, serve
from chatcore.testing.workspaces import make_workspace
from storage import Store

# name -> the message text. Each is refused on every surface.
MESSAGES = {
    "empty": "",
    "whitespace only": " \t\n \u3000 ",
    "100,000 newlines": "\n" * 100_000,
    "1 MB": "a" * 1_000_000,
    "NUL": "hello\x00world",
    "escape sequence": "clear \x1b[2J\x1b[H the screen",
    "bell": "ring\x07",
    "DEL": "del\x7f",
    "lone high surrogate": "broken \ud800 text",
    "lone low surrogate": "broken \udfff text",
    "invalid UTF-8 (surrogateescape)": b"caf\xe9 \xff".decode("utf-8", "surrogateescape"),
}
# Fits the character limit, but not the tiny model's 2,048-token window: refused before any write.
OVERFLOW = "x" + "\n" * 100_000 + "y"

# name -> (field, value): sampling values refused everywhere.
PARAMS = {
    "temperature NaN": ("temperature", math.nan),
    "temperature +inf": ("temperature", math.inf),
    "temperature -inf": ("temperature", -math.inf),
    "temperature 7": ("temperature", 7),
    "temperature -0.1": ("temperature", -0.1),
    "temperature text": ("temperature", "hot"),
    "temperature list": ("temperature", [1]),
    "temperature object": ("temperature", {"v": 1}),
    "temperature bool": ("temperature", True),
    "top_p 0": ("top_p", 0),
    "top_p 1.5": ("top_p", 1.5),
    "top_p NaN": ("top_p", math.nan),
    "top_k -1": ("top_k", -1),
    "top_k 2.5": ("top_k", 2.5),
    "top_k text": ("top_k", "many"),
    "max_tokens 0": ("max_new_tokens", 0),
    "max_tokens -5": ("max_new_tokens", -5),
    "max_tokens 10^12": ("max_new_tokens", 10**12),
    "max_tokens 2.5": ("max_new_tokens", 2.5),
    "max_tokens inf": ("max_new_tokens", math.inf),
    "repetition_penalty 0.5": ("repetition_penalty", 0.5),
    "repetition_penalty 3": ("repetition_penalty", 3),
    "seed -1": ("seed", -1),
    "seed 2^64": ("seed", 2**64),
    "seed 1.5": ("seed", 1.5),
    "seed NaN": ("seed", math.nan),
}


def counts(store: Store) -> dict[str, int]:
    return {t: store.db.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("conversations", "messages", "notes")}


class NoModel:
    """A backend that fails the test if any model work starts."""

    context_window = 2048
    model_name = "no-model"

    def stream(self, *args, **kwargs):
        raise AssertionError("model work started for a refused message")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(Settings().db_path)
    cid = store.create_conversation("local", title="existing")
    store.add_message(cid, "user", "already here")
    return store


# -- the service ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MESSAGES)
def test_service_refuses_bad_messages_before_the_backend(name: str, store: Store) -> None:
    backends = []
    service = ChatService(lambda: backends.append(1) or NoModel(), store)
    before = counts(store)
    with pytest.raises(ParameterError) as refused:
        list(service.ask(MESSAGES[name], GenerationParams()))
    assert refused.value.param == "message" and str(refused.value)
    assert backends == []  # not even asked for: nothing loads
    assert counts(store) == before


def test_service_refuses_a_bad_system_prompt_too(store: Store) -> None:
    service = ChatService(lambda: NoModel(), store)
    before = counts(store)
    for system in ("\x00", "\x1b[31m", "\ud800"):
        with pytest.raises(ParameterError, match="system prompt"):
            list(service.ask("hello", GenerationParams(), system=system))
    assert counts(store) == before


@pytest.mark.parametrize("name", PARAMS)
def test_parameters_are_refused_naming_the_field(name: str) -> None:
    field, value = PARAMS[name]
    with pytest.raises(ParameterError) as refused:
        GenerationParams.create(max_new_tokens_limit=2047, **{field: value})
    assert refused.value.param == field
    assert field in str(refused.value)


# -- the HTTP API --------------------------------------------------------------------------------


def _raw_body(model: str, content: str | None = None, **fields) -> bytes:
    """JSON the way a hostile client may send it: NaN and Infinity literals, lone surrogate escapes."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello" if content is None else content}],
            "max_tokens": 4, **fields}
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


def test_api_refuses_every_payload_with_400_and_writes_nothing(tiny_engine, store: Store) -> None:
    model = tiny_engine.model_name
    cases: dict[str, bytes] = {}
    for name, text in MESSAGES.items():
        if name.startswith("invalid UTF-8"):
            continue  # JSON text cannot carry it; the raw bytes case below does
        cases[f"message: {name}"] = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
        ).encode()
    cases["message: too long for the window"] = _raw_body(model, OVERFLOW)
    cases["message: invalid UTF-8 bytes"] = (b'{"model": "' + model.encode() + b'", "messages": [{"role": "user", '
                                             b'"content": "caf\xe9 \xff\xfe"}]}')
    cases["system: NUL"] = json.dumps({"model": model, "messages": [
        {"role": "system", "content": "be\x00bad"}, {"role": "user", "content": "hi"}]}).encode()
    for name, (field, value) in PARAMS.items():
        api_field = {"max_new_tokens": "max_tokens"}.get(field, field)
        cases[f"param: {name}"] = _raw_body(model, **{api_field: value})
    cases["param: n 2"] = _raw_body(model, n=2)
    cases["param: stop 17 strings"] = _raw_body(model, stop=[str(i) for i in range(17)])
    cases["param: stop empty"] = _raw_body(model, stop=[""])
    cases["param: stop number"] = _raw_body(model, stop=5)
    cases["body: not JSON"] = b"{not json"
    cases["body: truncated"] = _raw_body(model)[:-7]
    cases["body: a list"] = b"[1, 2]"
    cases["body: 100,000 levels deep"] = b'{"model": "x", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases["messages: not a list"] = json.dumps({"model": model, "messages": "hi"}).encode()
    cases["messages: empty"] = json.dumps({"model": model, "messages": []}).encode()
    cases["messages: unknown role"] = json.dumps({"model": model, "messages": [{"role": "root", "content": "x"}]}).encode()
    cases["messages: content a number"] = json.dumps({"model": model, "messages": [{"role": "user", "content": 5}]}).encode()
    cases["messages: image part"] = json.dumps({"model": model, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://evil.invalid/x.png"}}]}]}).encode()
    cases["messages: ends with the assistant"] = json.dumps({"model": model, "messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}).encode()

    before = counts(store)
    slowest = 0.0
    with serve(create_api_app(manager=manager_for(tiny_engine), store=store)) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        for name, raw in cases.items():
            began = time.monotonic()
            response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
            slowest = max(slowest, time.monotonic() - began)
            assert response.status_code == 400, (name, response.status_code, response.text[:300])
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"], name
            # The streaming form is refused the same way, with a status, not a broken stream.
            if name.startswith(("message", "param")) and b"\xff" not in raw:
                body = json.loads(raw.decode("utf-8", "surrogatepass"))
                again = http.post("/v1/chat/completions", content=json.dumps({**body, "stream": True},
                                  allow_nan=True).encode("utf-8", "surrogatepass"),
                                  headers={"content-type": "application/json"})
                assert again.status_code == 400, name
    assert counts(store) == before
    record("input: HTTP API", payloads=len(cases), status_400=len(cases), status_500=0, rows_changed=0,
           slowest_refusal_s=round(slowest, 3))


# -- the command line ----------------------------------------------------------------------------


def test_cli_refuses_every_payload_before_loading_the_model(monkeypatch: pytest.MonkeyPatch, store: Store,
                                                            tiny_model_dir: Path) -> None:
    import chatcore.engine.loader

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded for a refused message")

    monkeypatch.setattr(chatcore.engine.loader, "load_backend", no_load)
    runner = CliRunner()
    before = counts(store)
    tried = 0
    for name, text in MESSAGES.items():
        result = runner.invoke(main, ["ask", text])
        tried += 1
        assert result.exit_code != 0, name
        assert "Error" in result.output and "message" in result.output, (name, result.output)
        assert "Traceback" not in result.output
    flag = {"temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k",
            "max_new_tokens": "--max-tokens", "repetition_penalty": "--repetition-penalty", "seed": "--seed"}
    for name, (field, value) in PARAMS.items():
        if isinstance(value, (list, dict, bool)):
            continue  # a flag is text
        result = runner.invoke(main, ["ask", flag[field], str(value), "hello"])
        tried += 1
        assert result.exit_code != 0, (name, result.output)
        assert "Error" in result.output and "Traceback" not in result.output, (name, result.output)
    result = runner.invoke(main, ["ask", "--system", "\x1b]0;pwned\x07", "hello"])
    tried += 1
    assert result.exit_code == 1 and "system prompt" in result.output
    assert counts(store) == before
    # Too long for the window: the model loads (the tokenizer decides), then nothing is written.
    monkeypatch.undo()
    result = runner.invoke(main, ["ask", "--model", str(tiny_model_dir), "--device", "cpu", OVERFLOW])
    tried += 1
    assert result.exit_code == 1 and "context window" in result.output, result.output
    assert counts(store) == before
    record("input: command line", payloads=tried, refused=tried, tracebacks=0, rows_changed=0)


# -- the web page --------------------------------------------------------------------------------


def test_web_page_refuses_every_payload_as_a_message(tmp_path: Path, tiny_engine) -> None:
    from chatcore.web import app
    from chatcore.web.workspace import StopSignal

    workspace = make_workspace(tmp_path, tiny_engine)
    page = app.ChatApp(workspace)
    before = counts(workspace.store)
    defaults = dict(temperature=0.7, top_p=0.95, top_k=50, max_new_tokens=32, repetition_penalty=1.1, seed="")
    tried = 0
    for name, text in {**MESSAGES, "too long for the window": OVERFLOW}.items():
        tried += 1
        with pytest.raises(gr.Error) as refused:
            page.accept(text, [], StopSignal(), **defaults)
            # accept shows the question; the answer step refuses what only the tokenizer can judge.
            list(page.respond(text, None, StopSignal(), "", *defaults.values()))
        assert refused.value.message, name
    for name, (field, value) in PARAMS.items():
        if field not in defaults:
            continue
        tried += 1
        with pytest.raises(gr.Error) as refused:
            page.accept("hello", [], StopSignal(), **{**defaults, field: value})
        assert field in refused.value.message, (name, refused.value.message)
    assert counts(workspace.store) == before
    record("input: web page handlers", payloads=tried, refused=tried, rows_changed=0)

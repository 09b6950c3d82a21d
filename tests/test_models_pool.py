"""The pool of loaded models: the memory budget, least-recently-used eviction, loading in the background, and
the model chosen per tab, per user, per conversation and per API request. One tiny real engine plays several
models (``Named``: its own name and size), so the pool is tested without loading weights again."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr
import openai
import pytest

from chatcore.api.routes import create_api_app
from chatcore.core.params import GenerationParams
from chatcore.core.settings import Settings
from chatcore.engine.base import ModelInfo
from chatcore.services.chat import ChatService
from chatcore.services.models import ModelManager, ModelNotReadyError, estimated_bytes
from chatcore.testing.engines import Named
from chatcore.testing.servers import serve
from chatcore.web import app
from chatcore.web.workspace import StopSignal, Workspace
from storage import Store

# Parameters per model: at float32, 1e8 parameters are 0.4 GB.
SIZES = {"a": 100_000_000, "b": 100_000_000, "c": 100_000_000, "big": 200_000_000, "huge": 400_000_000}
PARAMS = dict(temperature=0.0, top_p=0.95, top_k=50, max_new_tokens=4, repetition_penalty=1.1, seed="1")
HI = [{"role": "user", "content": "Hello there"}]


class Loader:
    """Loads ``Named`` copies of the engine by model name; ``gate`` holds the loads of the names in ``held``."""

    def __init__(self, engine, held: tuple[str, ...] = ()) -> None:
        self.engine, self.held = engine, held
        self.gate = threading.Event()
        self.loads: list[str] = []

    def __call__(self, settings: Settings, progress) -> Named:
        if settings.model == "broken":
            raise RuntimeError("no such weights")
        if settings.model in self.held:
            progress("reading weights")
            self.gate.wait(30)
        self.loads.append(settings.model)
        return Named(self.engine, settings.model, SIZES.get(settings.model, 1000))


def pool(tmp_path: Path, engine, budget_gb: float = 1.0, loader: Loader | None = None) -> ModelManager:
    settings = Settings(home=tmp_path / "home", cache=tmp_path / "cache", model="a", device="cpu",
                        dtype="float32", memory_budget_gb=budget_gb)
    manager = ModelManager(settings, loader=loader or Loader(engine))
    manager.start()
    manager.wait()
    assert manager.ready, manager.status
    return manager


def test_the_memory_estimate_reads_parameters_and_precision():
    def info(dtype: str) -> ModelInfo:
        return ModelInfo("m", "cpu", dtype, 2048, "0" * 64, 1_000_000)

    assert estimated_bytes(info("float32")) == 4_000_000
    assert estimated_bytes(info("bfloat16")) == 2_000_000
    assert estimated_bytes(info("bfloat16+int8")) == 1_100_000
    assert estimated_bytes(info("bfloat16+int4")) == 550_000
    assert estimated_bytes(info("something new")) == 4_000_000  # unknown: counted as float32, the safe side
    assert estimated_bytes(None) == 0  # a remote server holds no weights here


def test_the_budget_comes_from_the_environment_or_half_the_memory(monkeypatch):
    monkeypatch.setenv("CHATCORE_MEMORY_BUDGET_GB", "3.5")
    assert Settings().memory_budget_gb == 3.5
    monkeypatch.delenv("CHATCORE_MEMORY_BUDGET_GB")
    assert 0 < Settings().memory_budget_gb < 1e6


def test_least_recently_used_models_are_unloaded_first_and_the_default_last(tmp_path, hf_engine):
    manager = pool(tmp_path, hf_engine)  # a: 0.4 GB of a 1 GB budget
    manager.wait_for("b")
    assert manager.loaded() == ["a", "b"]
    manager.wait_for("c")  # 1.2 GB: b, the least recently used that is not the default, goes
    assert manager.loaded() == ["a", "c"]
    assert str(manager.status_of("b")) == "not loaded: b (unloaded to make room for c)"
    manager.get("a")
    manager.wait_for("b")  # b's size is known now: c makes room before b loads
    assert manager.loaded() == ["a", "b"]
    manager.wait_for("big")  # 0.8 GB: b goes, then the default too, the last one left to unload
    assert manager.loaded() == ["big"]
    with pytest.raises(ModelNotReadyError, match="still loading"):
        manager.get()  # the default comes back in the background when asked for
    assert manager.wait_for(None).model_name == "a"
    assert manager.loaded() == ["a"] and manager.status.state == "ready"


def test_a_model_answering_now_is_not_unloaded(tmp_path, hf_engine):
    manager = pool(tmp_path, hf_engine)
    manager.wait_for("b")
    service = ChatService(manager.get, None, lease=manager.lease)
    answer = service.ask("Hello there", GenerationParams(max_new_tokens=4, seed=1), save=False, model="b")
    next(answer)  # Started: b is answering
    with manager.lease("a"):  # and a too, by another stream
        manager.wait_for("c")
        assert manager.loaded() == ["a", "c", "b"]  # over the budget while both answer, and said so
        assert "over the 1.0 GB memory budget" in str(manager.status_of("c"))
        list(answer)  # b's answer ends: the pool trims at once
        assert manager.loaded() == ["a", "c"]
    assert manager.loaded() == ["a", "c"]


def test_an_unloaded_backend_finishes_the_stream_it_started(tmp_path, hf_engine):
    manager = pool(tmp_path, hf_engine)
    backend = manager.wait_for("b")
    stream = backend.stream(HI, GenerationParams(max_new_tokens=4, seed=1))
    next(stream)
    manager.get("a")
    manager.wait_for("c")  # b was idle as far as the pool knew: unloaded
    assert "b" not in manager.loaded()
    assert [type(event).__name__ for event in stream][-1] == "Finished"


def test_a_model_bigger_than_the_budget_still_loads_with_a_warning(tmp_path, hf_engine):
    manager = pool(tmp_path, hf_engine, budget_gb=1.0)
    manager.wait_for("huge")  # 1.6 GB alone
    assert manager.loaded() == ["huge"]
    assert "more than the 1.0 GB memory budget (CHATCORE_MEMORY_BUDGET_GB)" in str(manager.status_of("huge"))


def test_models_load_in_the_background_and_failures_are_reported(tmp_path, hf_engine):
    loader = Loader(hf_engine, held=("b",))
    manager = pool(tmp_path, hf_engine, loader=loader)
    with pytest.raises(ModelNotReadyError, match="the model b is still loading"):
        manager.get("b")  # starts loading it
    assert manager.status_of("b").loading and manager.get().model_name == "a"  # the default answers meanwhile
    loader.gate.set()
    assert manager.wait_for("b").model_name == "b"
    assert manager.get("b").model_name == "b" and loader.loads.count("b") == 1
    with pytest.raises(ModelNotReadyError, match="the model broken failed to load: no such weights"):
        manager.wait_for("broken")
    with pytest.raises(ModelNotReadyError, match="failed to load"):
        manager.get("broken")  # no retry on every request
    with pytest.raises(Exception, match="is not an option"):
        manager.get("a@colour=blue")


# -- the page: each tab its own model, each user their last choice -------------------------------------

ADA, BOB = gr.Request(username="ada"), gr.Request(username="bob")


@pytest.fixture
def chat_app(tmp_path, hf_engine) -> app.ChatApp:
    manager = pool(tmp_path, hf_engine)
    return app.ChatApp(Workspace(manager, Store(manager.settings.db_path), stream_interval=0.0))


def send(chat_app: app.ChatApp, text: str, model: str, request=None, conversation_id=None) -> int:
    """Send ``text`` from a tab whose pickers say ``model`` on cpu; the conversation's id."""
    values = list(PARAMS.values())
    chat_app.accept(text, [], StopSignal(), *values, model, "cpu")
    outputs = list(chat_app.respond(text, conversation_id, StopSignal(), "", *values, request, None, model, "cpu"))
    return outputs[-1][1]


def answered_by(chat_app: app.ChatApp, owner: str, conversation_id: int) -> list[str]:
    messages = chat_app.workspace.store.get_conversation(owner, conversation_id)["messages"]
    return [m["model"] for m in messages if m["role"] == "assistant"]


def test_each_tab_answers_from_its_own_model(chat_app):
    demo = chat_app.demo
    for name in ("accept", "respond", "retry", "edit", "begin", "begin_edit", "poll_status", "switch_model"):
        fns = [fn for fn in demo.fns.values() if fn.name == name]
        assert fns and all(chat_app.model in fn.inputs and chat_app.device in fn.inputs for fn in fns), name
    manager = chat_app.workspace.manager
    status, _ = chat_app.switch_model("b", "cpu")  # tab 2 chooses b: it loads for that tab alone
    assert "b" in status
    manager.wait_for("b")
    assert manager.settings.model == "a" and "ready: a" in chat_app.poll_status()[0]  # nobody else's changed
    assert "ready: a" in chat_app.poll_status("a", "cpu")[0] and "ready: b" in chat_app.poll_status("b", "cpu")[0]
    first, second = send(chat_app, "From tab one", "a"), send(chat_app, "From tab two", "b")
    assert answered_by(chat_app, "local", first) == ["a"] and answered_by(chat_app, "local", second) == ["b"]
    send(chat_app, "Again from tab one", "a", conversation_id=first)
    assert answered_by(chat_app, "local", first) == ["a", "a"]
    # Opening a conversation selects its model in the tab's pickers, and continuing keeps it.
    model, device, status, _ = chat_app.conversation_model(second)
    assert (model, device) == ("b", "cpu") and "ready: b" in status
    outputs = list(chat_app.respond("Continue", second, StopSignal(), "", *PARAMS.values()))
    assert outputs and answered_by(chat_app, "local", second) == ["b", "b"]


def test_a_model_not_loaded_is_refused_at_send_while_it_loads(tmp_path, hf_engine):
    loader = Loader(hf_engine, held=("c",))
    manager = pool(tmp_path, hf_engine, loader=loader)
    chat_app = app.ChatApp(Workspace(manager, Store(manager.settings.db_path)))
    with pytest.raises(gr.Error, match="the model c is still loading"):
        chat_app.accept("hello", [], StopSignal(), *PARAMS.values(), "c", "cpu")
    status, timer = chat_app.poll_status("c", "cpu")
    assert "loading c" in status and timer.active is True
    loader.gate.set()
    manager.wait_for("c")
    assert "ready: c" in chat_app.poll_status("c", "cpu")[0]


def test_each_user_starts_with_the_model_they_chose_last(chat_app):
    chat_app.switch_model("b", "cpu", ADA)
    chat_app.workspace.manager.wait_for("b")
    _, model, device, status, _ = chat_app.on_load(ADA)
    assert (model.value, device.value) == ("b", "cpu") and "ready: b" in status
    _, model, _, status, _ = chat_app.on_load(BOB)
    assert model.value == "a" and "ready: a" in status  # Bob never chose: the server's default
    chat_app.switch_model("a", "cpu", ADA)  # back to the default: remembered as the default
    assert chat_app.on_load(ADA)[1].value == "a"
    assert chat_app.workspace.user_model("ada") == "default"
    with pytest.raises(gr.Error, match="is not an option"):
        chat_app.switch_model("b@colour=blue", "cpu", ADA)
    assert chat_app.workspace.user_model("ada") == "default"  # a refused choice changes nothing


def test_another_users_conversation_answers_like_a_missing_one(chat_app):
    bob_id = send(chat_app, "Bob's question", "a", BOB)
    refused = []
    for cid in (bob_id, 10_000):
        with pytest.raises(gr.Error) as error:
            chat_app.conversation_model(cid, ADA)
        refused.append(error.value.message.replace(str(cid), "ID"))
    assert refused[0] == refused[1]
    assert chat_app.conversation_model(bob_id, BOB)[0] == "a"


# -- the API: any loaded model, 503 while a known one loads ------------------------------------------


def test_the_api_answers_from_any_loaded_model_and_503_while_one_loads(tmp_path, hf_engine):
    loader = Loader(hf_engine, held=("b",))
    manager = pool(tmp_path, hf_engine, loader=loader)
    # "b" is known to this server: a model in the pool (here, adopted under another configuration).
    manager.adopt(Named(hf_engine, "b in bfloat16", 1000), "b@dtype=bfloat16")
    with serve(create_api_app(manager=manager, store=None)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["a", "b@dtype=bfloat16"]
        answer = client.chat.completions.create(model="b@dtype=bfloat16", messages=HI, max_tokens=4)
        assert answer.model == "b in bfloat16"
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="b", messages=HI, max_tokens=4)
        assert caught.value.status_code == 503 and "still loading" in caught.value.message
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.chat.completions.create(model="meta-llama/Llama-3-70B", messages=HI, max_tokens=4)
        assert manager.status_of("meta-llama/Llama-3-70B").state == "not loaded"
        loader.gate.set()
        manager.wait_for("b")
        answer = client.chat.completions.create(model="b", messages=HI, max_tokens=4)
        assert answer.model == "b" and answer.choices[0].message.content is not None
        assert "b" in [m.id for m in client.models.list().data]
    assert loader.loads == ["a", "b"]  # the unknown name never reached the loader

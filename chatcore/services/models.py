"""The pool of loaded models: loading in the background, a memory budget, least-recently-used eviction.

A model is named by a spec (``NAME`` or ``NAME@quant=none,device=cpu``, see ``core.settings``); ``None`` or
``default`` is the configured model. Two configurations of one model are two entries. The server starts
at once and loads the default in the background; any other spec loads when first asked for.

Memory: each loaded backend costs ``estimated_bytes(info)`` (its parameters times the bytes each takes in
its precision; a remote server costs nothing). When the loaded models pass ``Settings.memory_budget_gb``,
the least recently used idle ones are unloaded: never one answering now (a lease is held while a stream
runs), never the one just asked for, and the default only last, when nothing else is left to unload (it
then loads again in the background when next asked for). A model's size is known once it has loaded, so
a first load trims the pool right after; loading it again makes room first. A model that fits nowhere (bigger
than the budget, or beside models in use) still loads, with a warning in its status, and the pool is trimmed
again as soon as the streams that held it back end. An unloaded backend that a stream still uses keeps
working until the stream ends: the pool only drops its reference.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from chatcore.core.errors import ChatCoreError, ParameterError
from chatcore.core.settings import Settings, join_model_spec, model_settings, split_model_spec
from chatcore.engine import loader as engine_loader

GB = 1e9
# Bytes per parameter by precision; a quantized model's embeddings, norms and scales add about a tenth.
_BYTES = {"float32": 4.0, "float64": 8.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.1, "int4": 0.55}


class ModelNotReadyError(ChatCoreError):
    """A request arrived while the model is still loading, or after loading failed."""


ModelState = Literal["not loaded", "loading", "ready", "failed"]


@dataclass(frozen=True)
class ModelStatus:
    """Where model loading stands, for the page's status line and the API's 503s."""

    state: ModelState
    model: str | None = None
    detail: str = ""  # the loader's last progress message, why loading failed, or a warning once ready

    @property
    def loading(self) -> bool:
        return self.state == "loading"

    def __str__(self) -> str:
        if self.state == "loading":
            return f"loading {self.model}: {self.detail}" if self.detail else f"loading {self.model}…"
        if self.state == "failed":
            return f"failed to load {self.model}: {self.detail}"
        if self.state == "ready":
            return f"ready: {self.model}" + (f" ({self.detail})" if self.detail else "")
        if self.model:
            return f"not loaded: {self.model}" + (f" ({self.detail})" if self.detail else "")
        return "not loaded"


def estimated_bytes(info: Any) -> int:
    """The memory a backend's weights take: parameters times bytes per parameter of ``info.dtype``.

    ``dtype`` is the decoder's label (``float32``, ``bfloat16+int4``): the quantization after ``+`` decides.
    No ``info`` (a remote server) costs 0; an unknown precision counts as float32, the safe side.
    """
    if info is None:
        return 0
    label = str(getattr(info, "dtype", "") or "")
    precision = label.rpartition("+")[2] if "+" in label else label
    return int(int(getattr(info, "parameters", 0) or 0) * _BYTES.get(precision, 4.0))


def _key(settings: Settings) -> tuple:
    """What makes two loads the same model: the weights, where and how they run, and who serves them."""
    return (settings.backend, settings.base_url, settings.model, settings.device, settings.dtype, settings.quant,
            settings.kv_cache)


@dataclass(eq=False)
class _Entry:
    """One model of the pool: loaded, loading, failed or unloaded."""

    spec: str
    settings: Settings
    status: ModelStatus
    backend: Any = None
    thread: threading.Thread | None = None
    leases: int = 0  # streams answering from it now
    used: int = 0  # the pool's clock at its last use: the least recently used goes first
    size: int = 0
    error: str | None = None


Loader = Callable[[Settings, Callable[[str], None]], object]


class ModelManager:
    """The loaded backends by spec; loading happens on background threads (one at a time), never in a request."""

    def __init__(self, settings: Settings, loader: Loader | None = None) -> None:
        self.settings = settings  # the configured (default) model's; ``start`` changes it
        # The local decoder, or the server settings.backend names; looked up at load time, not bound here.
        self._loader = loader or (lambda s, progress: engine_loader.load_backend(s, progress))
        self._lock = threading.RLock()
        self._loading = threading.Lock()  # one load at a time: two would compete for the same memory
        self._entries: dict[tuple, _Entry] = {}
        self._sizes: dict[tuple, int] = {}  # each model's size once loaded, to make room before a reload
        self._clock = itertools.count(1)
        self._status = ModelStatus("not loaded")  # the default model's, as the page's status line shows it
        self._error: str | None = None
        self._switch: threading.Thread | None = None  # start()'s thread while it runs
        self._switch_entry: _Entry | None = None  # and the model it loads, whose progress the status line shows

    # -- the default model, as before the pool ---------------------------------------------------

    @property
    def status(self) -> ModelStatus:
        """Loading, ready or failed, with the default model's name; ``str()`` of it is the one-line message."""
        return self._status

    @property
    def ready(self) -> bool:
        entry = self._entries.get(_key(self.settings))
        return self._switch is None and entry is not None and entry.backend is not None

    def start(self, model: str | None = None, device: str | None = None, dtype: str | None = None) -> threading.Thread:
        """Begin loading (or switching the default to) a model in the background; returns the loading thread."""
        with self._lock:
            if self._switch is not None:
                raise ModelNotReadyError(f"already busy: {self._status}")
            target = self.settings.with_overrides(model=model, device=device, dtype=dtype)
            entry = self._entry(_key(target), target.model, target)
            self._status = ModelStatus("loading", target.model)
            self._error = None
            running = entry.thread  # already loading (asked for by a request): wait for that load
            thread = threading.Thread(target=self._switch_to, args=(entry, target, running), name="model-loader",
                                      daemon=True)
            if running is None and entry.backend is None:
                entry.thread = thread
            self._switch, self._switch_entry = thread, entry
        thread.start()
        return thread

    def _switch_to(self, entry: _Entry, target: Settings, running: threading.Thread | None) -> None:
        try:
            if running is not None:
                running.join()
            if entry.backend is None:
                self._load(entry)
            with self._lock:
                if entry.backend is not None:
                    self.settings = target
                    entry.used = next(self._clock)
                    self._status = ModelStatus("ready", target.model, entry.status.detail)
                else:  # the old model, if any, stays the default and usable
                    self._error = entry.error
                    old = self._entries.get(_key(self.settings))
                    previous = f"; still using {self.settings.model}" if old is not None and old.backend else ""
                    self._status = ModelStatus("failed", target.model, f"{entry.error}{previous}")
        finally:
            if entry.thread is threading.current_thread():
                entry.thread = None
            self._switch, self._switch_entry = None, None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the default model's current load ends (used by tests and the CLI)."""
        thread = self._switch
        if thread is None:
            entry = self._entries.get(_key(self.settings))
            thread = entry.thread if entry is not None else None
        if thread is not None:
            thread.join(timeout)

    # -- any model ----------------------------------------------------------------------------------

    def get(self, model: str | None = None) -> Any:
        """The loaded backend for ``model`` (``None``: the default), marked most recently used.

        A model not loaded raises ``ModelNotReadyError`` saying why, and starts loading in the background
        unless it failed (``load`` tries a failed one again).
        """
        with self._lock:
            entry = self._find(model)
            if entry is not None and entry.backend is not None:
                entry.used = next(self._clock)
                return entry.backend
        raise self._not_ready(model, entry)

    def peek(self, model: str | None = None) -> Any | None:
        """The loaded backend for ``model`` (by spec, or by its backend's name), marked used; ``None`` when it is
        not loaded or ``model`` is no spec. Never starts a load."""
        with self._lock:
            try:
                entry = self._find(model)
            except ParameterError:
                return None
            if entry is None or entry.backend is None:
                return None
            entry.used = next(self._clock)
            return entry.backend

    def _not_ready(self, model: str | None, entry: _Entry | None) -> ModelNotReadyError:
        """Why ``model`` cannot answer yet; starts loading it when that helps."""
        default = entry is None and self._is_default(model) or entry is not None and self._is_default(entry.spec)
        if default and self._switch is not None:
            return ModelNotReadyError(f"the model is still loading ({self._status}); try again in a moment")
        if default and entry is None:
            return ModelNotReadyError(self._error and f"the model failed to load: {self._error}"
                                      or "no model is loaded")
        name = "the model" if default else f"the model {entry.spec if entry else model}"
        if entry is not None and entry.status.state == "failed":
            return ModelNotReadyError(f"{name} failed to load: {entry.error}")
        status = self.load(model)
        return ModelNotReadyError(f"{name} is still loading ({status}); try again in a moment")

    def load(self, model: str | None = None) -> ModelStatus:
        """Begin loading ``model`` in the background unless it is loaded or loading; its status."""
        target, spec = self._target(model)
        with self._lock:
            entry = self._entry(_key(target), spec, target)
            if entry.backend is None and entry.thread is None:
                entry.status = ModelStatus("loading", entry.spec, "waiting for another model to load"
                                           if self._loading.locked() else "")
                entry.error = None
                entry.thread = threading.Thread(target=self._load_in_background, args=(entry,),
                                                name=f"model-loader {entry.spec}", daemon=True)
                entry.thread.start()
            return entry.status

    def status_of(self, model: str | None = None) -> ModelStatus:
        """Where ``model`` stands: ``ModelStatus("not loaded", spec)`` for one never asked for."""
        if self._is_default(model) and self._switch is not None:
            return self._status
        with self._lock:
            entry = self._find(model)
            if entry is not None:
                return entry.status
        if self._is_default(model):
            return self._status
        return ModelStatus("not loaded", self._target(model)[1])

    def loaded(self) -> list[str]:
        """The specs of the loaded models, the default first, then the most recently used first."""
        default = _key(self.settings)
        with self._lock:
            entries = sorted((e for k, e in self._entries.items() if e.backend is not None),
                             key=lambda e: (_key(e.settings) != default, -e.used))
            return [e.spec for e in entries]

    def wait_for(self, model: str | None = None, timeout: float | None = None) -> Any:
        """Load ``model`` if needed and block until it is loaded (CLI, evaluation runs); its load's error if it failed."""
        self.load(model)
        with self._lock:
            entry = self._find(model)
            thread = entry.thread if entry is not None else None
        if thread is not None:
            thread.join(timeout)
        return self.get(model)

    def known(self, model: str) -> bool:
        """Whether ``model`` names a model this server has or may load without fetching: the default, one
        in the pool, or one in the model cache (so a client cannot make the server download anything)."""
        try:
            name, _ = split_model_spec(model)
        except ParameterError:
            return False
        with self._lock:
            names = {"default", self.settings.model}
            for entry in self._entries.values():
                names |= {entry.settings.model, getattr(entry.backend, "model_name", None)}
        if name in names:
            return True
        from chatcore.engine import sources

        return any(name in (cached.name, str(cached.path)) for cached in sources.list_cached(self.settings))

    @contextlib.contextmanager
    def lease(self, model: str | None = None) -> Iterator[Any]:
        """``with manager.lease(spec) as backend:`` the backend, kept loaded until the block ends."""
        with self._lock:
            backend = self.get(model)
        with self.hold(backend):
            yield backend

    @contextlib.contextmanager
    def hold(self, backend: Any) -> Iterator[Any]:
        """Keep ``backend`` from being unloaded while the block runs (nothing for a backend not in the pool)."""
        with self._lock:
            entry = next((e for e in self._entries.values() if e.backend is backend and backend is not None), None)
            if entry is not None:
                entry.leases += 1
        try:
            yield backend
        finally:
            if entry is not None:
                with self._lock:
                    entry.leases -= 1
                    if entry.leases == 0:
                        self._trim()  # a load that found everything in use may have left the pool over budget

    def adopt(self, backend: Any, model: str | None = None) -> None:
        """Put an already loaded ``backend`` in the pool as ``model`` (tests, and callers that loaded it)."""
        target, spec = self._target(model)
        with self._lock:
            entry = self._entry(_key(target), spec, target)
            entry.backend, entry.error = backend, None
            entry.size = estimated_bytes(getattr(backend, "info", None))
            entry.used = next(self._clock)
            entry.status = ModelStatus("ready", entry.spec)
            if self._is_default(model):
                self._status = ModelStatus("ready", self.settings.model)
            self._trim(keep=entry)

    # -- internals ----------------------------------------------------------------------------------

    @property
    def budget_bytes(self) -> int:
        return int(self.settings.memory_budget_gb * GB)

    def _is_default(self, model: str | None) -> bool:
        return model is None or model == "default" or _key(self._target(model)[0]) == _key(self.settings)

    def _target(self, model: str | None) -> tuple[Settings, str]:
        """The settings that load ``model`` and its one spelling (the default's is its name)."""
        if model is None or model == "default":
            return self.settings, self.settings.model
        name, options = split_model_spec(model)
        target = model_settings(self.settings, model)
        if _key(target) == _key(self.settings):
            return target, self.settings.model
        return target, join_model_spec(target.model if name == "default" else name, options)

    def _find(self, model: str | None) -> _Entry | None:
        """The pool's entry for ``model``, or a loaded one whose backend answers by that name (a saved answer's)."""
        target, spec = self._target(model)
        entry = self._entries.get(_key(target))
        if entry is None and model is not None and "@" not in model:
            entry = next((e for e in self._entries.values()
                          if e.backend is not None and getattr(e.backend, "model_name", None) == model), None)
        return entry

    def _entry(self, key: tuple, spec: str, settings: Settings) -> _Entry:
        if key not in self._entries:
            self._entries[key] = _Entry(spec, settings, ModelStatus("not loaded", spec))
        return self._entries[key]

    def _load_in_background(self, entry: _Entry) -> None:
        try:
            self._load(entry)
        finally:
            entry.thread = None

    def _load(self, entry: _Entry) -> None:
        """Load ``entry`` (one load at a time), making room first when its size is known."""
        def progress(message: str) -> None:
            entry.status = ModelStatus("loading", entry.spec, message)
            if self._mirrors(entry):
                self._status = entry.status

        with self._loading:
            progress("")
            with self._lock:
                self._trim(keep=entry, needed=self._sizes.get(_key(entry.settings), 0))
            try:
                backend = self._loader(entry.settings, progress)
            except Exception as exc:  # any failure is reported in the UI, and the other models stay usable
                entry.error = str(exc)
                entry.status = ModelStatus("failed", entry.spec, str(exc))
                if self._mirrors(entry) and self._switch_entry is None:  # start() words its own failure
                    self._error = entry.error
                    self._status = entry.status
                return
            with self._lock:
                entry.backend = backend
                entry.size = estimated_bytes(getattr(backend, "info", None))
                self._sizes[_key(entry.settings)] = entry.size
                entry.used = next(self._clock)
                total = self._trim(keep=entry)
                entry.status = ModelStatus("ready", entry.spec, self._warning(entry, total))
                if self._mirrors(entry) and self._switch_entry is None:
                    self._status = entry.status

    def _mirrors(self, entry: _Entry) -> bool:
        """Whether the status line (``status``) follows ``entry``: start()'s model, or else the default."""
        if self._switch_entry is not None:
            return entry is self._switch_entry
        return _key(entry.settings) == _key(self.settings)

    def _warning(self, entry: _Entry, total: int) -> str:
        """What to say when a loaded model leaves the pool over its budget."""
        budget = self.budget_bytes
        if total <= budget:
            return ""
        if entry.size > budget:
            return (f"warning: about {entry.size / GB:.1f} GB, more than the {budget / GB:.1f} GB memory budget "
                    "(CHATCORE_MEMORY_BUDGET_GB)")
        return (f"warning: {total / GB:.1f} GB of models loaded, over the {budget / GB:.1f} GB memory budget "
                "until the answers in progress end")

    def _trim(self, keep: _Entry | None = None, needed: int = 0) -> int:
        """Unload idle models, least recently used first and the default last, until ``needed`` more bytes fit
        the budget; never ``keep`` (by default the most recently used). Returns the bytes then loaded."""
        loaded = [e for e in self._entries.values() if e.backend is not None]
        if keep is None and loaded:
            keep = max(loaded, key=lambda e: e.used)
        total = sum(e.size for e in loaded) + needed
        default = _key(self.settings)
        idle = sorted((e for e in loaded if e is not keep and e.leases == 0 and e.size > 0),
                      key=lambda e: (_key(e.settings) == default, e.used))
        for victim in idle:
            if total <= self.budget_bytes:
                break
            total -= victim.size
            victim.backend = None  # a stream still using it keeps its own reference until it ends
            why = f"unloaded to make room for {keep.spec}" if keep is not None else "unloaded to make room"
            victim.status = ModelStatus("not loaded", victim.spec, why)
        return total

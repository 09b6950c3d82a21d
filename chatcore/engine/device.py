"""Choosing the device and precision: explicit choices are checked, ``auto`` picks the fastest."""

from __future__ import annotations

import re

import torch

from chatcore.core.errors import DeviceError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto|cpu|cuda|cuda:N|mps`` to a device that exists here, or a clear error."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} was asked for, but no CUDA GPU is available on this machine "
                              "(or this torch build has no CUDA support); use --device cpu or auto")
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("device 'mps' was asked for, but Apple's Metal backend is not available here")
        return torch.device("mps")
    raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto|float32|bfloat16|float16`` to a torch dtype suited to ``device``."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # On CPU, measured on the 2-core AVX-512 machines: bf16 decode is no faster than fp32 (both are
        # bound by per-token overhead), so fp32 keeps full accuracy at the same speed.
        return torch.float32
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16")
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        raise DeviceError("dtype 'float16' is not supported on CPU (too slow and inaccurate); use float32 or bfloat16")
    return dtype


def available_devices() -> list[str]:
    """The devices this machine has, as the device pickers offer them: ``auto`` first."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices

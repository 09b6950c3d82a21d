"""Device and dtype choice: explicit requests are checked, auto picks what exists."""

from __future__ import annotations

import pytest
import torch

from chatcore.core.errors import DeviceError
from chatcore.engine.device import resolve_device, resolve_dtype


def test_auto_picks_an_existing_device():
    device = resolve_device("auto")
    assert device.type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert device.type == "cpu" and resolve_dtype("auto", device) == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda:1")


def test_unknown_names_are_refused():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", torch.device("cpu"))
    with pytest.raises(DeviceError, match="float16"):
        resolve_dtype("float16", torch.device("cpu"))

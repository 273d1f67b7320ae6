"""Devices and precision: device names, the device lock, autocast, out-of-memory errors."""

from __future__ import annotations

import pytest

from inference.devices import DEVICE_LOCK, autocast_dtype, oom_as_error, resolve_device
from inference.errors import InvalidRequestError, OutOfMemoryError


def test_device_lock_is_free_when_nothing_runs() -> None:
    assert DEVICE_LOCK.acquire(blocking=False)
    DEVICE_LOCK.release()


def test_resolve_device() -> None:
    import torch

    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    with pytest.raises(InvalidRequestError, match="'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidRequestError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_autocast_choice() -> None:
    import torch

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None
    assert autocast_dtype(cpu, cpu_bf16=True) is torch.bfloat16
    if torch.cuda.is_available():
        assert autocast_dtype(torch.device("cuda")) in {torch.bfloat16, torch.float16}


def test_out_of_memory_is_mapped_with_advice() -> None:
    with pytest.raises(OutOfMemoryError, match="batch size") as info:  # noqa: SIM117
        with oom_as_error("generating S1GRD"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ValueError, match="unrelated"), oom_as_error("x"):
        raise ValueError("unrelated")

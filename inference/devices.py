"""Devices and precision: which ``torch.device`` to run on, the device lock, autocast dtype,
out-of-memory errors and freeing a device's cache.

``torch`` is imported inside functions: importing this module costs nothing.

Device work must be serialised by the caller with :data:`DEVICE_LOCK` (the app holds it around
every model call so that two sessions never share GPU memory at once); nothing in
``inference`` acquires it, so nested calls cannot deadlock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from inference.errors import InvalidRequestError, OutOfMemoryError

if TYPE_CHECKING:
    import torch

#: Serialises device work across threads (Streamlit sessions). Held by the caller, not here.
DEVICE_LOCK = threading.Lock()


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``/``cuda``/``cuda:N``/``mps``/``cpu`` into a usable ``torch.device``.

    Args:
        name: ``auto`` picks CUDA, then Apple MPS, then CPU.

    Returns:
        The device.

    Raises:
        InvalidRequestError: the name is unknown or the device is not available here.
    """
    import torch

    key = (name or "auto").strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not mps_available():
            raise InvalidRequestError(
                f"Device {name!r} asked for, but Apple MPS is not available here; "
                "set TERRALENS_DEVICE=auto or cpu."
            )
        return torch.device("mps")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InvalidRequestError(
                f"Device {name!r} asked for, but no CUDA GPU is visible to torch; "
                "set TERRALENS_DEVICE=auto or cpu, or check the NVIDIA driver/container runtime."
            )
        try:
            device = torch.device(key)
        except RuntimeError as err:
            raise InvalidRequestError(f"Cannot parse device {name!r}: {err}") from err
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidRequestError(
                f"Device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist."
            )
        return device
    raise InvalidRequestError(f"Unknown device {name!r}: use auto, cuda, cuda:N, mps or cpu.")


def mps_available() -> bool:
    """Whether torch can use Apple's MPS backend here."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def autocast_dtype(device: torch.device, *, cpu_bf16: bool = False) -> torch.dtype | None:
    """The reduced-precision dtype to autocast with on ``device``.

    Args:
        device: Target device.
        cpu_bf16: Use bfloat16 on CPU too (≈1.7× faster here, quality unchecked).

    Returns:
        ``torch.bfloat16`` on CUDA when supported, else ``torch.float16``; None (full fp32) on
        CPU and MPS unless ``cpu_bf16``.
    """
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16:
        return torch.bfloat16
    return None


def empty_device_cache(device: torch.device | None) -> None:
    """Return the memory torch's caching allocator keeps on ``device`` (CUDA, MPS)."""
    import torch

    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device is not None and device.type == "mps" and mps_available():
        torch.mps.empty_cache()


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a device (or host) out-of-memory error raised by torch."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


@contextlib.contextmanager
def oom_as_error(what: str, *, device: torch.device | None = None) -> Iterator[None]:
    """Re-raise torch out-of-memory errors as :class:`OutOfMemoryError` with advice.

    Args:
        what: The work being done, for the message (e.g. ``"generating S1GRD, LULC"``).
        device: Device whose cache is emptied after a failure.

    Raises:
        OutOfMemoryError: the device ran out of memory inside the block.
    """
    try:
        yield
    except OutOfMemoryError:
        raise
    except BaseException as err:
        if not is_out_of_memory(err):
            raise
        empty_device_cache(device)
        where = f" on {device}" if device is not None else ""
        raise OutOfMemoryError(
            f"Out of memory{where} while {what}: lower the chip batch size, pick a smaller "
            f"model size, or ask for fewer outputs at once ({err})."
        ) from err

"""Chip batches that fit the device: a size chosen from free GPU memory, halved on OOM.

:class:`AdaptiveBatches` wraps any chip function (``fn(batch, indices) -> outputs``, as
:func:`inference.tiling.tiled_apply` calls it) and runs each batch in parts of at most
``limit`` chips. When a part runs out of memory, the limit is halved, the device cache
emptied and the part retried; the smaller limit is kept for the rest of the run. Only a
single chip that does not fit is an error (:class:`OutOfMemoryError`, with advice).

Changing which chips share a model call changes their random samples (seeds are per call),
so a run that had to shrink is reproducible only with the same device memory; the limit in
use is in :attr:`AdaptiveBatches.limit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inference.errors import OutOfMemoryError

logger = logging.getLogger(__name__)

#: Rough device memory one 224² chip needs per generated output (bf16 activations of base,
#: plus the diffusion decoder's): a guess until bench/gpu.sh measures it.
BYTES_PER_CHIP_OUTPUT = 384 * 2**20
#: Share of the free memory a batch may plan to use.
FREE_MEMORY_SHARE = 0.7


def batch_size_for_memory(
    free_bytes: int, requested: int, *, outputs: int = 1, chip: int = 224
) -> int:
    """The chip batch that fits ``free_bytes`` (at least 1, at most ``requested``)."""
    per_chip = BYTES_PER_CHIP_OUTPUT * max(1, outputs) * (chip / 224) ** 2
    fits = int(free_bytes * FREE_MEMORY_SHARE // per_chip)
    return max(1, min(int(requested), fits))


def free_device_memory(device: Any) -> int | None:
    """Free bytes on a CUDA device, None elsewhere."""
    import torch

    if getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


class AdaptiveBatches:
    """Run a chip function in parts that fit; halve the part size on out-of-memory.

    Args:
        fn: ``fn(batch [B, ...], indices) -> [B, ...]``.
        limit: Initial maximum chips per call (None: the whole batch).
        on_oom: Called after an out-of-memory error, before the retry (e.g. empty a cache).
        is_oom: Whether an exception is an out-of-memory error.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray, Sequence[int]], np.ndarray],
        *,
        limit: int | None = None,
        on_oom: Callable[[], None] | None = None,
        is_oom: Callable[[BaseException], bool] | None = None,
    ) -> None:
        from inference.devices import is_out_of_memory

        self.fn = fn
        self.limit = limit
        self.on_oom = on_oom
        self.is_oom = is_oom or is_out_of_memory
        self.halvings = 0

    def __call__(self, batch: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        """Outputs for every chip of ``batch``, in order."""
        parts: list[np.ndarray] = []
        start = 0
        while start < len(batch):
            size = min(self.limit or len(batch), len(batch) - start)
            try:
                out = self.fn(batch[start : start + size], list(indices[start : start + size]))
            except Exception as err:
                if isinstance(err, OutOfMemoryError) and err.__cause__ is not None:
                    cause: BaseException = err.__cause__
                else:
                    cause = err
                if not (isinstance(err, OutOfMemoryError) or self.is_oom(cause)):
                    raise
                if self.on_oom is not None:
                    self.on_oom()
                if size == 1:
                    raise OutOfMemoryError(
                        "Out of memory with a single chip: pick a smaller model size, fewer "
                        f"outputs at once, or a smaller chip ({cause})."
                    ) from err
                self.limit = size // 2
                self.halvings += 1
                logger.warning("out of memory with %d chips: retrying with %d", size,
                               self.limit)
                continue
            parts.append(np.asarray(out))
            start += size
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

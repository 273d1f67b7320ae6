"""Where chip batches run: in this process (default) or on a Ray cluster (``RAY_ADDRESS``).

An executor turns an iterator of chip batches into an iterator of results, *in order*, so the
blending in :mod:`inference.tiling` and the per-batch seeds give the same bytes wherever the
chips ran. Cancellation is checked by the batch iterator itself: an executor stops submitting
as soon as pulling the next batch raises.

Ray is an optional extra (``pip install terralens[ray]``); it is imported only when a
:class:`RayExecutor` runs. The chip function is shipped to the workers by pickling, so it must
be picklable; :class:`inference.generate.ChipGenerator` is, and re-loads its model once per
worker process from its spec.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from inference.errors import InvalidRequestError

BatchFn = Callable[[np.ndarray, Sequence[int]], np.ndarray]


class Executor(Protocol):
    """Runs ``fn`` over batches and yields the results in the order of the batches."""

    def map_batches(
        self, fn: BatchFn, batches: Iterable[tuple[np.ndarray, Sequence[int]]]
    ) -> Iterator[np.ndarray]:
        """Yield ``fn(batch, indices)`` for each batch, in order."""
        ...


class InProcessExecutor:
    """Runs every batch in the calling thread, one after the other (the default)."""

    def map_batches(
        self, fn: BatchFn, batches: Iterable[tuple[np.ndarray, Sequence[int]]]
    ) -> Iterator[np.ndarray]:
        """Yield ``fn(batch, indices)`` for each batch, lazily, in order."""
        for batch, indices in batches:
            yield fn(batch, indices)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise InvalidRequestError(
            "RAY_ADDRESS is set but the 'ray' package is not installed: install the optional "
            "extra (pip install 'terralens[ray]') or unset RAY_ADDRESS to run in-process."
        ) from err
    return ray


class RayExecutor:
    """Runs batches as Ray tasks on a cluster, a bounded number in flight.

    Args:
        address: Ray cluster address (``RAY_ADDRESS``), e.g. ``ray://head:10001`` or ``auto``.
        num_gpus: GPUs reserved per task (1 on GPU clusters, 0 on CPU ones).
        max_in_flight: Batches submitted ahead of the one being collected (bounds memory).
    """

    def __init__(self, address: str, *, num_gpus: float = 0, max_in_flight: int = 8) -> None:
        if max_in_flight < 1:
            raise InvalidRequestError(f"max_in_flight must be ≥ 1, got {max_in_flight!r}.")
        self.address = address
        self.num_gpus = num_gpus
        self.max_in_flight = max_in_flight

    def map_batches(
        self, fn: BatchFn, batches: Iterable[tuple[np.ndarray, Sequence[int]]]
    ) -> Iterator[np.ndarray]:
        """Submit batches to the cluster and yield their results in submission order."""
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        remote_call = ray.remote(num_gpus=self.num_gpus)(_call)
        fn_ref = ray.put(fn)
        pending: deque[Any] = deque()
        try:
            for batch, indices in batches:
                pending.append(remote_call.remote(fn_ref, batch, list(indices)))
                if len(pending) >= self.max_in_flight:
                    yield ray.get(pending.popleft())
            while pending:
                yield ray.get(pending.popleft())
        finally:
            for ref in pending:  # cancelled or failed: do not leave work behind
                ray.cancel(ref)


def _call(fn: BatchFn, batch: np.ndarray, indices: list[int]) -> np.ndarray:
    return fn(batch, indices)


def executor_from_env(*, num_gpus: float | None = None) -> Executor:
    """:class:`RayExecutor` when ``RAY_ADDRESS`` is set, else :class:`InProcessExecutor`.

    Args:
        num_gpus: GPUs per Ray task; default 1 when this machine sees CUDA, else 0.

    Raises:
        InvalidRequestError: ``RAY_ADDRESS`` is set but ``ray`` is not installed.
    """
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if not address:
        return InProcessExecutor()
    _import_ray()
    if num_gpus is None:
        import torch

        num_gpus = 1 if torch.cuda.is_available() else 0
    return RayExecutor(address, num_gpus=num_gpus)

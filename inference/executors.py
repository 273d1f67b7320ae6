"""Where chip batches run: in this process (default) or on a Ray cluster (``RAY_ADDRESS``).

An executor turns an iterator of chip batches into an iterator of results, *in order*, so the
blending in :mod:`inference.tiling` and the per-batch seeds give the same bytes wherever the
chips ran. Cancellation is checked by the batch iterator itself: an executor stops submitting
as soon as pulling the next batch raises.

Ray is an optional extra (``pip install terralens[ray]``); it is imported only when a
:class:`RayExecutor` runs. The chip function is shipped to the workers by pickling, so it must
be picklable; :class:`inference.generate.ChipGenerator` is, and re-loads its model once per
worker process from its spec (``untrained`` weights are seeded, so every process builds the same
model). Before connecting, the head's port is tried with a time-out (``TERRALENS_RAY_TIMEOUT``,
10 s): ``ray.init`` on an address nobody answers waits for minutes. A task whose worker dies is
retried by Ray (:data:`TASK_RETRIES`); an error raised by our own code in a task comes back as
itself, any other loss as :class:`~inference.errors.ClusterError`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from inference.env import seconds_env
from inference.errors import ClusterError, InvalidRequestError, TerraLensError

BatchFn = Callable[[np.ndarray, Sequence[int]], np.ndarray]

#: Seconds to wait for the Ray head's port unless ``TERRALENS_RAY_TIMEOUT``.
DEFAULT_RAY_TIMEOUT_S = 10.0
#: Times Ray re-runs a task whose worker process died (a killed worker, a lost node).
TASK_RETRIES = 3


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
        ray = connect(self.address)
        remote_call = ray.remote(num_gpus=self.num_gpus, max_retries=TASK_RETRIES)(_call)
        fn_ref = ray.put(fn)
        pending: deque[Any] = deque()
        try:
            for batch, indices in batches:
                pending.append(remote_call.remote(fn_ref, batch, list(indices)))
                if len(pending) >= self.max_in_flight:
                    yield _result(ray, pending.popleft())
            while pending:
                yield _result(ray, pending.popleft())
        finally:
            for ref in pending:  # cancelled or failed: do not leave work behind
                ray.cancel(ref)


def _result(ray: Any, ref: Any) -> np.ndarray:
    """``ray.get(ref)``; our own errors as themselves, a lost task as :class:`ClusterError`."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, TerraLensError):
            raise cause from None
        first = str(cause or err).strip().splitlines()
        raise ClusterError(f"A chip batch failed on the Ray cluster: "
                           f"{first[-1] if first else type(err).__name__}") from err
    except ray.exceptions.RayError as err:
        raise ClusterError(f"The Ray cluster lost a chip batch ({type(err).__name__}) after "
                           f"{TASK_RETRIES} retries: check its workers (ray status).") from err


def _head(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``ray://host:port``; None for ``auto``/``local``."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def connect(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (once per process).

    Raises:
        InvalidRequestError: ``ray`` is not installed, or a bad ``TERRALENS_RAY_TIMEOUT``.
        ClusterError: nothing answers at the address, or Ray refuses the connection.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    timeout_s = seconds_env("TERRALENS_RAY_TIMEOUT", DEFAULT_RAY_TIMEOUT_S)
    head = _head(address)
    if head is not None:
        try:
            socket.create_connection(head, timeout=timeout_s).close()
        except OSError as err:
            raise ClusterError(
                f"No Ray cluster answers at {address} within {timeout_s:g} s ({err}): start it "
                "(ray start --head) or unset RAY_ADDRESS to run in this process."
            ) from err
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 logging_level=logging.WARNING)
        _JOINED["summary"] = _summary(ray)
    except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError …
        raise ClusterError(f"Could not join the Ray cluster at {address}: {err}") from err
    return ray


def cluster_summary() -> str | None:
    """``"2 CPUs, 1 GPU on 1 node"``: the Ray cluster this process joined, as it was when it
    joined; None before (nothing here goes to the network: a run joins when it starts)."""
    return _JOINED.get("summary")


def disconnect() -> None:
    """Leave the Ray cluster this process joined, if any (the next run joins again), and forget
    what was learnt of it."""
    _JOINED.clear()
    try:
        import ray
    except ImportError:
        return
    ray.shutdown()


def _summary(ray: Any) -> str:
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    return (f"{cpus} CPU{'s' * (cpus != 1)}, {gpus} GPU{'s' * (gpus != 1)} on {nodes} "
            f"node{'s' * (nodes != 1)}")


#: What :func:`connect` learnt of the cluster it joined (``summary``).
_JOINED: dict[str, str] = {}


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

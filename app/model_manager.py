"""Models held once per process, shared by every job on the device, never unloaded in use.

A :class:`ModelKey` names a model by what it *is* (kind, size, outputs, checkpoint, weights,
device) — not by how a job calls it: diffusion timesteps are a per-call argument, so changing
them never reloads a model. :meth:`ModelManager.use` hands out a model for the duration of a
``with`` block and counts its users; loads and evictions happen under the device lock
(:data:`inference.devices.DEVICE_LOCK`). Idle models (no user) are evicted, least recently used
first, before another is loaded beyond :attr:`ModelManager.capacity`, and all of them when a
load runs out of device memory; a model in use is never unloaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from inference.devices import DEVICE_LOCK
from inference.errors import OutOfMemoryError, RunCancelledError
from inference.modalities import Modality
from inference.phases import PhaseFn
from inference.weights import BytesFn

logger = logging.getLogger("terralens.models")

GENERATION = "generation"
GEOLOCATION = "geolocation"
TIM = "tim"
#: Seconds between checks of ``cancel`` while waiting for a model slot.
WAIT_POLL_S = 0.5


@dataclass(frozen=True)
class ModelKey:
    """What a loaded model is (its identity in the manager).

    Attributes:
        kind: ``generation``, ``geolocation`` or ``tim``.
        size: TerraMind size (generation, geolocation).
        outputs: Generated modalities in generation order (generation).
        checkpoint: Checkpoint path or hub repo id (tim).
        weights: Weight source (``hub``, a folder, ``untrained``).
        device: Device name as configured (``auto``, ``cpu``, ``cuda:0``...).
    """

    kind: str
    size: str = ""
    outputs: tuple[str, ...] = ()
    checkpoint: str = ""
    weights: str = ""
    device: str = "auto"

    def describe(self) -> str:
        """``"TerraMind tiny (LULC, NDVI)"`` and the like, for progress messages."""
        if self.kind == TIM:
            return f"TiM checkpoint {self.checkpoint}"
        what = ", ".join(self.outputs) if self.kind == GENERATION else "coordinates"
        return f"TerraMind {self.size} ({what})"


def load_model(key: ModelKey, *, progress: PhaseFn | None = None,
               on_bytes: BytesFn | None = None) -> Any:
    """Build the model a key names (the manager's default loader).

    Args:
        key: Which model.
        progress: Called with a message as each build phase starts.
        on_bytes: Called as weight files download (file name, bytes done, total or None).

    Raises:
        WeightsUnavailableError: weights are missing (the message says how to provide them).
        OutOfMemoryError: the model does not fit on the device.
        CheckpointError: a TiM checkpoint cannot be read.
    """
    if key.kind == GENERATION:
        from inference.build import load_generation_model

        return load_generation_model(key.size, tuple(Modality(o) for o in key.outputs),
                                     weights=key.weights, device=key.device,
                                     progress=progress, on_bytes=on_bytes)
    if key.kind == GEOLOCATION:
        from inference.devices import resolve_device
        from inference.geolocate import load_geolocation_model

        return load_geolocation_model(key.size, weights=key.weights,
                                      device=resolve_device(key.device), progress=progress,
                                      on_bytes=on_bytes)
    if key.kind == TIM:
        from inference import tim_checkpoints

        return tim_checkpoints.load_tim_checkpoint(key.checkpoint, device=key.device)
    raise ValueError(f"unknown model kind {key.kind!r}")


def _call_loader(loader: Callable[..., Any], key: ModelKey, report: dict[str, Any]) -> Any:
    """``loader(key, **report)``, or ``loader(key)`` for a loader that takes only the key."""
    import inspect

    try:
        params = inspect.signature(loader).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: the plain call
        return loader(key)
    takes = {p.name for p in params} | ({*report} if any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params) else set())
    return loader(key, **{k: v for k, v in report.items() if k in takes})


def _unload(model: Any) -> None:
    unload = getattr(model, "unload", None)
    if callable(unload):
        unload()


@dataclass
class _Entry:
    model: Any
    users: int = 0
    last_used: float = 0.0


class ModelManager:
    """The process's models, by :class:`ModelKey`, with reference counts.

    Args:
        loader: Builds a model: ``loader(key, progress=..., on_bytes=...)``, or ``loader(key)``
            for a loader that reports nothing (default: this module's :func:`load_model`,
            looked up at each load).
        capacity: Models kept loaded at once (idle ones beyond it are evicted before a load).
        device_lock: Held around loads and evictions.
    """

    def __init__(self, loader: Callable[..., Any] | None = None, *, capacity: int = 1,
                 device_lock: Any = DEVICE_LOCK) -> None:
        self._loader = loader
        self.capacity = max(1, int(capacity))
        self._device_lock = device_lock
        self._models: dict[ModelKey, _Entry] = {}
        self._cond = threading.Condition()
        self._loading = False
        #: Models built so far (tests count reloads with it).
        self.builds = 0
        #: Models evicted so far.
        self.evictions = 0
        #: Seconds the last build of each model took (the throughput store learns from it).
        self.load_seconds: dict[ModelKey, float] = {}

    def loaded(self) -> list[ModelKey]:
        """Keys of the models held now."""
        with self._cond:
            return list(self._models)

    def users(self, key: ModelKey) -> int:
        """How many ``use`` blocks hold this model now."""
        with self._cond:
            entry = self._models.get(key)
            return entry.users if entry else 0

    @contextmanager
    def use(self, key: ModelKey, *, on_load: Callable[[ModelKey], None] | None = None,
            cancel: Callable[[], bool] | None = None, progress: PhaseFn | None = None,
            on_bytes: BytesFn | None = None) -> Iterator[Any]:
        """The model for ``key``, loaded when needed and held until the block ends.

        Args:
            key: Which model.
            on_load: Called before a model is built (progress: "loading weights").
            cancel: Checked while waiting for a free slot; True raises RunCancelledError.
            progress: Passed to the loader: a message as each build phase starts.
            on_bytes: Passed to the loader: bytes of weight files as they download.

        Raises:
            WeightsUnavailableError, OutOfMemoryError, CheckpointError: from the loader.
            RunCancelledError: cancelled while waiting.
        """
        model = self._acquire(key, on_load, cancel, {"progress": progress, "on_bytes": on_bytes})
        try:
            yield model
        finally:
            with self._cond:
                entry = self._models.get(key)
                if entry is not None:
                    entry.users -= 1
                    entry.last_used = time.monotonic()
                self._cond.notify_all()

    def _acquire(self, key: ModelKey, on_load: Callable[[ModelKey], None] | None,
                 cancel: Callable[[], bool] | None, report: dict[str, Any]) -> Any:
        with self._cond:
            while True:
                entry = self._models.get(key)
                if entry is not None:
                    entry.users += 1
                    return entry.model
                if not self._loading:
                    self._evict_idle(keep=self.capacity - 1)
                    if len(self._models) < self.capacity:
                        self._loading = True
                        break
                if cancel is not None and cancel():
                    raise RunCancelledError("cancelled while waiting for the device")
                self._cond.wait(WAIT_POLL_S)
        try:
            started = time.monotonic()
            model = self._build(key, on_load, report)
            self.load_seconds[key] = time.monotonic() - started
        finally:
            with self._cond:
                self._loading = False
                self._cond.notify_all()
        with self._cond:
            self._models[key] = _Entry(model, users=1, last_used=time.monotonic())
            return model

    def _build(self, key: ModelKey, on_load: Callable[[ModelKey], None] | None,
               report: dict[str, Any]) -> Any:
        if on_load is not None:
            on_load(key)
        logger.info("loading %s (weights %s, %s)", key.describe(), key.weights, key.device)
        try:
            with self._device_lock:
                self.builds += 1
                return _call_loader(self._loader or load_model, key, report)
        except OutOfMemoryError:
            with self._cond:
                freed = self._evict_idle(keep=0)
            if not freed:
                raise
            logger.info("out of memory loading %s: evicted %d idle models, retrying",
                        key.describe(), freed)
            with self._device_lock:
                self.builds += 1
                return _call_loader(self._loader or load_model, key, report)

    def _evict_idle(self, *, keep: int) -> int:
        """Unload idle models, least recently used first, until at most ``keep`` remain.
        Called with ``self._cond`` held."""
        idle = sorted((k for k, e in self._models.items() if e.users == 0),
                      key=lambda k: self._models[k].last_used)
        freed = 0
        for key in idle:
            if len(self._models) <= max(0, keep):
                break
            entry = self._models.pop(key)
            logger.info("evicting idle model %s", key.describe())
            with self._device_lock:
                _unload(entry.model)
            self.evictions += 1
            freed += 1
        return freed

    def clear(self) -> None:
        """Unload every idle model (models in use stay until their users finish)."""
        with self._cond:
            self._evict_idle(keep=0)

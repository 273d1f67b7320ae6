"""Models held once per process (``st.cache_resource``) and the device lock around model calls.

One generation model is kept per process, shared by every session; asking for another spec
(size, outputs, timesteps, weights, device) releases the previous one first (``max_entries=1``
with ``on_release`` unloading it), so switching sizes never holds two models in GPU memory.

Device work is serialised with :data:`inference.models.DEVICE_LOCK`: :func:`device_slot` waits
for it (telling the analyst when another session is using the device) and holds it for the
duration of a model call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import streamlit as st

from app.settings import Settings
from inference.errors import RunCancelledError

if TYPE_CHECKING:
    from inference.models import GenerationModel

logger = logging.getLogger("terralens.models")

#: Seconds between checks while waiting for another session's model call to finish.
LOCK_POLL_S = 0.5


def _release(model: Any) -> None:
    """Unload an evicted model (frees its memory, CUDA cache included)."""
    unload = getattr(model, "unload", None)
    if callable(unload):
        logger.info("releasing model %s", getattr(model, "registry_name", model))
        unload()


@st.cache_resource(max_entries=1, show_spinner=False, on_release=_release)
def _generation_model(
    size: str, outputs: tuple[str, ...], timesteps: int, weights: str, device: str
) -> GenerationModel:
    from inference.models import load_generation_model

    logger.info("loading TerraMind %s for %s (weights %s, %s)", size, outputs, weights, device)
    return load_generation_model(
        size, outputs, weights=weights, device=device, timesteps=timesteps
    )


def generation_model(
    size: str, outputs: tuple[str, ...], timesteps: int, *, settings: Settings
) -> GenerationModel:
    """The cached generation model for this spec (built on first use, then shared).

    Args:
        size: tiny, small, base or large.
        outputs: Output modality names, in generation order.
        timesteps: Diffusion steps.
        settings: Supplies the weight source and device.

    Raises:
        WeightsUnavailableError: weights are missing (the message says how to provide them).
        OutOfMemoryError: the model does not fit on the device.
        InvalidRequestError: a bad size, output or timesteps value.
    """
    return _generation_model(
        str(size), tuple(str(o) for o in outputs), int(timesteps), settings.weights,
        settings.device,
    )


def model_provider(settings: Settings) -> Callable[..., GenerationModel]:
    """A ``model_provider(size, outputs, timesteps)`` for :mod:`app.pipeline`, bound to settings."""

    def provide(size: Any, outputs: Any, timesteps: int) -> GenerationModel:
        names = tuple(str(getattr(o, "value", o)) for o in outputs)
        return generation_model(str(getattr(size, "value", size)), names, timesteps,
                                settings=settings)

    return provide


def clear_models() -> None:
    """Drop every cached model (tests, or after a configuration change)."""
    _generation_model.clear()
    _geolocation_model.clear()


@contextmanager
def device_slot(
    *,
    waiting: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """Hold the device lock for one model call; wait for it when another session has it.

    Args:
        waiting: Called with the seconds waited so far while another session holds the lock.
        cancel: Checked while waiting; True stops with :class:`RunCancelledError`.

    Raises:
        RunCancelledError: ``cancel()`` returned True while waiting.
    """
    from inference.models import DEVICE_LOCK

    started = time.monotonic()
    while not DEVICE_LOCK.acquire(timeout=LOCK_POLL_S):
        if cancel is not None and cancel():
            raise RunCancelledError("cancelled while waiting for another session's model run")
        if waiting is not None:
            waiting(time.monotonic() - started)
    try:
        yield
    finally:
        DEVICE_LOCK.release()


@st.cache_resource(max_entries=1, show_spinner=False, on_release=_release)
def _geolocation_model(size: str, weights: str, device: str) -> Any:
    from inference.geolocate import load_geolocation_model

    logger.info("loading TerraMind %s for geolocation (weights %s, %s)", size, weights, device)
    return load_geolocation_model(size, weights=weights, device=device)


def geolocation_model(size: str, *, settings: Settings) -> Any:
    """The cached coordinate-generation model (S2L2A and LULC conditions) of this size.

    Raises:
        WeightsUnavailableError: weights are missing (the message says how to provide them).
        OutOfMemoryError: the model does not fit on the device.
    """
    return _geolocation_model(str(size), settings.weights, settings.device)

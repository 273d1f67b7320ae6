"""Monte-Carlo geolocation: where on Earth could this image (or this land cover) be?

TerraMind can generate the ``coords`` modality — a short text ``"lat=<deg> lon=<deg>"`` — from
a Sentinel-2 L2A chip or a LULC class map. Each generation is one random draw, so a batch of
``n`` copies of the same condition gives ``n`` independent samples of the model's belief; their
spread is the uncertainty. Temperature / top-p / top-k shape the token sampler; the seed makes a
run reproducible (per batch, as in :mod:`inference.generate`).

This module loads the model and samples. The rest lives beside it (import each name from the
module that defines it):

* :mod:`inference.geolocate_conditions` — the condition chip and :func:`lulc_prompt`;
* :mod:`inference.geolocate_samples` — strict parsing of the decoded texts (invalid samples are
  counted with their reason, never returned as points) and :class:`GeolocationResult`;
* :mod:`inference.geolocate_summary` — the result's summary (haversine distances), GeoJSON and CSV.

Untrained weights produce mostly invalid samples (their vocabulary is a blank stand-in) and the
result says so.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.build import build_terramind
from inference.devices import oom_as_error
from inference.errors import InvalidRequestError, RunCancelledError
from inference.generate import batch_seed
from inference.geolocate_conditions import prepare_condition
from inference.geolocate_samples import GeolocationResult, parse_samples
from inference.modalities import Modality
from inference.models import LoadedModel, ModelSize, parse_model_size, terratorch_version
from inference.phases import PhaseFn
from inference.tiling import CancelFn, ProgressFn
from inference.tim import seeded_rng
from inference.weights import BytesFn

if TYPE_CHECKING:
    import torch


@dataclass
class GeolocationModel(LoadedModel):
    """A ``terramind_v1_*_generate`` model with ``coords`` as output.

    Attributes:
        conditions: Modalities it accepts as the condition (S2L2A and/or LULC).
    """

    conditions: tuple[Modality, ...] = ()


def load_geolocation_model(
    size: ModelSize | str = "base",
    *,
    weights: str,
    device: torch.device | str = "auto",
    conditions: Sequence[Modality | str] = (Modality.S2L2A, Modality.LULC),
    progress: PhaseFn | None = None,
    on_bytes: BytesFn | None = None,
) -> GeolocationModel:
    """Build TerraMind for coordinate generation from S2L2A and/or LULC conditions.

    Args:
        size: tiny, small, base or large.
        weights: ``hub``, a local directory, or ``untrained``.
        device: ``torch.device`` or a name for :func:`inference.devices.resolve_device`.
        conditions: Input modalities the model accepts (one model serves both by default).
        progress: Called with a message as each build phase starts.
        on_bytes: Called as weight files download (file name, bytes done, total or None).

    Raises:
        InvalidRequestError: bad size or condition.
        WeightsUnavailableError: weights missing (the model, LULC tokenizer, coords vocabulary).
    """
    model_size = parse_model_size(size)
    conds: list[Modality] = []
    for raw in conditions:
        try:
            mod = Modality(str(raw).strip().upper())
        except ValueError as err:
            raise InvalidRequestError(f"Unknown condition modality {raw!r}.") from err
        if mod not in (Modality.S2L2A, Modality.LULC):
            raise InvalidRequestError(
                f"Geolocation is conditioned on S2L2A or LULC, got {raw!r}."
            )
        if mod not in conds:
            conds.append(mod)
    if not conds:
        raise InvalidRequestError("Give at least one condition modality (S2L2A or LULC).")
    loaded = build_terramind(
        f"terramind_v1_{model_size.value}_generate", weights=weights, device=device,
        modalities=[m.value for m in conds], output_modalities=["coords"],
        standardize=True, timesteps=1, progress=progress, on_bytes=on_bytes,
    )
    return GeolocationModel(
        module=loaded.module, registry_name=loaded.registry_name, device=loaded.device,
        weights_label=loaded.weights_label, untrained=loaded.untrained, conditions=tuple(conds),
        weight_files=loaded.weight_files, load_phases=loaded.load_phases, speed=loaded.speed,
    )


# ----------------------------------------------------------------------------------------------
# Sampling


@contextlib.contextmanager
def _recording_tokens(tokenizer: Any) -> Iterator[list[Any]]:
    """Record the generated coords token ids each time the model decodes them."""
    records: list[Any] = []
    original = tokenizer.decode_text

    def decode_text(mod_dict: dict[str, Any], key: str = "coords") -> Any:
        records.append(mod_dict[key]["tensor"].detach().cpu().clone())
        return original(mod_dict, key)

    tokenizer.decode_text = decode_text
    try:
        yield records
    finally:
        del tokenizer.decode_text  # back to the class method


def _check_number(name: str, value: Any, low: float, high: float, *, integer: bool) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not (
        math.isfinite(float(value)) and low <= value <= high
    ):
        kind = "an integer" if integer else "a number"
        raise InvalidRequestError(f"{name} must be {kind} in {low}..{high}, got {value!r}.")


def sample_locations(
    model: GeolocationModel,
    condition: Any,
    *,
    n: int = 64,
    temperature: float = 1.0,
    top_p: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> GeolocationResult:
    """Draw ``n`` coordinate samples from TerraMind given an image or a land-cover map.

    Args:
        model: From :func:`load_geolocation_model`, accepting the condition's modality.
        condition: See :func:`prepare_condition` (S2L2A DataArray or LULC class map).
        n: Samples to draw (1..1024).
        temperature: Sampling temperature (> 0; higher spreads the samples).
        top_p: Nucleus sampling threshold (0..1; 0 disables it).
        top_k: Keep only the k most likely tokens (0 disables it).
        seed: Seed; the same seed, parameters and batch size give the same samples.
        batch_size: Copies of the condition per model call (lower it on out-of-memory).
        progress: ``progress(samples_done, n)`` after each batch.
        cancel: Return True to stop with :class:`RunCancelledError`.

    Returns:
        The valid samples, the invalid count with reasons, and the parameters.

    Raises:
        InvalidRequestError: bad parameters or condition, or a model without that condition.
        OutOfMemoryError: lower ``batch_size``.
        RunCancelledError: cancelled.
    """
    import torch

    _check_number("n", n, 1, 1024, integer=True)
    _check_number("temperature", temperature, 1e-3, 10.0, integer=False)
    _check_number("top_p", top_p, 0.0, 1.0, integer=False)
    _check_number("top_k", top_k, 0, 30_000, integer=True)
    _check_number("seed", seed, 0, 2**63 - 1, integer=True)
    _check_number("batch_size", batch_size, 1, 256, integer=True)
    module = model.module
    if module is None:
        raise InvalidRequestError("The model was unloaded; load it again before sampling.")
    mod, chip, info = prepare_condition(condition)
    if mod not in model.conditions:
        raise InvalidRequestError(
            f"This model was built for {[m.value for m in model.conditions]} conditions, "
            f"not {mod.value}: load one with conditions=[{mod.value!r}]."
        )
    tokenizer = module.tokenizer["coords"]
    x = torch.from_numpy(chip).to(model.device)
    texts: list[str] = []
    saved = (module.temps, module.top_p, module.top_k)
    module.temps, module.top_p, module.top_k = float(temperature), float(top_p), int(top_k)
    try:
        with _recording_tokens(tokenizer) as records, warnings.catch_warnings():
            # terratorch warns once per unparsable sample; they are counted here instead.
            warnings.filterwarnings("ignore", message="Coordinate generation did not work")
            for start in range(0, n, batch_size):
                if cancel is not None and cancel():
                    raise RunCancelledError(
                        f"Geolocation cancelled after {start} of {n} samples."
                    )
                k = min(batch_size, n - start)
                batch = x.expand(k, *x.shape[1:]).contiguous()
                with seeded_rng(batch_seed(seed, start)), torch.no_grad(), oom_as_error(
                    f"sampling {k} locations", device=model.device
                ):
                    module({mod.value: batch})
                ids = records.pop()
                for row in ids[:, :2].tolist():
                    texts.append(tokenizer.text_tokenizer.decode(row, skip_special_tokens=False))
                if progress is not None:
                    progress(start + k, n)
    finally:
        module.temps, module.top_p, module.top_k = saved
    samples, reasons = parse_samples(texts)
    params: dict[str, Any] = info | {
        "n": int(n), "temperature": float(temperature), "top_p": float(top_p),
        "top_k": int(top_k), "seed": int(seed), "batch_size": int(batch_size),
        "model": model.registry_name, "weights": model.weights_label,
        "weights_files": model.weight_files_json(),
        "untrained": bool(model.untrained), "terratorch_version": terratorch_version(),
    }
    return GeolocationResult(samples=samples, invalid=sum(reasons.values()), params=params,
                             invalid_reasons=reasons, raw=tuple(texts))


__all__ = ["GeolocationModel", "load_geolocation_model", "sample_locations"]

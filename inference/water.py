"""Zero-shot water through TerraMind's Thinking-in-Modalities chain.

TerraMind first "thinks" in land cover: it generates LULC from the Sentinel-2 window (the
``[G] LULC`` layer, kept as its own layer), and water is read off that intermediate modality —
the pixels whose most likely class is water (``LULC_WATER``), with the class probability as the
confidence. No fine-tuned weights are needed.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from inference.errors import InvalidRequestError
from inference.executors import Executor
from inference.generate import LULC_PROB, GenerationTask, generate
from inference.modalities import LULC_CLASSES, LULC_WATER, Modality
from inference.tiling import CancelFn, ProgressFn

#: Value written where the input had no data (class maps are uint8).
WATER_NODATA = 255
WATER_CLASSES = ("not water", "water")


def water_from_lulc(lulc: xr.DataArray, lulc_prob: xr.DataArray) -> dict[str, xr.DataArray]:
    """``WATER`` and ``WATER_CONFIDENCE`` predictions from a generated LULC and its probabilities.

    Args:
        lulc: ``[1, y, x]`` uint8 class indices (generated LULC).
        lulc_prob: ``[10, y, x]`` float32 class probabilities on the same grid (NaN = no data).

    Returns:
        ``{"WATER": uint8 (1 water, 0 not, 255 no data), "WATER_CONFIDENCE": float32 P(water)}``
        on the grid of ``lulc``, marked ``kind="prediction"`` and ``derived_from="LULC"``.

    Raises:
        InvalidRequestError: the arrays are not a LULC map and its probabilities on one grid.
    """
    if lulc_prob.sizes.get("band") != len(LULC_CLASSES):
        raise InvalidRequestError(
            f"LULC probabilities need {len(LULC_CLASSES)} bands, got {lulc_prob.sizes!r}"
        )
    if lulc.shape[1:] != lulc_prob.shape[1:]:
        raise InvalidRequestError(
            f"LULC {lulc.shape!r} and its probabilities {lulc_prob.shape!r} differ in size"
        )
    probs = lulc_prob.values
    valid = np.isfinite(probs).all(axis=0)
    water = np.where(valid, lulc.values[0] == LULC_WATER, WATER_NODATA).astype(np.uint8)
    confidence = np.where(valid, probs[LULC_WATER], np.nan).astype(np.float32)
    keep = {k: v for k, v in lulc.attrs.items()
            if k not in {"modality", "units", "long_name", "class_names", "kind", "synthetic"}}
    base: dict[str, Any] = keep | {"kind": "prediction", "synthetic": False,
                                   "derived_from": Modality.LULC.value,
                                   "method": "zero-shot: argmax of generated LULC == water"}
    water_da = lulc.copy(data=water[None]).assign_coords(band=["WATER"])
    water_da.attrs = base | {"modality": "WATER", "units": "class",
                             "long_name": "Surface water (zero-shot from generated LULC)",
                             "class_names": json.dumps(list(WATER_CLASSES))}
    conf_da = lulc.copy(data=confidence[None]).assign_coords(band=["WATER_CONFIDENCE"])
    conf_da.attrs = base | {"modality": "WATER_CONFIDENCE", "units": "probability",
                            "long_name": "Probability of surface water"}
    return {"WATER": water_da, "WATER_CONFIDENCE": conf_da}


def zero_shot_water(
    model: Any,
    s2: xr.DataArray,
    *,
    seed: int = 0,
    chip: int = 224,
    overlap: int = 32,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    aoi_mask: np.ndarray | None = None,
    executor: Executor | None = None,
) -> dict[str, xr.DataArray]:
    """Map surface water with no fine-tuning: S2L2A → generated LULC → water.

    Args:
        model: A generation model built for ``(LULC,)``.
        s2: The S2L2A window (raster contract).
        seed: Random seed of the generation.
        chip: Chip size of the tiled inference.
        overlap: Overlap between chips.
        batch_size: Chips per forward pass.
        progress: ``progress(done, total)``.
        cancel: Returns True to stop.
        aoi_mask: Optional ``[y, x]`` bool, True inside the AOI (see :func:`generate`).
        executor: Where the LULC chips run (default in-process; see :mod:`inference.executors`).

    Returns:
        ``LULC`` and ``LULC_PROB`` ([G], the intermediate "thought") plus ``WATER`` and
        ``WATER_CONFIDENCE`` ([P]), all on the grid of ``s2``.
    """
    task = GenerationTask(outputs=(Modality.LULC,), timesteps=1, seed=seed, chip=chip,
                          overlap=overlap, batch_size=batch_size)
    generated = generate(model, s2, task, progress=progress, cancel=cancel,
                         executor=executor, aoi_mask=aoi_mask)
    return generated | water_from_lulc(generated[Modality.LULC.value], generated[LULC_PROB])

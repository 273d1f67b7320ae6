"""Geolocation conditions: what TerraMind is asked to place on Earth, as one model chip.

A condition is a Sentinel-2 L2A window (DN, bands as ``S2L2A_BANDS``) or a LULC class map; it is
centre-cropped (or resized, when smaller) to the ``CHIP`` × ``CHIP`` pixels the model sees.
:func:`lulc_prompt` builds a land-cover "prompt" with given class fractions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.errors import InvalidRequestError
from inference.modalities import CLASS_NODATA, LULC_CLASSES, S2L2A_BANDS, Modality

if TYPE_CHECKING:
    import xarray as xr

#: Side of the chip the model sees, pixels.
CHIP = 224


def lulc_prompt(
    composition: Mapping[int, float], size: int = CHIP, seed: int = 0, *, block: int = 16
) -> np.ndarray:
    """A land-cover class map with the given class fractions, in contiguous blocky patches.

    Args:
        composition: LULC class index → share, e.g. ``{6: 1.0}`` (bare ground) or
            ``{4: 0.6, 1: 0.4}`` (crops and water). Shares are normalised to sum to 1.
        size: Side in pixels (a multiple of ``block``).
        seed: Seed of the patch layout.
        block: Side of the square blocks the map is made of, pixels.

    Returns:
        ``[size, size]`` uint8 class indices; each class covers its share of the blocks
        (largest-remainder rounding, so shares are exact to one block).

    Raises:
        InvalidRequestError: unknown class, negative or all-zero shares, bad size.
    """
    if not composition:
        raise InvalidRequestError("Give at least one LULC class and its share.")
    for cls, share in composition.items():
        if isinstance(cls, bool) or not isinstance(cls, int | np.integer) or not (
            0 <= cls < len(LULC_CLASSES)
        ):
            raise InvalidRequestError(
                f"LULC class must be an index in 0..{len(LULC_CLASSES) - 1}, got {cls!r}."
            )
        if not isinstance(share, int | float) or not math.isfinite(share) or share < 0:
            raise InvalidRequestError(f"Share of class {cls} must be ≥ 0, got {share!r}.")
    total = float(sum(composition.values()))
    if total <= 0:
        raise InvalidRequestError(f"Class shares must not all be zero: {dict(composition)!r}.")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise InvalidRequestError(f"block must be a positive integer, got {block!r}.")
    if isinstance(size, bool) or not isinstance(size, int) or size < block or size % block:
        raise InvalidRequestError(f"size must be a multiple of block={block}, got {size!r}.")
    side = size // block
    n_blocks = side * side
    classes = sorted(composition)
    exact = np.array([composition[c] / total * n_blocks for c in classes])
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n_blocks - counts.sum()]] += 1
    # A smooth random field ranks the blocks; consecutive ranks share a class → patches.
    rng = np.random.default_rng(seed)
    field_ = rng.normal(size=(side, side))
    for _ in range(3):
        padded = np.pad(field_, 1, mode="edge")
        field_ = np.mean(
            [padded[i : i + side, j : j + side] for i in range(3) for j in range(3)], axis=0
        )
    ranks = np.argsort(field_.ravel(), kind="stable")
    labels = np.empty(n_blocks, dtype=np.uint8)
    labels[ranks] = np.repeat(np.array(classes, dtype=np.uint8), counts)
    grid = labels.reshape(side, side)
    return np.kron(grid, np.ones((block, block), dtype=np.uint8))


def _centre(array: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """Centre-crop ``[C, H, W]`` to CHIP, or resize when a side is shorter."""
    _, h, w = array.shape
    if h >= CHIP and w >= CHIP:
        r0, c0 = (h - CHIP) // 2, (w - CHIP) // 2
        note = "full chip" if (h, w) == (CHIP, CHIP) else f"centre {CHIP}x{CHIP} of {h}x{w}"
        return array[:, r0 : r0 + CHIP, c0 : c0 + CHIP], note
    import torch

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if mode == "nearest":
        out = torch.nn.functional.interpolate(t, size=(CHIP, CHIP), mode="nearest")
    else:
        out = torch.nn.functional.interpolate(
            t, size=(CHIP, CHIP), mode="bilinear", align_corners=False
        )
    return out[0].numpy(), f"resized from {h}x{w} to {CHIP}x{CHIP} (pixel size changed)"


def _centre_lonlat(da: xr.DataArray) -> list[float] | None:
    try:
        from pyproj import Transformer

        x = float(da.coords["x"].values[len(da.coords["x"]) // 2])
        y = float(da.coords["y"].values[len(da.coords["y"]) // 2])
        crs = da.rio.crs
        if crs is None:
            return None
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        return [round(lon, 6), round(lat, 6)]
    except (KeyError, ValueError, TypeError):
        return None


def prepare_condition(condition: Any) -> tuple[Modality, np.ndarray, dict[str, Any]]:
    """Turn a condition into one model chip.

    Args:
        condition: An S2L2A ``[band, y, x]`` DataArray (bands named as ``S2L2A_BANDS``; DN),
            or a LULC class map (``[y, x]`` / ``[1, y, x]`` integers 0..9, numpy or xarray).

    Returns:
        (modality, ``[1, C, 224, 224]`` float32 model input — DN or one-hot classes —,
        description for the result's parameters).

    Raises:
        InvalidRequestError: the condition is neither, or has no valid pixel.
    """
    import xarray as xr

    info: dict[str, Any] = {}
    if isinstance(condition, xr.DataArray):
        names = [str(b) for b in condition.coords["band"].values] if "band" in condition.coords \
            else []
        if all(b in names for b in S2L2A_BANDS):
            data = np.asarray(condition.sel(band=list(S2L2A_BANDS)).values, dtype=np.float32)
            valid = np.isfinite(data).all(axis=0)
            if not valid.any():
                raise InvalidRequestError("The Sentinel-2 condition has no valid pixel.")
            data = data.copy()
            for band in data:
                band[~np.isfinite(band)] = np.median(band[valid])
            chip, note = _centre(data, "bilinear")
            info = {"condition": Modality.S2L2A.value, "condition_window": note,
                    "condition_valid_share": round(float(valid.mean()), 4)}
            for key in ("scene_id", "datetime", "offset_applied"):
                if key in condition.attrs:
                    info[f"condition_{key}"] = condition.attrs[key]
            centre = _centre_lonlat(condition)
            if centre is not None:
                info["condition_centre_lonlat"] = centre
            return Modality.S2L2A, chip[None].astype(np.float32), info
        values = np.asarray(condition.values)
    elif isinstance(condition, np.ndarray):
        values = condition
    else:
        raise InvalidRequestError(
            "The condition must be an S2L2A DataArray or a LULC class map (numpy/xarray), got "
            f"{type(condition).__name__}."
        )
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or values.size == 0:
        raise InvalidRequestError(
            f"A LULC condition must be a [y, x] class map, got shape {values.shape!r}."
        )
    if not np.issubdtype(values.dtype, np.integer) and (
        not np.all(np.isfinite(values)) or not np.all(values == np.round(values))
    ):
        raise InvalidRequestError("A LULC condition must hold integer class indices 0..9.")
    classes = values.astype(np.int64)
    classes[classes == CLASS_NODATA] = 0  # a clipped class map's no data: the "No data" class
    if classes.min() < 0 or classes.max() >= len(LULC_CLASSES):
        raise InvalidRequestError(
            f"LULC classes must be in 0..{len(LULC_CLASSES) - 1}, got "
            f"{int(classes.min())}..{int(classes.max())}."
        )
    chip, note = _centre(classes[None].astype(np.float32), "nearest")
    chip_classes = np.rint(chip[0]).astype(np.int64)
    one_hot = (chip_classes[None] == np.arange(len(LULC_CLASSES))[:, None, None])
    shares = np.bincount(chip_classes.ravel(), minlength=len(LULC_CLASSES)) / chip_classes.size
    info = {
        "condition": Modality.LULC.value,
        "condition_window": note,
        "condition_classes": json.dumps(
            {LULC_CLASSES[i].name: round(float(s), 4) for i, s in enumerate(shares) if s > 0}
        ),
    }
    return Modality.LULC, one_hot[None].astype(np.float32), info


__all__ = ["CHIP", "lulc_prompt", "prepare_condition"]

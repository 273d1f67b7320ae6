"""TiM segmentation: fine-tuned TerraMind "Thinking in Modalities" checkpoints over any AOI.

Two ways to segment with TerraMind live in TerraLens:

* **Zero-shot water** (:func:`inference.water.zero_shot_water`): TerraMind generates land
  cover from Sentinel-2 and water is read off it.
* **Fine-tuned checkpoints** (:func:`segment` here; loading and input checks in
  :mod:`inference.tim_checkpoints`): a terratorch ``SemanticSegmentationTask``
  checkpoint whose backbone is ``terramind_v1_*_tim``. A TiM backbone first generates its TiM
  modality (e.g. LULC) as tokens from the inputs and encodes both; the decoder head then
  predicts the classes.

:func:`segment` standardises the inputs as the checkpoint expects, tiles the AOI with
:func:`inference.tiling.tiled_apply` (blended seams; class probabilities are blended, the argmax
taken afterwards) and returns georeferenced layers on exactly the input grid. Sentinel-2 inputs
are offset-corrected DN as the scene loader returns them; a checkpoint trained on data still
carrying the +1000 offset sees a 1000 DN shift.

The TiM intermediate: the tokens the backbone generated are caught on their way into the
encoder (a forward pre-hook on the TiM modality's embedding layer) and decoded with the
checkpoint's own tokenizer. For LULC this gives the ``TIM_LULC`` ``[G]`` layer — the land cover
the model "thought" before segmenting. Other TiM modalities (S1, DEM, NDVI) need a diffusion
decoder and are not decoded (the layers say so in ``tim_not_decoded``).
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.devices import autocast_dtype, oom_as_error
from inference.errors import CheckpointError, InvalidRequestError
from inference.generate import batch_seed
from inference.modalities import CLASS_NODATA, LULC_CLASSES, Modality
from inference.models import terratorch_version
from inference.tiling import CancelFn, ProgressFn, restrict_to_aoi, tiled_apply
from inference.tim_checkpoints import TimModel, check_inputs

if TYPE_CHECKING:
    import xarray as xr

PREDICTION = "PREDICTION"
PREDICTION_PROB = "PREDICTION_PROB"
#: Class value written where an input had no data.
PREDICTION_NODATA = CLASS_NODATA
#: Prefix of decoded TiM intermediate layers (``TIM_LULC``).
TIM_PREFIX = "TIM_"
#: Input attrs copied onto every output (provenance).
PROVENANCE_ATTRS = ("scene_id", "collection", "datetime", "offset_applied")


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, numpy and torch for TerraMind's samplers; restore afterwards.

    TerraMind has no seed argument: its token samplers draw from ``random`` and torch's global
    generator. The caller's RNG states are restored on exit.
    """
    import torch

    py, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------------
# Segmentation


def _stack_inputs(tim_model: TimModel, inputs: Mapping[Modality, xr.DataArray]
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, slice]], xr.DataArray]:
    """Standardised ``[C, H, W]`` stack, valid mask and per-input channel slices."""
    import rioxarray  # noqa: F401

    info = tim_model.info
    if info is None:
        raise CheckpointError("This TimModel holds no checkpoint description.")
    ref: xr.DataArray | None = None
    parts: list[np.ndarray] = []
    layout: list[tuple[str, slice]] = []
    valid: np.ndarray | None = None
    start = 0
    for mod in tim_model.modalities:
        da = inputs[mod]
        if tuple(da.dims) != ("band", "y", "x"):
            raise InvalidRequestError(
                f"{mod.value} input must have dims ('band', 'y', 'x'), got {tuple(da.dims)!r}."
            )
        if da.rio.crs is None:
            raise InvalidRequestError(f"{mod.value} input has no CRS: write one with rio.")
        names = [str(b) for b in da.coords["band"].values] if "band" in da.coords else []
        wanted = list(tim_model.bands[mod])
        lacking = [b for b in wanted if b not in names]
        if lacking:
            raise InvalidRequestError(
                f"{mod.value} input lacks bands {lacking!r} (has {names!r}); the checkpoint "
                f"needs {wanted!r}."
            )
        if ref is None:
            ref = da
        elif (da.shape[1:] != ref.shape[1:] or da.rio.crs != ref.rio.crs
              or not da.rio.transform().almost_equals(ref.rio.transform(), precision=1e-6)):
            raise InvalidRequestError(
                f"{mod.value} input is on another grid ({da.shape[1:]!r}, {da.rio.crs}) than "
                f"{tim_model.modalities[0].value} ({ref.shape[1:]!r}, {ref.rio.crs}): reproject "
                "it onto the same grid first."
            )
        data = np.asarray(da.sel(band=wanted).values, dtype=np.float32)
        ok = np.asarray(np.isfinite(data).all(axis=0))
        valid = ok if valid is None else np.logical_and(valid, ok)
        mean = tim_model.means[mod][:, None, None]
        std = tim_model.stds[mod][:, None, None]
        # No-data pixels become the mean (0 after standardising) and are masked in outputs.
        data = np.where(np.isfinite(data), data, mean)
        parts.append(((data - mean) / std).astype(np.float32))
        layout.append((info.input_keys[mod], slice(start, start + len(wanted))))
        start += len(wanted)
    if ref is None or valid is None:  # pragma: no cover - modalities is never empty
        raise CheckpointError("The checkpoint declares no input modality.")
    if not valid.any():
        raise InvalidRequestError("The inputs have no valid pixel in this AOI: pick another scene.")
    return np.concatenate(parts), valid, layout, ref


class _ChipSegmenter:
    """The chip function: standardised stacked inputs → class probabilities (+ TiM LULC)."""

    def __init__(self, tim_model: TimModel, layout: list[tuple[str, slice]], seed: int,
                 decode_tim: tuple[str, ...]) -> None:
        self.model = tim_model
        self.layout = layout
        self.seed = seed
        self.decode_tim = decode_tim

    def __call__(self, batch: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        import torch

        task = self.model.module
        if task is None:
            raise InvalidRequestError("The checkpoint was unloaded; load it again.")
        dev = self.model.device
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev)
        inputs = {key: x[:, sl] for key, sl in self.layout}
        encoder = task.model.encoder
        captured: dict[str, Any] = {}
        hooks = []
        for name in self.decode_tim:
            key = encoder.mod_name_mapping[name]

            def grab(_module: Any, args: tuple[Any, ...], key: str = key) -> None:
                captured[key] = args[0]

            hooks.append(encoder.encoder_embeddings[key].register_forward_pre_hook(grab))
        cast = autocast_dtype(dev)
        amp = torch.autocast(dev.type, dtype=cast) if cast else contextlib.nullcontext()
        what = f"segmenting {len(batch)} chips with {self.model.registry_name}"
        try:
            with seeded_rng(batch_seed(self.seed, int(indices[0]))), torch.no_grad(), amp, \
                    oom_as_error(what, device=dev):
                logits = task.model(inputs).output.float()
                parts = [torch.softmax(logits, dim=1)]
                for name in self.decode_tim:
                    key = encoder.mod_name_mapping[name]
                    tokens = captured[key]
                    b, _, h, w = batch.shape
                    tokenizer = encoder.tokenizer[key]
                    grid = tokens.reshape(b, h // tokenizer.patch_size, w // tokenizer.patch_size)
                    decoded = tokenizer.decode_tokens(grid, image_size=(h, w)).float()
                    parts.append(torch.softmax(decoded, dim=1))
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat(parts, dim=1).cpu().numpy()


def _on_grid(data: np.ndarray, like: xr.DataArray, bands: Sequence[str],
             attrs: dict[str, Any]) -> xr.DataArray:
    import xarray as xr

    da = xr.DataArray(
        data, dims=("band", "y", "x"),
        coords={"band": list(bands), "y": like.coords["y"].values, "x": like.coords["x"].values},
        attrs=attrs,
    )
    return da.rio.write_crs(like.rio.crs).rio.write_transform(like.rio.transform())


def segment(
    tim_model: TimModel,
    inputs: Mapping[Modality, xr.DataArray],
    *,
    seed: int = 0,
    chip: int = 224,
    overlap: int = 32,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    aoi_mask: np.ndarray | None = None,
) -> dict[str, xr.DataArray]:
    """Segment an AOI with a fine-tuned checkpoint, tiled with blended seams.

    Args:
        tim_model: From :func:`load_tim_checkpoint`.
        inputs: One ``[band, y, x]`` DataArray per modality the checkpoint needs (extra ones
            are ignored), all on the same grid (shape, CRS, transform). NaN marks no data.
        seed: Seed of the TiM token sampler (the same seed reproduces the same result).
        chip: Chip side in pixels (multiple of 16; 224 is what TerraMind was trained on).
        overlap: Pixels shared by neighbouring chips (blended).
        batch_size: Chips per model call.
        progress: ``progress(chips_done, chips_total)``.
        cancel: Return True to stop with :class:`RunCancelledError`.
        aoi_mask: Optional ``[y, x]`` bool, True inside the AOI: only chips touching valid
            pixels inside it run, and outputs are no data outside it.

    Returns:
        ``PREDICTION`` ([P], uint8 class map, 255 where an input had no data, ``class_names``
        attr), ``PREDICTION_PROB`` ([P], float32 per-class probabilities, NaN no data) and,
        for a LULC TiM backbone, ``TIM_LULC`` ([G], uint8 LULC classes the backbone generated),
        each on exactly the grid of the inputs.

    Raises:
        CheckpointError: an input the checkpoint needs is missing.
        InvalidRequestError: bad inputs or tiling parameters.
        OutOfMemoryError: lower ``batch_size``.
        RunCancelledError: cancelled.
    """
    check_inputs(tim_model, set(inputs))
    if isinstance(chip, bool) or not isinstance(chip, int) or chip < 32 or chip % 16:
        raise InvalidRequestError(f"chip must be a multiple of 16 pixels ≥ 32, got {chip!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidRequestError(f"seed must be a non-negative integer, got {seed!r}.")
    stacked, valid, layout, ref = _stack_inputs(tim_model, inputs)
    valid = restrict_to_aoi(valid, aoi_mask)
    tim = tuple(t for t in tim_model.tim_modalities if "lulc" in t.lower())
    skipped = [t for t in tim_model.tim_modalities if t not in tim]
    fn = _ChipSegmenter(tim_model, layout, seed, tim)
    probs = tiled_apply(fn, stacked, chip=chip, overlap=overlap, batch_size=batch_size,
                        progress=progress, cancel=cancel, mask=valid)
    k = tim_model.num_classes
    base = {key: ref.attrs[key] for key in PROVENANCE_ATTRS if key in ref.attrs}
    base |= {
        "model": tim_model.registry_name,
        "weights": tim_model.weights_label,
        "checkpoint": tim_model.weights_label,
        "untrained": bool(tim_model.untrained),
        "seed": int(seed),
        "standardisation": tim_model.standardisation,
        "inputs": json.dumps([m.value for m in tim_model.modalities]),
        "input_scenes": json.dumps({m.value: str(inputs[m].attrs.get("scene_id", ""))
                                    for m in tim_model.modalities}),
        "tim_modalities": json.dumps(list(tim_model.tim_modalities)),
        "terratorch_version": terratorch_version(),
        "clipped_to_aoi": aoi_mask is not None,
    }
    if skipped:
        base["tim_not_decoded"] = json.dumps(skipped)
    names = json.dumps(list(tim_model.class_names))
    pred_attrs = base | {"kind": "prediction", "synthetic": False, "class_names": names}
    classes = np.where(valid, probs[:k].argmax(axis=0), PREDICTION_NODATA).astype(np.uint8)
    out = {
        PREDICTION: _on_grid(classes[None], ref, [PREDICTION], pred_attrs | {
            "modality": PREDICTION, "units": "class",
            "long_name": f"Segmentation by fine-tuned {tim_model.registry_name}",
        }).rio.write_nodata(PREDICTION_NODATA),
        PREDICTION_PROB: _on_grid(
            np.where(valid, probs[:k], np.nan).astype(np.float32), ref,
            list(tim_model.class_names), pred_attrs | {
                "modality": PREDICTION_PROB, "units": "probability",
                "long_name": "Class probabilities of the fine-tuned checkpoint",
            }),
    }
    start = k
    for name in tim:
        lulc = probs[start:start + len(LULC_CLASSES)]
        start += len(LULC_CLASSES)
        layer = f"{TIM_PREFIX}{Modality.LULC.value}"
        out[layer] = _on_grid(
            np.where(valid, lulc.argmax(axis=0), PREDICTION_NODATA).astype(np.uint8)[None], ref,
            [Modality.LULC.value], base | {
                "kind": "generated", "synthetic": True, "modality": layer, "units": "class",
                "long_name": f"Land cover the TiM backbone generated ({name}) before segmenting",
                "class_names": json.dumps([c.name for c in LULC_CLASSES]),
            })
    return out


__all__ = ["PREDICTION", "PREDICTION_NODATA", "PREDICTION_PROB", "TIM_PREFIX", "seeded_rng",
           "segment"]

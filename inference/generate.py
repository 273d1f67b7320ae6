"""Any-to-any generation: Sentinel-2 L2A in, synthetic S1 / DEM / NDVI / LULC out, same grid.

:func:`generate` runs TerraMind's chained generation (terratorch, ``standardize=True``) over an
AOI of any size with :func:`inference.tiling.tiled_apply`, and returns one georeferenced
``xarray.DataArray`` per output on exactly the input grid, in physical units:

* ``S1GRD`` / ``S1RTC``: VV, VH backscatter in dB;
* ``DEM``: metres; ``NDVI``: unitless;
* ``LULC_PROB``: 10 class probabilities (softmax of the logits, blended across chips) and
  ``LULC``: the ``uint8`` arg-max class (``CLASS_NODATA``, 255, outside the AOI and where the
  input had no data).

Seed ensembles (``GenerationTask.ensemble`` = N, 2..16): every chip is repeated N times as
extra entries of the same model call, so one job, one pass over the chips and N× the chip
entries. Each member is blended over the chips on its own, then summarised per pixel
(:mod:`inference.ensembles`): continuous outputs become their ensemble mean plus a
``<OUTPUT>_STD`` layer in the output's units; LULC becomes the mode of the members' votes,
``LULC_PROB`` the mean probabilities, plus ``LULC_AGREEMENT`` (share of members voting the
mode) and ``LULC_ENTROPY`` (bits). The ``[U]`` layers carry ``kind="uncertainty"``. Memory:
the blending sums hold N × the output bands of the window (float64) until the summary.

Input pixels that are NaN in any band are filled with the band median for the model and
masked again (NaN, or class 0) in every output; chips without any valid pixel are not run.
With an ``aoi_mask`` (the drawn polygon rasterised on the window, see ``app.scenes.aoi_mask``)
only chips touching the AOI run and outputs are NaN / class 0 outside it; the real pixels
around the AOI still give the model its context.

Seeds: TerraMind has no seed argument; its token sampler draws from Python's ``random`` and
the diffusion decoders from torch's global generator. Before each chip batch, ``random``,
``numpy`` and ``torch`` are seeded with a value derived from (task seed, index of the batch's
first chip), so the same input and task give bit-identical outputs (on the same device and
software), in-process or on Ray. Changing ``batch_size`` changes which chips share a batch,
hence the samples. The caller's global RNG states are restored afterwards.

Why an ensemble member is not the single-seed run with some seed: terratorch draws a call's
noise for the whole batch from global generators, not per entry. The chained sampler takes one
seed from Python's ``random`` per call, re-seeds torch's global generator with it at every
schedule step (``torch.manual_seed(seed + step)``), draws **one** random decoding order
(``torch.rand(n_tokens)``) shared by every batch entry, and samples the tokens of all entries
from one stream (``torch.multinomial`` over ``[B·tokens, vocabulary]``); the diffusion
decoders start from ``torch.randn((B, C, H, W))`` with no generator (``decode_tokens`` passes
none). So an entry's noise depends on its position in the batch and on the batch's other
entries, and no per-entry generator can be handed in without replacing those terratorch
functions. Even then, a call of B·N entries runs other kernel shapes than a call of B, whose
floating-point rounding differs, so bit-equality would still not hold. What does hold (and is
tested): N = 1 is exactly the plain run; an ensemble is bit-reproducible from (seed, N, chip,
overlap, batch size); its members differ from each other; a deterministic model gives zero
spread. Members of one chip share a call and its RNG stream, seeded with
``batch_seed(seed, first chip)`` like a plain batch; chips per call are ``batch_size // N``
(at least 1), so a call holds about ``batch_size`` entries.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.batching import AdaptiveBatches, batch_size_for_memory, free_device_memory
from inference.build import load_generation_model
from inference.devices import oom_as_error
from inference.ensembles import (
    MAX_MEMBERS,
    MIN_MEMBERS,
    ensemble_agreement,
    ensemble_mean,
    ensemble_mode,
    ensemble_std,
    vote_counts,
    vote_entropy,
)
from inference.errors import InvalidRequestError
from inference.executors import Executor
from inference.modalities import (
    CLASS_NODATA,
    LULC_CLASSES,
    MODALITY_INFO,
    S2L2A_BANDS,
    Modality,
    UncertaintyInfo,
    uncertainty_products,
)
from inference.models import (
    UNTRAINED_LABEL,
    GenerationModel,
    GenerationSpec,
    normalise_outputs,
    terratorch_version,
)
from inference.progress import DiffusionSteps, StepsFn, denoising_steps, diffusion_tokenizers
from inference.tiling import CancelFn, ProgressFn, count_chips, restrict_to_aoi, tiled_apply

if TYPE_CHECKING:
    import torch
    import xarray as xr

#: Key of the LULC class-probability output.
LULC_PROB = "LULC_PROB"
#: Input attrs copied onto every output (provenance).
PROVENANCE_ATTRS = ("scene_id", "collection", "datetime", "offset_applied")
#: Bands each generated modality returns, in TerraMind's order.
OUTPUT_BANDS: dict[Modality, int] = {
    Modality.S1GRD: 2, Modality.S1RTC: 2, Modality.DEM: 1, Modality.NDVI: 1,
    Modality.LULC: len(LULC_CLASSES),
}


@dataclass(frozen=True)
class GenerationTask:
    """A validated generation request (also part of the run-store cache key).

    Attributes:
        outputs: Modalities to generate, a non-empty subset of ``GENERATABLE``.
        timesteps: Diffusion steps for S1/DEM/NDVI (1..100; more = slower, finer detail).
        seed: Non-negative integer; the same seed reproduces the same outputs.
        chip: Chip side in pixels (multiple of 16, 32..512; TerraMind was trained on 224).
        overlap: Pixels shared by neighbouring chips, blended (0..chip/2).
        batch_size: Chips per model call (1..64). Batching pays on CPU too: 9 chips in one
            call took ~30% less CPU than in calls of 4, 4, 1 and half as much as one by one
            (bench/README.md). 16+ suits a GPU; lower it on out-of-memory errors.
        ensemble: Seed-ensemble members (1..16; 1 = no ensemble): each chip runs as this many
            batch entries of one call, and the outputs are summarised with ``[U]`` layers.
    """

    outputs: tuple[Modality, ...]
    timesteps: int = 10
    seed: int = 0
    chip: int = 224
    overlap: int = 32
    batch_size: int = 8
    ensemble: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", normalise_outputs(self.outputs))
        _check_int("timesteps", self.timesteps, 1, 100)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("chip", self.chip, 32, 512)
        if self.chip % 16:
            raise InvalidRequestError(
                f"chip must be a multiple of 16 pixels (TerraMind patch size), got {self.chip!r}."
            )
        _check_int("overlap", self.overlap, 0, self.chip // 2)
        _check_int("batch_size", self.batch_size, 1, 64)
        _check_int("ensemble", self.ensemble, MIN_MEMBERS, MAX_MEMBERS)

    @property
    def chips_per_call(self) -> int:
        """Chips per model call: ``batch_size`` entries shared by ``ensemble`` members each."""
        return max(1, self.batch_size // self.ensemble)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not (
        low <= value <= high
    ):
        raise InvalidRequestError(f"{name} must be an integer in {low}..{high}, got {value!r}.")


def batch_seed(seed: int, first_chip: int) -> int:
    """Seed for the batch starting at plan index ``first_chip`` (stable across runs)."""
    return int(np.random.SeedSequence([seed, first_chip]).generate_state(1, np.uint32)[0])


def _layout(outputs: Sequence[Modality]) -> dict[Modality, slice]:
    layout, start = {}, 0
    for mod in outputs:
        layout[mod] = slice(start, start + OUTPUT_BANDS[mod])
        start += OUTPUT_BANDS[mod]
    return layout


# Worker-process cache for chip generators unpickled by Ray (one model per spec per process).
_WORKER_MODELS: dict[GenerationSpec, GenerationModel] = {}


class ChipGenerator:
    """The chip function: ``[B, 12, chip, chip]`` S2L2A DN → stacked outputs.

    Output channels follow ``model.spec.outputs`` with :data:`OUTPUT_BANDS` each; LULC comes
    as softmax probabilities. With an ensemble of N, each chip runs as N consecutive entries
    of the call and returns ``N × C`` channels, member by member. Picklable: a copy sent to
    another process re-loads its model from the spec (once per process).
    """

    def __init__(self, model: GenerationModel, task: GenerationTask) -> None:
        self.model: GenerationModel | None = model
        self.spec = model.spec
        self.task = task

    def __getstate__(self) -> dict[str, Any]:
        return {"model": None, "spec": self.spec, "task": self.task}

    def _model(self) -> GenerationModel:
        if self.model is None:
            if self.spec not in _WORKER_MODELS:
                _WORKER_MODELS[self.spec] = load_generation_model(
                    self.spec.size, self.spec.outputs, weights=self.spec.weights,
                    device="auto", timesteps=self.spec.timesteps,
                )
            self.model = _WORKER_MODELS[self.spec]
        return self.model

    def __call__(self, batch: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        """Generate every output for one batch of chips."""
        import torch

        model = self._model()
        if model.module is None:
            raise InvalidRequestError("The model was unloaded; load it again before generating.")
        seed = batch_seed(self.task.seed, int(indices[0]))
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        members = self.task.ensemble
        chips = len(batch)
        if members > 1:
            batch = np.repeat(batch, members, axis=0)  # chip 0 × N, chip 1 × N, ...
        pinned = model.speed.pinned and model.device.type == "cuda"
        x = to_device(np.ascontiguousarray(batch, dtype=np.float32), model.device, pinned=pinned)
        what = f"generating {', '.join(m.value for m in model.outputs)} ({chips} chips"
        what += f" × {members} seeds)" if members > 1 else ")"
        with oom_as_error(what, device=model.device), torch.no_grad(), _autocast(model):
            raw = model.module({Modality.S2L2A.value: x}, timesteps=self.task.timesteps)
            parts = []
            for mod in model.outputs:
                value = raw[mod.value].float()
                if mod is Modality.LULC:
                    value = torch.softmax(value, dim=1)
                parts.append(value)
            out = to_host(torch.cat(parts, dim=1), pinned=pinned)
        # [chips·N, C, h, w] → [chips, N·C, h, w]: members stacked on the channel axis.
        return out.reshape(chips, members * out.shape[1], *out.shape[2:])


def to_device(array: np.ndarray, device: torch.device, *, pinned: bool = False) -> torch.Tensor:
    """A host array on ``device``; through pinned memory with an asynchronous copy when
    ``pinned`` (CUDA only: the copy overlaps the work queued before it)."""
    import torch

    tensor = torch.from_numpy(array)
    if pinned:
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_host(tensor: torch.Tensor, *, pinned: bool = False) -> np.ndarray:
    """A device tensor as a numpy array; through a pinned buffer when ``pinned`` (CUDA)."""
    import torch

    if not pinned or tensor.device.type != "cuda":
        return tensor.cpu().numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return host.numpy()


def _autocast(model: GenerationModel) -> Any:
    import torch

    if model.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(model.device.type, dtype=model.autocast)


class _RngGuard:
    """Save and restore the global ``random``/``numpy``/``torch`` RNG states."""

    def __enter__(self) -> None:
        import torch

        self._py = random.getstate()
        self._np = np.random.get_state()
        self._torch = torch.random.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def __exit__(self, *exc: object) -> None:
        import torch

        random.setstate(self._py)
        np.random.set_state(self._np)
        torch.random.set_rng_state(self._torch)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)


def _s2_array(s2: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Validate the input and return (``[12, H, W]`` float32 filled, valid mask ``[H, W]``)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if tuple(s2.dims) != ("band", "y", "x"):
        raise InvalidRequestError(
            f"Sentinel-2 input must have dims ('band', 'y', 'x'), got {tuple(s2.dims)!r}."
        )
    names = [str(b) for b in s2.coords["band"].values] if "band" in s2.coords else []
    missing = [b for b in S2L2A_BANDS if b not in names]
    if missing:
        raise InvalidRequestError(
            f"Sentinel-2 input lacks bands {missing!r} (has {names!r}); TerraMind needs the 12 "
            f"L2A bands {list(S2L2A_BANDS)!r} named in the 'band' coordinate."
        )
    if s2.rio.crs is None:
        raise InvalidRequestError("Sentinel-2 input has no CRS: write one with rio.write_crs.")
    data = np.asarray(s2.sel(band=list(S2L2A_BANDS)).values, dtype=np.float32)
    valid: np.ndarray = np.asarray(np.isfinite(data).all(axis=0))
    if not valid.any():
        raise InvalidRequestError(
            "The Sentinel-2 input has no valid pixel (all NaN) in this AOI: pick another scene."
        )
    if not valid.all():
        data = data.copy()
        for band in data:
            band[~np.isfinite(band)] = np.median(band[valid])
    return data, valid


def _to_dataarray(
    data: np.ndarray,
    like: xr.DataArray,
    bands: Sequence[str],
    attrs: dict[str, Any],
) -> xr.DataArray:
    import xarray as xr

    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={"band": list(bands), "y": like.coords["y"].values, "x": like.coords["x"].values},
        attrs=attrs,
    )
    da = da.rio.write_crs(like.rio.crs)
    da = da.rio.write_transform(like.rio.transform())
    return da


def generate(
    model: GenerationModel,
    s2: xr.DataArray,
    task: GenerationTask,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    executor: Executor | None = None,
    aoi_mask: np.ndarray | None = None,
    steps: StepsFn | None = None,
) -> dict[str, xr.DataArray]:
    """Generate synthetic modalities from a Sentinel-2 L2A window.

    Args:
        model: From :func:`inference.build.load_generation_model`, built for ``task.outputs``.
        s2: ``[band, y, x]`` S2L2A DN (offset already removed by the scene loader; its
            ``offset_applied`` attr is copied), bands named as ``S2L2A_BANDS``, CRS written.
            NaN marks no data.
        task: What to generate and how.
        progress: ``progress(chips_done, chips_total)`` after each batch.
        cancel: Return True to stop; raises :class:`RunCancelledError` before the next batch.
        executor: Where chips run (default in-process; see :mod:`inference.executors`).
        aoi_mask: Optional ``[y, x]`` bool, True inside the AOI: chips outside it are not run
            and outputs are masked outside it (a polygon AOI costs only the chips it touches).
        steps: ``steps(done, total, detail)`` in chip steps (chips × diffusion steps of every
            diffusion output; chips when none diffuses) at each batch start, each diffusion
            decoder step and each batch end (chips run in this process only).

    Returns:
        ``{"S1GRD"|"S1RTC"|"DEM"|"NDVI": float32, "LULC": uint8, "LULC_PROB": float32}`` for
        the requested outputs, each on exactly the grid of ``s2``, with provenance attrs.

    Raises:
        InvalidRequestError: bad input, or a model built for other outputs.
        OutOfMemoryError: the device ran out of memory (lower ``batch_size``).
        RunCancelledError: cancelled.
    """
    if not isinstance(task, GenerationTask):
        raise InvalidRequestError(f"task must be a GenerationTask, got {type(task).__name__}.")
    if set(task.outputs) != set(model.outputs):
        raise InvalidRequestError(
            f"The model generates {[m.value for m in model.outputs]} but the task asks for "
            f"{[m.value for m in task.outputs]}: load a model for the task's outputs."
        )
    data, valid = _s2_array(s2)
    valid = restrict_to_aoi(valid, aoi_mask)
    fn: Any = ChipGenerator(model, task)
    if model.speed.adaptive_batch:
        fn = AdaptiveBatches(fn, limit=_batch_limit(model, task))
    counter = _step_counter(model, task, valid, steps)
    with _RngGuard(), (counter.hooks(model.module) if counter else contextlib.nullcontext()):
        stacked = tiled_apply(
            fn, data, chip=task.chip, overlap=task.overlap, batch_size=task.chips_per_call,
            progress=_both(progress, counter.chips if counter else None), cancel=cancel,
            executor=executor, mask=valid,
        )
    base = {k: s2.attrs[k] for k in PROVENANCE_ATTRS if k in s2.attrs}
    base |= {
        "kind": "generated",
        "synthetic": True,
        "model": model.registry_name,
        "weights": model.weights_label,
        "weights_files": model.weight_files_json(),
        "untrained": bool(model.untrained),
        "timesteps": int(task.timesteps),
        "seed": int(task.seed),
        "terratorch_version": terratorch_version(),
        "clipped_to_aoi": aoi_mask is not None,
    }
    if model.untrained:
        base["note"] = UNTRAINED_LABEL
    if task.ensemble > 1:
        base |= {"ensemble_size": int(task.ensemble), "ensemble_rng": ENSEMBLE_RNG}
        members = stacked.reshape(task.ensemble, -1, *stacked.shape[1:])
        return _ensemble_results(model.outputs, members, valid, s2, base)
    results: dict[str, xr.DataArray] = {}
    for mod, sl in _layout(model.outputs).items():
        info = MODALITY_INFO[mod]
        values = stacked[sl]
        attrs = base | {"modality": mod.value, "units": info.units, "long_name": info.long_name}
        if mod is Modality.LULC:
            probs = np.where(valid, values, np.nan).astype(np.float32)
            classes = np.where(valid, values.argmax(axis=0), CLASS_NODATA).astype(np.uint8)[None]
            names = json.dumps([c.name for c in LULC_CLASSES])
            results[mod.value] = _to_dataarray(
                classes, s2, info.bands, attrs | {"class_names": names}
            ).rio.write_nodata(CLASS_NODATA)
            results[LULC_PROB] = _to_dataarray(
                probs, s2, [c.name for c in LULC_CLASSES],
                attrs | {"modality": LULC_PROB, "units": "probability",
                         "long_name": f"{info.long_name} class probabilities",
                         "class_names": names},
            )
        else:
            values = np.where(valid, values, np.nan).astype(np.float32)
            results[mod.value] = _to_dataarray(values, s2, info.bands, attrs)
    return results


def _step_counter(model: GenerationModel, task: GenerationTask, valid: np.ndarray,
                  steps: StepsFn | None) -> DiffusionSteps | None:
    if steps is None:
        return None
    h, w = valid.shape
    chips = count_chips(h, w, task.chip, task.overlap, mask=valid)
    diffusing = {name: denoising_steps(tok, task.timesteps)
                 for name, tok in diffusion_tokenizers(model.module).items()}
    return DiffusionSteps(chips, batch_size=task.chips_per_call, diffusing=diffusing,
                          steps=steps, members=task.ensemble)


def _both(*fns: ProgressFn | None) -> ProgressFn | None:
    called = [f for f in fns if f is not None]
    if not called:
        return None

    def progress(done: int, total: int) -> None:
        for f in called:
            f(done, total)

    return progress


#: How an ensemble's members get their noise (the ``ensemble_rng`` provenance attr).
ENSEMBLE_RNG = ("members are consecutive batch entries of each chip in one model call; the "
                "call's RNG streams are seeded with batch_seed(seed, first chip index)")


def _ensemble_results(
    outputs: Sequence[Modality], members: np.ndarray, valid: np.ndarray, like: xr.DataArray,
    base: dict[str, Any],
) -> dict[str, xr.DataArray]:
    """Main layers (mean / mode) and ``[U]`` layers from ``members [N, C, H, W]``."""
    results: dict[str, xr.DataArray] = {}
    for mod, sl in _layout(outputs).items():
        info = MODALITY_INFO[mod]
        values = members[:, sl]
        attrs = base | {"modality": mod.value, "units": info.units, "long_name": info.long_name}
        stats: dict[str, np.ndarray] = {}
        if mod is Modality.LULC:
            counts = vote_counts(values.argmax(axis=1), len(LULC_CLASSES))
            names = json.dumps([c.name for c in LULC_CLASSES])
            mode = np.where(valid, ensemble_mode(counts), CLASS_NODATA).astype(np.uint8)[None]
            results[mod.value] = _to_dataarray(
                mode, like, info.bands,
                attrs | {"class_names": names, "ensemble_statistic": "mode"},
            ).rio.write_nodata(CLASS_NODATA)
            probs = np.where(valid, ensemble_mean(values), np.nan).astype(np.float32)
            results[LULC_PROB] = _to_dataarray(
                probs, like, [c.name for c in LULC_CLASSES],
                attrs | {"modality": LULC_PROB, "units": "probability",
                         "long_name": f"{info.long_name} class probabilities (ensemble mean)",
                         "class_names": names, "ensemble_statistic": "mean"},
            )
            stats = {"agreement": ensemble_agreement(counts)[None],
                     "entropy": vote_entropy(counts)[None]}
        else:
            mean = np.where(valid, ensemble_mean(values), np.nan).astype(np.float32)
            results[mod.value] = _to_dataarray(
                mean, like, info.bands, attrs | {"ensemble_statistic": "mean"})
            stats = {"std": ensemble_std(values)}
        for product in uncertainty_products(mod):
            results[f"{mod.value}_{product.suffix}"] = _uncertainty_layer(
                mod, product, stats[product.statistic], valid, like, attrs)
    return results


def _uncertainty_layer(
    mod: Modality, product: UncertaintyInfo, values: np.ndarray, valid: np.ndarray,
    like: xr.DataArray, attrs: dict[str, Any],
) -> xr.DataArray:
    """One ``[U]`` raster (``kind="uncertainty"``), NaN outside the computed pixels."""
    info = MODALITY_INFO[mod]
    bands = info.bands if product.units is None else (product.statistic,)
    data = np.where(valid, values, np.nan).astype(np.float32)
    return _to_dataarray(data, like, bands, attrs | {
        "kind": "uncertainty", "modality": f"{mod.value}_{product.suffix}",
        "uncertainty_of": mod.value, "statistic": product.statistic,
        "units": info.units if product.units is None else product.units,
        "long_name": f"{info.long_name}: {product.long_name}",
    })


def _batch_limit(model: GenerationModel, task: GenerationTask) -> int | None:
    """Chips per model call that fit the free GPU memory (None: no cap, e.g. on CPU); an
    ensemble's chip needs the memory of its N entries."""
    free = free_device_memory(model.device)
    if free is None:
        return None
    entries = batch_size_for_memory(free, task.batch_size, outputs=len(task.outputs),
                                    chip=task.chip)
    return max(1, entries // task.ensemble)


# Rough per-chip costs (seconds, one 224² chip) behind :func:`estimate`.
# CPU: measured on 2 cores, fp32 (../shared/FACTS.md, "CPU cost"): each diffusion output costs
# ≈1.05 s per step whatever the size; LULC decoding 0.25 s; the chained token sampler about
# 0.45 s (tiny) / 1.25 s (base) per output. small/large interpolated by parameter count.
# CUDA: a guess for one H100-class GPU with batched chips and bf16 (≈20× CPU), to be replaced by
# bench/generate.py numbers.
_SAMPLER_S_PER_OUTPUT = {"tiny": 0.45, "small": 0.7, "base": 1.25, "large": 3.5}
_DIFFUSION_S_PER_STEP = 1.05
_LULC_DECODE_S = 0.25
_SPEEDUP = {"cpu": 1.0, "mps": 4.0, "cuda": 20.0}


def estimate(
    h: int,
    w: int,
    task: GenerationTask,
    device: torch.device | str = "cpu",
    size: str = "base",
    mask: np.ndarray | None = None,
) -> tuple[int, float]:
    """Chips and a rough run time for an ``h × w`` window.

    Args:
        h: Window height in pixels.
        w: Window width in pixels.
        task: The generation task.
        device: Where it will run (``cpu``, ``cuda``, ``mps`` or a ``torch.device``).
        size: Model size.
        mask: Optional ``[h, w]`` bool of the pixels wanted (AOI and valid input): only the
            chips touching it are counted, as :func:`generate` runs them.

    Returns:
        (number of chip entries the model runs: chips × ``task.ensemble``, estimated seconds).
        Good to a factor of ~2 on CPU; a guess on GPU.
    """
    chips = count_chips(h, w, task.chip, task.overlap, mask=mask) * task.ensemble
    per_chip = 0.0
    for mod in task.outputs:
        per_chip += _SAMPLER_S_PER_OUTPUT.get(str(size), 1.25)
        if mod is Modality.LULC:
            per_chip += _LULC_DECODE_S
        else:
            per_chip += _DIFFUSION_S_PER_STEP * task.timesteps
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    per_chip *= (task.chip / 224) ** 2 / _SPEEDUP.get(kind, 1.0)
    return chips, chips * per_chip


__all__ = [
    "LULC_PROB",
    "ChipGenerator",
    "GenerationTask",
    "batch_seed",
    "estimate",
    "generate",
]

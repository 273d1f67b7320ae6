"""Monte-Carlo geolocation: where on Earth could this image (or this land cover) be?

TerraMind can generate the ``coords`` modality — a short text ``"lat=<deg> lon=<deg>"`` — from
a Sentinel-2 L2A chip or a LULC class map. Each generation is one random draw, so a batch of
``n`` copies of the same condition gives ``n`` independent samples of the model's belief; their
spread is the uncertainty. Temperature / top-p / top-k shape the token sampler; the seed makes a
run reproducible (per batch, as in :mod:`inference.generate`).

The decoded texts are parsed here, strictly: text that is not ``lat=<number> lon=<number>``,
non-finite numbers and coordinates outside [-180, 180] × [-90, 90] are never returned as points;
they are counted in ``invalid`` with their reason. Untrained weights produce mostly invalid
samples (their vocabulary is a blank stand-in) and the result says so.

Also here: :func:`lulc_prompt`, a land-cover "prompt" with given class fractions, and the
result's summary (haversine distances), GeoJSON and CSV.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.errors import InvalidRequestError, RunCancelledError
from inference.generate import batch_seed
from inference.modalities import LULC_CLASSES, S2L2A_BANDS, Modality
from inference.models import (
    LoadedModel,
    ModelSize,
    build_terramind,
    oom_as_error,
    terratorch_version,
)
from inference.tiling import CancelFn, ProgressFn
from inference.tim import seeded_rng

if TYPE_CHECKING:
    import torch
    import xarray as xr

#: Side of the chip the model sees, pixels.
CHIP = 224
#: Mean Earth radius (IUGG), km.
EARTH_RADIUS_KM = 6371.0088
#: Distance thresholds of :func:`summary`, km.
WITHIN_KM = (100, 500, 2500)
#: Reasons a sample is invalid.
INVALID_UNPARSABLE = "unparsable"
INVALID_NOT_FINITE = "not finite"
INVALID_OUT_OF_RANGE = "out of range"

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_COORD_TEXT = re.compile(
    rf"^\s*lat\s*=\s*(?P<lat>{_NUMBER})\s+lon\s*=\s*(?P<lon>{_NUMBER})\s*$", re.IGNORECASE
)


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
) -> GeolocationModel:
    """Build TerraMind for coordinate generation from S2L2A and/or LULC conditions.

    Args:
        size: tiny, small, base or large.
        weights: ``hub``, a local directory, or ``untrained``.
        device: ``torch.device`` or a name for :func:`inference.models.resolve_device`.
        conditions: Input modalities the model accepts (one model serves both by default).

    Raises:
        InvalidRequestError: bad size or condition.
        WeightsUnavailableError: weights missing (the model, LULC tokenizer, coords vocabulary).
    """
    try:
        model_size = ModelSize(str(size).strip().lower())
    except ValueError as err:
        raise InvalidRequestError(
            f"Model size must be one of {[s.value for s in ModelSize]}, got {size!r}."
        ) from err
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
        standardize=True, timesteps=1,
    )
    return GeolocationModel(
        module=loaded.module, registry_name=loaded.registry_name, device=loaded.device,
        weights_label=loaded.weights_label, untrained=loaded.untrained, conditions=tuple(conds),
    )


# ----------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class ParsedSample:
    """One decoded sample: a point, or the reason it is not one."""

    lon: float | None
    lat: float | None
    reason: str | None

    @property
    def valid(self) -> bool:
        """Whether this is a usable point."""
        return self.reason is None


def check_lonlat(lon: Any, lat: Any) -> ParsedSample:
    """Validate one ``(lon, lat)`` pair (numbers in degrees)."""
    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        return ParsedSample(None, None, INVALID_UNPARSABLE)
    if not (math.isfinite(x) and math.isfinite(y)):
        return ParsedSample(None, None, INVALID_NOT_FINITE)
    if not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):
        return ParsedSample(None, None, INVALID_OUT_OF_RANGE)
    return ParsedSample(x, y, None)


def parse_sample(raw: Any) -> ParsedSample:
    """Parse one model output: ``"lat=<deg> lon=<deg>"`` text or a ``[lon, lat]`` pair."""
    if isinstance(raw, str):
        match = _COORD_TEXT.match(raw)
        if match is None:
            return ParsedSample(None, None, INVALID_UNPARSABLE)
        return check_lonlat(match["lon"], match["lat"])
    if isinstance(raw, Sequence | np.ndarray) and len(raw) == 2:
        return check_lonlat(raw[0], raw[1])
    return ParsedSample(None, None, INVALID_UNPARSABLE)


def parse_samples(raw: Sequence[Any]) -> tuple[np.ndarray, dict[str, int]]:
    """Parse many outputs into valid ``[k, 2]`` lon/lat points and invalid counts by reason."""
    points: list[tuple[float | None, float | None]] = []
    reasons: dict[str, int] = {}
    for item in raw:
        parsed = parse_sample(item)
        if parsed.reason is None:
            points.append((parsed.lon, parsed.lat))
        else:
            reasons[parsed.reason] = reasons.get(parsed.reason, 0) + 1
    return np.asarray(points, dtype=np.float64).reshape(-1, 2), reasons


# ----------------------------------------------------------------------------------------------
# Conditions


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


# ----------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class GeolocationResult:
    """Coordinate samples of one geolocation run.

    Attributes:
        samples: ``[k, 2]`` valid samples, (lon, lat) in degrees (EPSG:4326).
        invalid: Samples that were not valid coordinates.
        params: What ran (condition, n, temperature, top_p, top_k, seed, model, weights...).
        invalid_reasons: Invalid samples by reason.
        raw: The decoded text of every sample, in order (for inspection).
    """

    samples: np.ndarray
    invalid: int
    params: dict[str, Any]
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    raw: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        """Samples drawn (valid + invalid)."""
        return len(self.samples) + int(self.invalid)


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
        "untrained": bool(model.untrained), "terratorch_version": terratorch_version(),
    }
    return GeolocationResult(samples=samples, invalid=sum(reasons.values()), params=params,
                             invalid_reasons=reasons, raw=tuple(texts))


# ----------------------------------------------------------------------------------------------
# Summaries and exports


def haversine_km(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> np.ndarray:
    """Great-circle distance(s) in km between points given in degrees (broadcasts)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=np.float64))
                              for v in (lon1, lat1, lon2, lat2))
    a = (np.sin((lat2 - lat1) / 2) ** 2
         + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def spherical_centroid(points: np.ndarray) -> tuple[float, float] | None:
    """Mean direction of lon/lat points (None when empty or antipodally balanced)."""
    if len(points) == 0:
        return None
    lon, lat = np.radians(points[:, 0]), np.radians(points[:, 1])
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]).mean(1)
    norm = float(np.linalg.norm(xyz))
    if norm < 1e-9:
        return None
    x, y, z = xyz / norm
    return float(np.degrees(np.arctan2(y, x))), float(np.degrees(np.arcsin(z)))


def summary(result: GeolocationResult, true_lonlat: Sequence[float] | None = None
            ) -> dict[str, Any]:
    """Numbers that describe a run: counts, centroid, spread, distances to a known location.

    Args:
        result: The run.
        true_lonlat: The known (lon, lat) of the condition, if any.

    Returns:
        ``n``, ``valid``, ``invalid``, ``invalid_reasons``, ``centroid_lonlat`` and
        ``median_km_to_centroid``; with ``true_lonlat`` also ``median_km``, ``mean_km``,
        ``nearest_km`` and ``share_within_km`` (share of *valid* samples within 100, 500,
        2500 km). Distance values are None when no sample is valid.

    Raises:
        InvalidRequestError: ``true_lonlat`` is not a valid coordinate.
    """
    pts = result.samples
    centroid = spherical_centroid(pts)
    out: dict[str, Any] = {
        "n": result.n,
        "valid": len(pts),
        "invalid": int(result.invalid),
        "invalid_reasons": dict(result.invalid_reasons),
        "centroid_lonlat": list(centroid) if centroid else None,
        "median_km_to_centroid": (
            float(np.median(haversine_km(pts[:, 0], pts[:, 1], *centroid))) if centroid else None
        ),
    }
    if true_lonlat is not None:
        truth = check_lonlat(*true_lonlat) if len(true_lonlat) == 2 else check_lonlat(None, None)
        if not truth.valid:
            raise InvalidRequestError(
                f"true_lonlat must be a valid (lon, lat) in degrees, got {true_lonlat!r}."
            )
        out["true_lonlat"] = [truth.lon, truth.lat]
        if len(pts):
            d = haversine_km(pts[:, 0], pts[:, 1], truth.lon, truth.lat)
            out |= {"median_km": float(np.median(d)), "mean_km": float(d.mean()),
                    "nearest_km": float(d.min()),
                    "share_within_km": {str(k): float((d <= k).mean()) for k in WITHIN_KM}}
        else:
            out |= {"median_km": None, "mean_km": None, "nearest_km": None,
                    "share_within_km": {str(k): None for k in WITHIN_KM}}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_geojson(result: GeolocationResult) -> dict[str, Any]:
    """The valid samples as a GeoJSON FeatureCollection of Points (lon, lat; EPSG:4326).

    The run's parameters, counts and invalid reasons ride along as the collection's
    ``properties`` (a foreign member, ignored by readers that do not know it).
    """
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
         "properties": {"sample": i}}
        for i, (x, y) in enumerate(result.samples)
    ]
    props = _plain(result.params) | {"valid": len(result.samples),
                                     "invalid": int(result.invalid),
                                     "invalid_reasons": dict(result.invalid_reasons)}
    return {"type": "FeatureCollection", "features": features, "properties": props}


def to_csv(result: GeolocationResult) -> str:
    """The valid samples as CSV text: ``sample,lon,lat`` (degrees, EPSG:4326)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample", "lon", "lat"])
    for i, (x, y) in enumerate(result.samples):
        writer.writerow([i, repr(float(x)), repr(float(y))])
    return buffer.getvalue()


__all__ = [
    "EARTH_RADIUS_KM",
    "INVALID_NOT_FINITE",
    "INVALID_OUT_OF_RANGE",
    "INVALID_UNPARSABLE",
    "WITHIN_KM",
    "GeolocationModel",
    "GeolocationResult",
    "ParsedSample",
    "check_lonlat",
    "haversine_km",
    "load_geolocation_model",
    "lulc_prompt",
    "parse_sample",
    "parse_samples",
    "prepare_condition",
    "sample_locations",
    "spherical_centroid",
    "summary",
    "to_csv",
    "to_geojson",
]

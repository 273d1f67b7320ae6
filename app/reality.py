"""How close is ``[G]`` to real? A run's generated layers against real measurements.

For every generated DEM, LULC, S1GRD, S1RTC and NDVI layer of a run, the real counterpart over
the run's AOI is found on the same STAC catalog (:mod:`app.counterparts` says which collection
and how each is read) and warped onto the run's grid (:mod:`app.run_grid`: bilinear for
continuous values, nearest for classes).

Pixels are compared inside the AOI where both layers hold data; :mod:`app.metrics` computes the
numbers. A :class:`~app.reality_report.RealityReport` holds, per layer, the metrics, or the
reason no counterpart was found ("no Sentinel-1 GRD acquisition within 12 days of 2022-06-15"),
plus the ``[R]`` real layers and the ``[D]`` difference layers (G − R; for classes 1 where they
agree, 0 where not), which :func:`~app.reality_report.save_report` stores with the run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr

from app.colors import CLASS_NODATA
from app.counterparts import Counterpart, CounterpartQuery, read_counterpart
from app.layers import KIND_DIFFERENCE, KIND_REALITY
from app.metrics import class_metrics, continuous_metrics
from app.reality_report import DIFF_PREFIX, REAL_PREFIX, LayerCheck, RealityReport
from app.run_grid import Grid
from app.signing import HrefSigner
from inference.errors import InvalidRequestError, TerraLensError
from inference.modalities import LULC_CLASSES, MODALITY_INFO, S1_BANDS, Modality

if TYPE_CHECKING:
    from app.stored_run import Run

#: Default search window (± days around the scene) for Sentinel-1 counterparts.
DEFAULT_S1_DAYS = 12
#: Classes compared for LULC (no data, 0, is left out).
LULC_LABELS: tuple[int, ...] = tuple(c.index for c in LULC_CLASSES if c.index > 0)
_CHECKED = (Modality.DEM, Modality.LULC, Modality.S1GRD, Modality.S1RTC, Modality.NDVI)


def _layer_da(values: np.ndarray, template: xr.DataArray, bands: Sequence[str],
              attrs: Mapping[str, Any]) -> xr.DataArray:
    data = values if values.ndim == 3 else values[None]
    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"band": list(bands), "y": template["y"].values,
                              "x": template["x"].values}, attrs=dict(attrs))
    return da.rio.write_crs(template.rio.crs).rio.write_transform(template.rio.transform())


def _attrs(check_kind: str, modality: Modality, counterpart: Counterpart, generated: str,
           **extra: Any) -> dict[str, Any]:
    info = MODALITY_INFO[modality]
    return {"modality": modality.value, "units": info.units, "kind": check_kind,
            "synthetic": False, "compares": generated, "collection": counterpart.collection,
            "counterpart_items": " ".join(counterpart.item_ids),
            "counterpart_datetime": counterpart.datetime or "", **extra}


def _compare(ctx: CounterpartQuery, name: str, generated: xr.DataArray, modality: Modality
             ) -> LayerCheck:
    grid = Grid.of(generated, ctx.aoi)
    classes = modality is Modality.LULC
    check = LayerCheck(name, modality.value, "classes" if classes else "continuous")
    try:
        real, counterpart = read_counterpart(ctx, grid, modality)
    except TerraLensError as err:
        check.message = str(err)
        return check
    check.counterpart = counterpart
    info = MODALITY_INFO[modality]
    bands = [str(b) for b in np.atleast_1d(generated["band"].values)]
    real = real if real.ndim == 3 else real[None]
    if classes:
        gen = np.asarray(generated.values[0]).astype(np.uint8)
        ref = real[0]
        valid = grid.inside & np.isin(ref, LULC_LABELS) & (gen != CLASS_NODATA)
        names = [c.name for c in LULC_CLASSES if c.index in LULC_LABELS]
        check.metrics[bands[0]] = class_metrics(gen, ref, LULC_LABELS, names, valid)
        ref_out = np.where(grid.inside, ref, CLASS_NODATA).astype(np.uint8)
        agree = np.where(valid, (gen == ref).astype(np.uint8), CLASS_NODATA).astype(np.uint8)
        all_names = json.dumps([c.name for c in LULC_CLASSES])
        check.real = _layer_da(ref_out[None], generated, bands, _attrs(
            KIND_REALITY, modality, counterpart, name, class_names=all_names,
            long_name=f"Real {info.long_name.lower()} ({counterpart.collection})"))
        check.difference = _layer_da(agree[None], generated, bands, {
            **_attrs(KIND_DIFFERENCE, modality, counterpart, name,
                     long_name=f"Agreement of generated and real {info.long_name.lower()}"),
            "modality": "AGREEMENT", "units": "class",
            "class_names": json.dumps(["disagree", "agree"])})
        return check
    if real.shape[0] != len(bands):
        check.message = (f"the real counterpart has {real.shape[0]} band(s), the generated "
                         f"layer {len(bands)} ({bands!r})")
        check.counterpart = None
        return check
    gen_all = np.asarray(generated.values, dtype=np.float32)
    ref_out = np.where(grid.inside[None], real, np.nan).astype(np.float32)
    diff = np.full(gen_all.shape, np.nan, dtype=np.float32)
    for i, band in enumerate(bands):
        valid = grid.inside & np.isfinite(gen_all[i]) & np.isfinite(real[i])
        check.metrics[band] = continuous_metrics(gen_all[i], real[i], valid)
        diff[i][valid] = gen_all[i][valid] - real[i][valid]
    extra: dict[str, Any] = {}
    if modality is Modality.S1GRD:
        extra = {"calibrated": False, "units": "dB (uncalibrated, 20·log10 DN)"}
    check.real = _layer_da(ref_out, generated, bands, _attrs(
        KIND_REALITY, modality, counterpart, name, **extra,
        long_name=f"Real {info.long_name[0].lower()}{info.long_name[1:]} "
                  f"({counterpart.collection})"))
    check.difference = _layer_da(diff, generated, bands, _attrs(
        KIND_DIFFERENCE, modality, counterpart, name,
        long_name=f"Generated minus real {info.long_name[0].lower()}{info.long_name[1:]}"))
    return check


def checkable_layers(layers: Mapping[str, xr.DataArray]) -> dict[str, Modality]:
    """The generated layers of a run that have a real counterpart, with their modality."""
    out: dict[str, Modality] = {}
    for name, da in layers.items():
        is_stack = da.dtype.kind == "f" and da.sizes.get("band", 1) > len(S1_BANDS)
        if str(da.attrs.get("kind")) != "generated" or is_stack:
            continue  # probability stacks
        try:
            modality = Modality(str(da.attrs.get("modality") or name))
        except ValueError:
            continue
        if modality in _CHECKED:
            out[name] = modality
    return out


def check_run(run: Run, *, stac_url: str, s1_days: int = DEFAULT_S1_DAYS,
              timeout_s: float = 20.0, has_pc_key: bool = False,
              signer: HrefSigner | None = None) -> RealityReport:
    """Compare every generated layer of ``run`` with its real counterpart.

    Args:
        run: A stored run.
        stac_url: The catalog to find the counterparts on (the run's own, normally).
        s1_days: Search window for Sentinel-1, ± days around the scene (0..365).
        timeout_s: Time-out per catalog request and per HTTP read, in seconds.
        has_pc_key: Whether a Planetary Computer subscription key is configured (RTC).
        signer: Href signer (default: one for ``stac_url``).

    Returns:
        The report; a missing counterpart (or a catalog/read failure for one layer) is a
        message on that layer, the other layers are still compared.

    Raises:
        InvalidRequestError: a bad window, or the run has no generated layer to check.
    """
    if isinstance(s1_days, bool) or not isinstance(s1_days, int) or not 0 <= s1_days <= 365:
        raise InvalidRequestError(f"the Sentinel-1 window must be 0..365 days, got {s1_days!r}")
    layers = {name: run.load_layer(name) for name in run.layer_names
              if not name.startswith((REAL_PREFIX, DIFF_PREFIX))}
    targets = checkable_layers(layers)
    if not targets:
        raise InvalidRequestError(
            f"run {run.id!r} has no generated DEM, LULC, S1GRD, S1RTC or NDVI layer to check "
            "against real data")
    ctx = CounterpartQuery(run, run.aoi, stac_url, timeout_s, s1_days, has_pc_key,
                   signer or HrefSigner(stac_url, timeout_s=min(timeout_s, 10.0)))
    checks = [_compare(ctx, name, layers[name], modality) for name, modality in targets.items()]
    return RealityReport(run.id, stac_url, s1_days, checks)

"""Layers an analyst adds to a run's map: uploaded GeoTIFFs and catalog scenes over the run's AOI.

Each becomes an ``input`` layer with its modality guessed (so it gets the right style and
units) and a stable source name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from app.catalog import Collection, SearchRequest, search_scenes
from app.scenes import load_scene
from app.settings import DEFAULT_MAX_READ_PIXELS
from inference.modalities import MODALITY_INFO, S1_BANDS, S2L2A_BANDS, Modality

#: Prefix of the source names of layers the analyst added.
ADDED_PREFIX = "added_"


def guess_modality(da: xr.DataArray, file_name: str) -> str | None:
    """The modality an uploaded raster most likely holds (styles and units follow from it).

    Sentinel-2 band names → S2L2A; VV/VH → S1GRD (dB); a single band whose file name names a
    modality (``dem``, ``ndvi``, ``lulc``) → that modality; otherwise ``None`` (generic style).
    """
    if da.attrs.get("modality"):
        return str(da.attrs["modality"])
    bands = {str(b) for b in np.atleast_1d(da["band"].values)} if "band" in da.coords else set()
    if {"B02", "B03", "B04"} <= bands or da.sizes.get("band") == len(S2L2A_BANDS):
        return Modality.S2L2A.value
    if bands == set(S1_BANDS):
        return Modality.S1GRD.value
    stem = Path(file_name).stem.upper()
    if da.sizes.get("band", 1) == 1:
        for modality in (Modality.DEM, Modality.NDVI, Modality.LULC):
            if modality.value in stem:
                return modality.value
    return None


def prepare_added(da: xr.DataArray, file_name: str) -> xr.DataArray:
    """An uploaded raster ready to show: band names, modality, units and kind filled in."""
    modality = guess_modality(da, file_name)
    attrs = dict(da.attrs)
    if modality is not None:
        known = {m.value for m in Modality}
        info = MODALITY_INFO.get(Modality(modality)) if modality in known else None
        if info is not None and len(info.bands) == da.sizes.get("band"):
            da = da.assign_coords(band=list(info.bands))
        attrs["modality"] = modality
        if info is not None:
            attrs.setdefault("units", info.units)
            attrs.setdefault("long_name", info.long_name)
    attrs.setdefault("kind", "input")
    attrs.setdefault("synthetic", False)
    attrs["source_file"] = file_name
    da.attrs = attrs
    return da


def added_source_name(file_name: str, data: bytes) -> str:
    """A unique, stable layer key for an upload (its stem plus a content hash)."""
    stem = "".join(c if c.isalnum() else "_" for c in Path(file_name).stem)[:32] or "layer"
    return f"{ADDED_PREFIX}{stem}_{hashlib.sha1(data).hexdigest()[:8]}"


def added_cache_key(source: str) -> str:
    """Cache key of an added layer's renderings (its source name embeds the content hash)."""
    return f"added|{source}"


def catalog_candidates(run: Any, collection: str, days: int, *, stac_url: str,
                       timeout_s: float) -> list[Any]:
    """Scenes of ``collection`` over the run's AOI within ``days`` of the run's scene date.

    Raises:
        CatalogError: the catalog cannot be searched.
        InvalidRequestError: a bad collection or window.
    """
    when = run.datetime or run.created
    day = when.date() if isinstance(when, dt.datetime) else dt.datetime.now(dt.UTC).date()
    request = SearchRequest(aoi=run.aoi, start=day - dt.timedelta(days=int(days)),
                            end=day + dt.timedelta(days=int(days)),
                            collection=Collection(collection),
                            max_cloud=100.0, limit=50)
    found = search_scenes(request, stac_url=stac_url, timeout_s=timeout_s)
    return [s for s in found if s.aoi_coverage > 0]


def load_catalog_layer(scene: Any, run: Any, *, stac_url: str, timeout_s: float,
                       subscription_key: str | None = None,
                       max_pixels: int = DEFAULT_MAX_READ_PIXELS) -> tuple[str, xr.DataArray]:
    """Read ``scene`` (a search hit) over the run's AOI as an added layer: (source, array).

    Raises:
        SceneError, AssetAccessError: the scene cannot be read over the AOI.
        InvalidAOIError: the window holds more than ``max_pixels`` values.
    """
    da = load_scene([scene.item], run.aoi, stac_url=stac_url, timeout_s=timeout_s,
                    subscription_key=subscription_key, max_pixels=max_pixels)
    source = added_source_name(scene.id, scene.id.encode())
    return source, prepare_added(da, scene.id)

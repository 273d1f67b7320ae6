"""What the Layers page needs besides widgets: cached layers and renderings, the layer panel's
preferences (visibility, opacity, order), inspector and statistics tables, added layers.

Loaded rasters and rendered PNGs are cached per process (``st.cache_resource``) by the run's
folder and creation time, so reruns (a toggle, a click) do not re-read or re-render anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import xarray as xr

from app import state
from app.layers import DisplayLayer, RenderedLayer, display_layers_for, render_png
from inference.modalities import MODALITY_INFO, S1_BANDS, S2L2A_BANDS, Modality

#: Opacity of a layer the first time a run is shown (inputs opaque, outputs see-through).
DEFAULT_OPACITY = {"input": 1.0, "generated": 0.85, "prediction": 0.7}
#: Layers hidden the first time a run is shown.
HIDDEN_BY_DEFAULT = ("Input false colour",)
#: Longest side of the map PNGs.
MAP_MAX_SIZE = 1536
#: The empty entry of a select box.
NO_CHOICE = "—"
#: Prefix of the source names of layers the analyst added.
ADDED_PREFIX = "added_"


# -- Cached data -----------------------------------------------------------------------------------
def run_cache_key(run: Any) -> str:
    """Identity of a stored run's content (a re-saved run gets a new key)."""
    return f"{run.path}|{run.created.isoformat()}"


@st.cache_resource(max_entries=4, show_spinner="Reading the run's layers …")
def _run_layers(cache_key: str, _run: Any) -> dict[str, xr.DataArray]:
    return _run.load_layers()


def run_layers(run: Any) -> dict[str, xr.DataArray]:
    """Every raster of a run (the input under ``"input"``), read once per process."""
    return _run_layers(run_cache_key(run), run)


@st.cache_resource(max_entries=256, show_spinner=False)
def _rendered(cache_key: str, layer_name: str, _da: xr.DataArray,
              _layer: DisplayLayer) -> RenderedLayer:
    return render_png(_da, _layer, max_size=MAP_MAX_SIZE)


def rendered(cache_key: str, layer: DisplayLayer, da: xr.DataArray) -> RenderedLayer:
    """The map PNG of ``layer`` (rendered once per ``cache_key`` and layer name)."""
    return _rendered(cache_key, layer.name, da, layer)


# -- Layer panel preferences -----------------------------------------------------------------------
def init_prefs(run_id: str, layers: Sequence[DisplayLayer]) -> None:
    """Set visibility/opacity/order for a newly opened run; append layers added since."""
    if state.LAYERS_RUN_ID.get() != run_id:
        state.LAYERS_RUN_ID.set(run_id)
        state.LAYER_VISIBLE.set({})
        state.LAYER_OPACITY.set({})
        state.LAYER_ORDER.set([])
    visible = dict(state.LAYER_VISIBLE.get())
    opacity = dict(state.LAYER_OPACITY.get())
    names = [layer.name for layer in layers]
    order = [n for n in state.LAYER_ORDER.get() if n in names]
    for layer in layers:
        if layer.name not in visible:
            visible[layer.name] = layer.name not in HIDDEN_BY_DEFAULT
            opacity[layer.name] = DEFAULT_OPACITY.get(layer.kind, 0.85)
        if layer.name not in order:
            order.append(layer.name)
    state.LAYER_VISIBLE.set(visible)
    state.LAYER_OPACITY.set(opacity)
    state.LAYER_ORDER.set(order)


def row_key(name: str) -> str:
    """Key of a layer's row in the panel (also its CSS class ``st-key-<key>``)."""
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    return f"layer-row-{slug}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def move(name: str, delta: int) -> None:
    """Move a layer up (``+1``, towards the top) or down (``-1``) in the drawing order."""
    order = list(state.LAYER_ORDER.get())
    if name not in order:
        return
    i = order.index(name)
    j = max(0, min(len(order) - 1, i + delta))
    order.insert(j, order.pop(i))
    state.LAYER_ORDER.set(order)


def bring_to_top(name: str) -> None:
    """Draw ``name`` above every other layer."""
    order = [n for n in state.LAYER_ORDER.get() if n != name]
    state.LAYER_ORDER.set([*order, name])


def bring_chosen_to_top() -> None:
    """``on_change`` of the 'Bring to top' select box: move the chosen layer, reset the box."""
    chosen = st.session_state.get(state.W.BRING_TO_TOP, NO_CHOICE)
    if chosen and chosen != NO_CHOICE:
        bring_to_top(chosen)
    st.session_state[state.W.BRING_TO_TOP] = NO_CHOICE


def overlay_names(compare: tuple[str, str] | None = None) -> list[str]:
    """Layers to draw, bottom to top: the visible ones, plus both sides of a comparison."""
    visible = state.LAYER_VISIBLE.get()
    wanted = set(compare or ())
    return [n for n in state.LAYER_ORDER.get() if visible.get(n) or n in wanted]


# -- Tables ----------------------------------------------------------------------------------------
def _format_value(value: float | str | None) -> str:
    if value is None:
        return "no data"
    if isinstance(value, str):
        return value
    magnitude = abs(value)
    if magnitude >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3f}" if magnitude < 10 else f"{value:.2f}"


def inspector_frame(values: Mapping[str, tuple[float | str | None, str]]) -> pd.DataFrame:
    """The pixel inspector's table: layer, value, units."""
    return pd.DataFrame({
        "Layer": list(values),
        "Value": [_format_value(v) for v, _ in values.values()],
        "Units": [u for _, u in values.values()],
    })


def inspect(run_layers_: Mapping[str, xr.DataArray], added: Mapping[str, xr.DataArray],
            lon: float, lat: float) -> dict[str, tuple[float | str | None, str]]:
    """Values of every layer at (lon, lat): the run's, then the added ones (labelled with their
    file or scene name, as in the layers panel)."""
    from app.layers import sample_point

    values = dict(sample_point(run_layers_, lon, lat))
    for source, da in added.items():
        label = Path(str(da.attrs.get("source_file", source))).name
        for name, value in sample_point({source: da}, lon, lat).items():
            values[f"{name} · {label}"] = value
    return values


def class_table(stats: Mapping[str, Any]) -> pd.DataFrame:
    """LULC / prediction class areas: class, km², % of valid pixels (classes present only)."""
    rows = [c for c in stats.get("classes", []) if c["pixels"] > 0]
    return pd.DataFrame({
        "Class": [c["name"] for c in rows],
        "Area km²": [round(c["area_km2"], 4) for c in rows],
        "% of AOI": [round(c["percent"], 2) for c in rows],
    })


def histogram_frame(stats: Mapping[str, Any]) -> pd.DataFrame:
    """A continuous layer's histogram as (bin centre, pixel count), for ``st.bar_chart``."""
    edges = np.asarray(stats.get("bin_edges", []), dtype=float)
    counts = stats.get("counts", [])
    if edges.size < 2:
        return pd.DataFrame({"value": [], "pixels": []})
    centres = (edges[:-1] + edges[1:]) / 2
    span = float(edges[-1] - edges[0])
    digits = 0 if span >= 100 else (1 if span >= 10 else 3)
    return pd.DataFrame({"value": [f"{c:.{digits}f}" for c in centres], "pixels": counts})


def summary_line(stats: Mapping[str, Any]) -> str:
    """min / mean / max / std of a continuous layer, with units."""
    if stats.get("min") is None:
        return "No valid pixels."
    units = stats.get("units") or ""
    return (f"min {stats['min']:.3g} · p2 {stats['p2']:.3g} · median {stats['p50']:.3g} · "
            f"p98 {stats['p98']:.3g} · max {stats['max']:.3g} {units} · mean "
            f"{stats['mean']:.3g} ± {stats['std']:.3g} · {100 * stats['valid_share']:.1f}% valid "
            f"({stats['area_km2']:.3f} km²)")


# -- Added layers ----------------------------------------------------------------------------------
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


def all_display_layers(run_layers_: Mapping[str, xr.DataArray],
                       added: Mapping[str, xr.DataArray]) -> list[DisplayLayer]:
    """Display layers of the run followed by those of the added rasters (whose names carry
    their file name, so they never collide with the run's)."""
    out = list(display_layers_for(run_layers_))
    for source, da in added.items():
        label = Path(str(da.attrs.get("source_file", source))).name
        out.extend(replace(layer, name=f"{layer.name} · {label}")
                   for layer in display_layers_for({source: da}))
    return out


# -- Vector downloads ------------------------------------------------------------------------------
def vector_classes(da: xr.DataArray) -> list[tuple[int, str]]:
    """(value, name) of the classes to vectorise in a prediction class map (not class 0,
    which is background / "not water"); empty for layers that are not prediction class maps."""
    from app.layers import class_names_of

    if da.attrs.get("kind") != "prediction" or not np.issubdtype(da.dtype, np.integer):
        return []
    names = class_names_of(da)
    if not names:
        top = int(np.asarray(da.values)[np.asarray(da.values) != 255].max(initial=0))
        names = ["background"] + [f"class {v}" for v in range(1, top + 1)]
    return [(value, name) for value, name in enumerate(names) if value > 0]


def polygons_bytes(da: xr.DataArray, fmt: str) -> bytes:
    """The prediction's class polygons (EPSG:4326, ``area_km2`` per polygon) as ``"geojson"``
    or ``"gpkg"`` bytes."""
    import geopandas as gpd

    from inference.vectors import mask_to_polygons, to_geojson_bytes, to_geopackage_bytes

    frames = [mask_to_polygons(da, value=value, name=name) for value, name in vector_classes(da)]
    frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    if fmt == "geojson":
        return to_geojson_bytes(frame)
    return to_geopackage_bytes(frame, layer=str(da.attrs.get("modality", "polygons")).lower())


# -- Added layers from a URL -----------------------------------------------------------------------
#: GDAL options for reading a remote COG: bounded time-outs and retries, no directory listing.
COG_URL_ENV = {
    "GDAL_HTTP_TIMEOUT": 20,
    "GDAL_HTTP_CONNECTTIMEOUT": 5,
    "GDAL_HTTP_MAX_RETRY": 1,
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}


def read_cog_url(url: str, bbox: tuple[float, float, float, float]) -> xr.DataArray:
    """Read the part of a remote (Cloud-Optimized) GeoTIFF that covers ``bbox``.

    Only the window over the run's area is read (HTTP range requests when the server allows).

    Args:
        url: ``http(s)://`` URL of the GeoTIFF.
        bbox: (west, south, east, north) in EPSG:4326 degrees, e.g. the run's AOI bounds.

    Returns:
        ``band``/``y``/``x`` with CRS, band names from the file's band descriptions, NaN for
        nodata in float rasters, and the TerraLens attrs the file carries (if any).

    Raises:
        InvalidRequestError: not an http(s) URL, or the raster does not cover ``bbox``.
        AssetAccessError: the URL cannot be read as a GeoTIFF.
    """
    import json
    from urllib.parse import urlparse

    import rasterio
    import rioxarray  # noqa: F401
    from rasterio.errors import RasterioIOError
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    from app.exports import ATTRS_TAG
    from inference.errors import AssetAccessError, InvalidRequestError

    if urlparse(url.strip()).scheme not in {"http", "https"} or not urlparse(url).netloc:
        raise InvalidRequestError(f"the COG URL must start with http:// or https://, got {url!r}")
    try:
        with rasterio.Env(**COG_URL_ENV), rasterio.open(url.strip()) as ds:
            if ds.crs is None:
                raise InvalidRequestError(f"the GeoTIFF at {url!r} has no CRS; it cannot be placed")
            west, south, east, north = transform_bounds("EPSG:4326", ds.crs, *bbox)
            left, bottom, right, top = ds.bounds
            if west >= right or east <= left or south >= top or north <= bottom:
                raise InvalidRequestError(
                    f"the GeoTIFF at {url!r} does not cover this run's area {bbox!r}"
                )
            window = from_bounds(max(west, left), max(south, bottom), min(east, right),
                                 min(north, top), ds.transform).round_offsets().round_lengths()
            window = window.intersection(rasterio.windows.Window(0, 0, ds.width, ds.height))
            data = ds.read(window=window)
            transform = ds.window_transform(window)
            tags = ds.tags()
            names = [d or str(i + 1) for i, d in enumerate(ds.descriptions)]
            units = {u for u in ds.units if u}
            nodata, crs = ds.nodata, ds.crs
    except RasterioIOError as err:
        raise AssetAccessError(
            f"cannot read a GeoTIFF at {url!r} ({err}); check the URL and that the server is "
            "reachable from the TerraLens server"
        ) from err
    if data.dtype != np.uint8:  # as read_layer: class maps stay uint8, the rest float32
        values = data.astype(np.float32)
        if nodata is not None and not np.isnan(nodata):
            values[data == nodata] = np.nan
    else:
        values = data
    height, width = values.shape[1:]
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    if ATTRS_TAG in tags:
        attrs = json.loads(tags[ATTRS_TAG])
    else:
        attrs = {"units": units.pop() if len(units) == 1 else "", "kind": "input",
                 "synthetic": False}
    da = xr.DataArray(values, dims=("band", "y", "x"),
                      coords={"band": names, "y": ys, "x": xs}, attrs=attrs)
    return da.rio.write_crs(crs).rio.write_transform(transform)


# -- Added layers from the catalog -----------------------------------------------------------------
def catalog_candidates(run: Any, collection: str, days: int, *, stac_url: str,
                       timeout_s: float) -> list[Any]:
    """Scenes of ``collection`` over the run's AOI within ``days`` of the run's scene date.

    Raises:
        CatalogError: the catalog cannot be searched.
        InvalidRequestError: a bad collection or window.
    """
    import datetime as dt

    from app.aoi import AOI
    from app.catalog import Collection, SearchRequest, search_scenes

    when = run.datetime or run.created
    day = when.date() if isinstance(when, dt.datetime) else dt.datetime.now(dt.UTC).date()
    request = SearchRequest(aoi=AOI(run.request.aoi), start=day - dt.timedelta(days=int(days)),
                            end=day + dt.timedelta(days=int(days)),
                            collection=Collection(collection),
                            max_cloud=100.0, limit=50)
    found = search_scenes(request, stac_url=stac_url, timeout_s=timeout_s)
    return [s for s in found if s.aoi_coverage > 0]


def load_catalog_layer(scene: Any, run: Any, *, stac_url: str, timeout_s: float
                       ) -> tuple[str, xr.DataArray]:
    """Read ``scene`` (a search hit) over the run's AOI as an added layer: (source, array).

    Raises:
        SceneError, AssetAccessError: the scene cannot be read over the AOI.
    """
    from app.aoi import AOI
    from app.scenes import load_scene

    da = load_scene([scene.item], AOI(run.request.aoi), stac_url=stac_url, timeout_s=timeout_s)
    source = added_source_name(scene.id, scene.id.encode())
    return source, prepare_added(da, scene.id)

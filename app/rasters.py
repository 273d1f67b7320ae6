"""The raster contract's files: Cloud-Optimised GeoTIFFs written and read back, class names,
pixel areas.

A layer is written as a COG (GDAL's ``COG`` driver: tiled, DEFLATE-compressed, with overviews
when larger than a block) in its scene CRS and grid:

* continuous layers as ``float32`` with NaN as nodata;
* class maps (``uint8``) with nodata 255 (no class uses it) and a colour table, so desktop GIS
  shows the TerraLens colours;
* tags: ``units``, ``long_name``, ``modality``, ``kind``, ``synthetic`` and every provenance attr
  as plain text for any GIS, plus ``TERRALENS_ATTRS`` (the attrs as JSON, types kept) from which
  :func:`read_layer` restores the DataArray exactly; band descriptions are the band names and
  band units the layer's units.

:func:`read_layer` also opens GeoTIFFs TerraLens did not write (an analyst's upload): band
names become ``"1"``, ``"2"``..., a nodata value becomes NaN, and the layer is an ``input``;
:func:`read_layer_window` reads the part of a remote GeoTIFF over an area.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import numpy as np
import rasterio
import rasterio.windows
import rioxarray
import xarray as xr
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from app.colors import CLASS_NODATA, class_lut, lulc_classes, prediction_classes
from inference.errors import AssetAccessError, InvalidRequestError, RunStoreError

#: Tag holding the DataArray attrs as JSON (exact round trip through :func:`read_layer`).
ATTRS_TAG = "TERRALENS_ATTRS"
#: Tags GDAL or rioxarray add on their own; not layer attrs.
_GDAL_TAGS = frozenset({"AREA_OR_POINT", ATTRS_TAG})
_RIOXARRAY_ATTRS = frozenset({
    "_FillValue", "scale_factor", "add_offset", "AREA_OR_POINT", "long_name", "units",
    "description", "STATISTICS_MINIMUM", "STATISTICS_MAXIMUM", "STATISTICS_MEAN",
    "STATISTICS_STDDEV", "STATISTICS_VALID_PERCENT",
})
def jsonable(value: Any) -> Any:
    """An attr value as a JSON/GeoTIFF-friendly Python value."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def tag_text(value: Any) -> str:
    """An attr value as GeoTIFF tag text (booleans as ``true``/``false``, lists as JSON)."""
    value = jsonable(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _check_layer(da: xr.DataArray) -> None:
    if tuple(da.dims) != ("band", "y", "x"):
        raise InvalidRequestError(
            f"a layer must have dims ('band', 'y', 'x'), got {tuple(da.dims)!r}; "
            "use da.expand_dims('band') or da.transpose('band', 'y', 'x')"
        )
    if da.rio.crs is None:
        raise InvalidRequestError(
            f"layer {da.name!r} has no CRS; write one with da.rio.write_crs(...) first"
        )


def _is_class_map(da: xr.DataArray) -> bool:
    return da.dtype == np.uint8 or da.dtype == np.bool_


def _class_colours(da: xr.DataArray) -> dict[int, tuple[int, int, int, int]] | None:
    """Colour table for a single-band class map (LULC or a prediction with class names)."""
    if da.sizes["band"] != 1:
        return None
    if str(da.attrs.get("modality", "")) == "LULC":
        entries = lulc_classes()
    else:
        names = class_names(da)
        if not names:
            return None
        entries = prediction_classes(names)
    lut = class_lut(entries)
    return {int(v): tuple(int(c) for c in lut[v]) for v in range(256)}  # type: ignore[misc]


def write_cog(da: xr.DataArray, path: str | Path) -> Path:
    """Write one layer as a Cloud-Optimised GeoTIFF.

    Args:
        da: The layer (``band``/``y``/``x`` with a CRS); ``uint8`` for class maps, anything
            else is written as ``float32`` with NaN for no data.
        path: Destination file (``.tif``); its folder must exist.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InvalidRequestError: the array does not follow the raster contract.
        RunStoreError: the file cannot be written.
    """
    _check_layer(da)
    path = Path(path)
    classes = _is_class_map(da)
    nodata: float
    if classes:
        data = np.asarray(da.values).astype(np.uint8)
        dtype, nodata, resampling = "uint8", CLASS_NODATA, "NEAREST"
    else:
        data = np.asarray(da.values).astype(np.float32)
        dtype, nodata, resampling = "float32", float("nan"), "AVERAGE"
    count, height, width = data.shape
    bands = [str(b) for b in np.atleast_1d(da["band"].values)] if "band" in da.coords else []
    attrs = {str(k): jsonable(v) for k, v in da.attrs.items()}
    try:
        with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(
            path, "w", driver="COG", width=width, height=height, count=count, dtype=dtype,
            crs=da.rio.crs, transform=da.rio.transform(), nodata=nodata,
            compress="DEFLATE", predictor="YES", overview_resampling=resampling,
            bigtiff="IF_SAFER",
        ) as dst:
            dst.write(data)
            dst.update_tags(**{k: tag_text(v) for k, v in attrs.items()})
            dst.update_tags(**{ATTRS_TAG: json.dumps(attrs)})
            units = str(attrs.get("units", ""))
            for i in range(count):
                if i < len(bands):
                    dst.set_band_description(i + 1, bands[i])
            dst.units = tuple(units for _ in range(count))
            colours = _class_colours(da) if classes else None
            if colours is not None:
                dst.write_colormap(1, colours)
    except (RasterioIOError, OSError) as err:
        raise RunStoreError(f"cannot write GeoTIFF {str(path)!r}: {err}") from err
    return path


def layer_to_cog_bytes(da: xr.DataArray) -> bytes:
    """One layer as the bytes of a Cloud-Optimised GeoTIFF (see :func:`write_cog`)."""
    with tempfile.TemporaryDirectory(prefix="terralens-cog-") as tmp:
        path = write_cog(da, Path(tmp) / "layer.tif")
        return path.read_bytes()


def _restore(da: xr.DataArray, ds: rasterio.DatasetReader) -> xr.DataArray:
    """rioxarray's view of a GeoTIFF → the TerraLens raster contract."""
    tags = ds.tags()
    descriptions = [d or str(i + 1) for i, d in enumerate(ds.descriptions)]
    if ATTRS_TAG in tags:
        attrs = json.loads(tags[ATTRS_TAG])
    else:
        attrs = {k: v for k, v in tags.items() if k not in _GDAL_TAGS}
        units = {u for u in ds.units if u}
        attrs.setdefault("units", units.pop() if len(units) == 1 else "")
        attrs.setdefault("kind", "input")
        attrs["synthetic"] = str(attrs.get("synthetic", "false")).lower() == "true"
    nodata = ds.nodata
    if ds.dtypes[0] != "uint8":
        if nodata is not None and not np.isnan(nodata):
            da = da.where(da != nodata)
        da = da.astype(np.float32)
    da = da.assign_coords(band=descriptions)
    da.attrs = attrs
    da.encoding = {}
    if ds.dtypes[0] == "uint8" and nodata is not None:
        da = da.rio.write_nodata(int(nodata), encoded=True)
    return da


def read_layer(source: str | Path | bytes, *, load: bool = True) -> xr.DataArray:
    """Open a GeoTIFF as a layer DataArray (the inverse of :func:`write_cog`).

    Args:
        source: A file path, or the bytes of a GeoTIFF (e.g. an upload).
        load: Read the pixels now; ``False`` keeps them lazy (metadata only, e.g. to list
            layers) and only works for paths.

    Returns:
        ``band``/``y``/``x`` with band names, the CRS and the attrs that were written.

    Raises:
        RunStoreError: the path does not exist or cannot be read.
        InvalidRequestError: the bytes are not a readable GeoTIFF.
    """
    if isinstance(source, (bytes, bytearray)):
        try:
            with MemoryFile(bytes(source)) as memfile, memfile.open() as ds:
                da = cast(xr.DataArray, rioxarray.open_rasterio(ds, masked=False)).load()
                return _restore(da, ds)
        except RasterioIOError as err:
            raise InvalidRequestError(
                f"the uploaded file is not a readable GeoTIFF ({err}); upload a .tif"
            ) from err
    path = Path(source)
    if not path.is_file():
        raise RunStoreError(f"layer file {str(path)!r} does not exist")
    try:
        with rasterio.open(path) as ds:
            da = cast(xr.DataArray, rioxarray.open_rasterio(path, masked=False, cache=False))
            if load:
                da = da.load()
            return _restore(da, ds)
    except RasterioIOError as err:
        raise RunStoreError(f"cannot read layer file {str(path)!r}: {err}") from err




#: GDAL options for reading a remote COG: bounded time-outs and retries, no directory listing.
COG_URL_ENV = {
    "GDAL_HTTP_TIMEOUT": 20,
    "GDAL_HTTP_CONNECTTIMEOUT": 5,
    "GDAL_HTTP_MAX_RETRY": 1,
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}


def read_layer_window(url: str, bbox: tuple[float, float, float, float]) -> xr.DataArray:
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


def class_names(da: xr.DataArray) -> list[str]:
    """The ``class_names`` attr of a class map as a list of names (stored as JSON text).

    Returns:
        The names in class-value order; empty when the layer has none.

    Raises:
        InvalidRequestError: the attr is not a JSON list.
    """
    raw = da.attrs.get("class_names")
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InvalidRequestError(
                f"class_names must be a JSON list of names, got {raw[:80]!r}"
            ) from err
    if not isinstance(raw, list | tuple):
        raise InvalidRequestError(f"class_names must be a list of names, got {raw!r:.80}")
    return [str(n) for n in raw]


def pixel_areas_km2(da: xr.DataArray) -> np.ndarray:
    """Area of every pixel row in km², shape ``[H, 1]`` (broadcasts over columns).

    In a projected CRS all pixels have the same area (``|det(transform)|`` in CRS units²,
    converted with the CRS's linear unit); in a geographic CRS each row gets its geodesic area.

    Raises:
        InvalidRequestError: no CRS, or a rotated geographic grid.
    """
    crs = da.rio.crs
    if crs is None:
        raise InvalidRequestError("The raster has no CRS: write one with rio.write_crs.")
    transform = da.rio.transform()
    h = da.sizes["y"]
    if not crs.is_geographic:
        factor = float(crs.linear_units_factor[1]) if crs.linear_units_factor else 1.0
        area_m2 = abs(transform.a * transform.e - transform.b * transform.d) * factor**2
        return np.full((h, 1), area_m2 / 1e6)
    if transform.b != 0 or transform.d != 0:
        raise InvalidRequestError("Rotated grids in a geographic CRS are not supported.")
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    x0, x1 = transform.c, transform.c + transform.a
    rows = []
    for i in range(h):
        y0 = transform.f + transform.e * i
        y1 = y0 + transform.e
        area, _ = geod.polygon_area_perimeter([x0, x1, x1, x0], [y0, y0, y1, y1])
        rows.append(abs(area) / 1e6)
    return np.asarray(rows)[:, None]

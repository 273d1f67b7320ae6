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
import math
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
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from app.colors import CLASS_NODATA, class_lut, lulc_classes, prediction_classes
from app.remote_file import RemoteOpener
from app.settings import DEFAULT_MAX_READ_PIXELS
from app.transport import Deadline, bounded_session, check_seconds, deadline_seconds
from inference.errors import AssetAccessError, InvalidRequestError, RunStoreError, TerraLensError

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
    except (RasterioError, CPLE_BaseError, OSError) as err:
        # GDAL reports a full disk as CPLE_FileIOError / CPLE_AppDefinedError, not OSError.
        raise RunStoreError(
            f"cannot write GeoTIFF {str(path)!r} ({_error_text(err)}); check "
            "that the data folder's disk has space and is writable"
        ) from err
    return path


def layer_to_cog_bytes(da: xr.DataArray) -> bytes:
    """One layer as the bytes of a Cloud-Optimised GeoTIFF (see :func:`write_cog`)."""
    with tempfile.TemporaryDirectory(prefix="terralens-cog-") as tmp:
        path = write_cog(da, Path(tmp) / "layer.tif")
        return path.read_bytes()


def _file_attrs(ds: Any) -> dict[str, Any]:
    """A GeoTIFF's layer attrs: TerraLens' JSON tag when it wrote the file, else the file's
    tags with its units, as an ``input`` layer that is not synthetic."""
    tags = ds.tags()
    if ATTRS_TAG in tags:
        return dict(json.loads(tags[ATTRS_TAG]))
    attrs: dict[str, Any] = {k: v for k, v in tags.items() if k not in _GDAL_TAGS}
    units = {u for u in ds.units if u}
    attrs.setdefault("units", units.pop() if len(units) == 1 else "")
    attrs.setdefault("kind", "input")
    attrs["synthetic"] = str(attrs.get("synthetic", "false")).lower() == "true"
    return attrs


def _restore(da: xr.DataArray, ds: rasterio.DatasetReader) -> xr.DataArray:
    """rioxarray's view of a GeoTIFF → the TerraLens raster contract."""
    descriptions = [d or str(i + 1) for i, d in enumerate(ds.descriptions)]
    attrs = _file_attrs(ds)
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


def _error_text(err: BaseException, *, limit: int = 200) -> str:
    """A GDAL/rasterio error on one line, without rasterio's "See previous exception" pointer."""
    text = " ".join(str(err).replace("See previous exception for details.", "").split())
    return text.rstrip(". ")[:limit] or type(err).__name__


def read_layer(source: str | Path | bytes, *, load: bool = True,
               max_pixels: int = DEFAULT_MAX_READ_PIXELS) -> xr.DataArray:
    """Open a GeoTIFF as a layer DataArray (the inverse of :func:`write_cog`).

    Bytes (an upload) are checked by their declared size first: when bands × height × width
    exceeds ``max_pixels`` the layer is read decimated (from an overview when the file has one)
    to fit, and ``read_decimation`` in its attrs says by how much.

    Args:
        source: A file path, or the bytes of a GeoTIFF (e.g. an upload).
        load: Read the pixels now; ``False`` keeps them lazy (metadata only, e.g. to list
            layers) and only works for paths.
        max_pixels: Most pixel values read from bytes (``Settings.max_read_pixels``).

    Returns:
        ``band``/``y``/``x`` with band names, the CRS and the attrs that were written.

    Raises:
        RunStoreError: the path does not exist or cannot be read.
        InvalidRequestError: the bytes are not a readable GeoTIFF.
    """
    if isinstance(source, (bytes, bytearray)):
        try:
            with MemoryFile(bytes(source)) as memfile, memfile.open() as ds:
                if ds.crs is None:
                    raise InvalidRequestError(
                        "the uploaded GeoTIFF has no CRS, so it cannot be placed on the map: "
                        "assign one (e.g. gdal_edit.py -a_srs EPSG:32633) and upload it again"
                    )
                window = Window(0, 0, ds.width, ds.height)
                return _layer(ds, window, max_pixels, restore_nodata=True)
        except (RasterioError, CPLE_BaseError) as err:
            raise InvalidRequestError(
                f"the uploaded file is not a readable GeoTIFF ({_error_text(err)})"
                "; upload a .tif"
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
    except (RasterioError, CPLE_BaseError) as err:
        # The analyst sees the run's folder and file names, never the server's paths.
        detail = _error_text(err, limit=160)
        raise RunStoreError(
            f"Layer file {path.name!r} of run {path.parent.name!r} cannot be read: it is damaged "
            f"or incomplete ({detail}). Delete the run on the Runs page and run it again."
        ) from err




#: GDAL options for reading a remote COG through :class:`app.remote_file.RemoteOpener`.
COG_URL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_NUM_THREADS": "1",
}


def read_plan(count: int, height: int, width: int, max_pixels: int) -> tuple[int, int, int]:
    """(decimation factor, out height, out width) so that count × out pixels ≤ ``max_pixels``.

    Raises:
        InvalidRequestError: even one pixel row per band does not fit (absurd band counts).
    """
    values = count * height * width
    if values <= max_pixels:
        return 1, height, width
    factor = math.ceil(math.sqrt(values / max_pixels))
    while count * math.ceil(height / factor) * math.ceil(width / factor) > max_pixels:
        factor += 1
        if factor > max(height, width):
            raise InvalidRequestError(
                f"the GeoTIFF declares {count:,} bands of {width:,} × {height:,} px, more than "
                f"the limit of {max_pixels:,} values (TERRALENS_MAX_READ_PIXELS) even decimated: "
                "keep only the bands you need (gdal_translate -b 1 ...)"
            )
    return factor, math.ceil(height / factor), math.ceil(width / factor)


def _layer(ds: rasterio.DatasetReader, window: Window, max_pixels: int, *,
           restore_nodata: bool) -> xr.DataArray:
    """Read ``window`` of ``ds`` (decimated to fit ``max_pixels``) as a layer DataArray."""
    height, width = int(window.height), int(window.width)
    factor, out_h, out_w = read_plan(ds.count, height, width, int(max_pixels))
    data = ds.read(window=window, out_shape=(ds.count, out_h, out_w),
                   resampling=Resampling.nearest)
    transform = ds.window_transform(window) * Affine.scale(width / out_w, height / out_h)
    names = [d or str(i + 1) for i, d in enumerate(ds.descriptions)]
    nodata, crs = ds.nodata, ds.crs
    attrs = _file_attrs(ds)
    if factor > 1:
        attrs["read_decimation"] = factor
    if data.dtype != np.uint8:  # class maps stay uint8, the rest float32 with NaN for nodata
        values = data.astype(np.float32)
        if nodata is not None and not np.isnan(nodata):
            values[data == nodata] = np.nan
    else:
        values = data
    xs = transform.c + transform.a * (np.arange(out_w) + 0.5)
    ys = transform.f + transform.e * (np.arange(out_h) + 0.5)
    da = xr.DataArray(values, dims=("band", "y", "x"),
                      coords={"band": names, "y": ys, "x": xs}, attrs=attrs)
    da = da.rio.write_crs(crs).rio.write_transform(transform)
    if restore_nodata and data.dtype == np.uint8 and nodata is not None:
        da = da.rio.write_nodata(int(nodata), encoded=True)
    return da


def read_layer_window(
    url: str,
    bbox: tuple[float, float, float, float],
    *,
    timeout_s: float = 20.0,
    allow_private: bool = False,
    max_pixels: int = DEFAULT_MAX_READ_PIXELS,
) -> xr.DataArray:
    """Read the part of a remote (Cloud-Optimized) GeoTIFF that covers ``bbox``.

    Only the window over the run's area is read, with HTTP range requests through
    :mod:`app.transport`: each request times out after ``timeout_s``, the whole read gives up
    after :func:`~app.transport.deadline_seconds` (3 × ``timeout_s``), and addresses that are not
    public are refused on the first request and on every redirect unless ``allow_private``. A
    window of more than ``max_pixels`` values is read decimated (from an overview when the file
    has one; ``read_decimation`` in the attrs).

    Args:
        url: ``http(s)://`` URL of the GeoTIFF.
        bbox: (west, south, east, north) in EPSG:4326 degrees, e.g. the run's AOI bounds.
        timeout_s: Per-request time-out (``Settings.stac_timeout_s``).
        allow_private: Fetch private and loopback addresses (``TERRALENS_ALLOW_PRIVATE_URLS``).
        max_pixels: Most pixel values read (``Settings.max_read_pixels``).

    Returns:
        ``band``/``y``/``x`` with CRS, band names from the file's band descriptions, NaN for
        nodata in float rasters, and the TerraLens attrs the file carries (if any).

    Raises:
        InvalidRequestError: not an http(s) URL, or the raster does not cover ``bbox``.
        BlockedURLError: the URL (or a redirect) leads to a refused address.
        AssetAccessError: the URL cannot be read as a GeoTIFF, or not within the deadline.
    """
    url = url.strip()
    if urlparse(url).scheme not in {"http", "https"} or not urlparse(url).netloc:
        raise InvalidRequestError(f"the COG URL must start with http:// or https://, got {url!r}")
    timeout_s = check_seconds(timeout_s, "the COG URL time-out")
    deadline = Deadline(deadline_seconds(timeout_s), "the COG URL",
                        block_private=not allow_private)
    session = bounded_session(trust_env=False)
    opener = RemoteOpener(url, session, deadline, timeout_s)
    try:
        with deadline, session, rasterio.Env(**COG_URL_ENV), \
                rasterio.open(url, opener=opener) as ds:
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
            window = window.intersection(Window(0, 0, ds.width, ds.height))
            return _layer(ds, window, max_pixels, restore_nodata=False)
    except TerraLensError:
        raise
    except (RasterioError, CPLE_BaseError, OSError) as err:
        if opener.error is not None:
            raise opener.error from err
        raise AssetAccessError(
            f"cannot read a GeoTIFF at {url!r} ({_error_text(err)}); check the "
            "URL and that it is a GeoTIFF"
        ) from err


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

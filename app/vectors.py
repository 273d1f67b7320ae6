"""Class maps to vectors and area tables: polygons, GeoJSON/GeoPackage bytes, class areas.

Pure functions of georeferenced arrays (``xarray.DataArray`` with a CRS written by rioxarray);
nothing here writes files (exports are returned as bytes for the app to offer as downloads).

Areas are computed in the raster's own CRS, where each pixel is an exact rectangle: in a
projected CRS (UTM, as the scene loader produces) a polygon's area is exactly its pixel count
times the pixel area. For a geographic CRS (degrees) areas are geodesic (WGS84 ellipsoid).
Polygons are then reprojected to EPSG:4326, the CRS of every vector crossing a boundary.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from app import rasters
from inference.errors import InvalidRequestError

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr

#: Columns of every polygon table, in order (geometry comes last).
POLYGON_COLUMNS = ("class", "value", "pixels", "area_km2")


def _class_array(da: xr.DataArray, what: str) -> np.ndarray:
    """The 2-D class array of a ``[1, y, x]`` or ``[y, x]`` DataArray with a CRS."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    dims = tuple(da.dims)
    if dims == ("band", "y", "x"):
        if da.sizes["band"] != 1:
            raise InvalidRequestError(
                f"{what} must have one band, got {da.sizes['band']} bands "
                f"({[str(b) for b in da.coords['band'].values]!r})."
            )
        data = np.asarray(da.values[0])
    elif dims == ("y", "x"):
        data = np.asarray(da.values)
    else:
        raise InvalidRequestError(f"{what} must have dims ('band', 'y', 'x'), got {dims!r}.")
    if da.rio.crs is None:
        raise InvalidRequestError(f"{what} has no CRS: write one with rio.write_crs.")
    if data.size == 0:
        raise InvalidRequestError(f"{what} is empty (shape {data.shape!r}).")
    if not np.issubdtype(data.dtype, np.integer):
        raise InvalidRequestError(
            f"{what} must be an integer class map (e.g. uint8), got dtype {data.dtype!s}."
        )
    return data


def mask_to_polygons(
    mask_da: xr.DataArray,
    *,
    value: int = 1,
    name: str | None = None,
    connectivity: int = 4,
) -> gpd.GeoDataFrame:
    """Polygons of the pixels equal to ``value`` in a class map, in EPSG:4326.

    Args:
        mask_da: ``[1, y, x]`` (or ``[y, x]``) integer class map with a CRS, e.g. ``WATER``
            (1 water, 0 not water, 255 no data) or a ``PREDICTION`` map.
        value: The class value to vectorise.
        name: Class name written in the ``class`` column; default from the layer's
            ``class_names`` attr, else ``"class <value>"``.
        connectivity: 4 (edge neighbours) or 8 (also diagonal) pixel connectivity.

    Returns:
        One row per connected region with columns ``class``, ``value``, ``pixels`` and
        ``area_km2`` (exact pixel areas in the raster's CRS; holes excluded), largest first,
        geometry in EPSG:4326. Empty (same columns) when no pixel has ``value``.

    Raises:
        InvalidRequestError: not a single-band integer map with a CRS, or a bad ``value``.
    """
    import geopandas as gpd
    import rasterio.features
    import shapely
    from shapely.geometry import shape

    data = _class_array(mask_da, "The mask")
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidRequestError(f"value must be an integer class value, got {value!r}.")
    if connectivity not in (4, 8):
        raise InvalidRequestError(f"connectivity must be 4 or 8, got {connectivity!r}.")
    if name is None:
        names = rasters.class_names(mask_da)
        name = names[value] if names and 0 <= value < len(names) else f"class {value}"

    selected = data == value
    transform = mask_da.rio.transform()
    src_crs = mask_da.rio.crs
    geoms = []
    if selected.any():
        for geom, _ in rasterio.features.shapes(
            selected.astype(np.uint8), mask=selected, connectivity=connectivity,
            transform=transform,
        ):
            geoms.append(shape(geom))
    frame = gpd.GeoDataFrame(
        {"class": [name] * len(geoms), "value": [int(value)] * len(geoms)},
        geometry=geoms, crs=src_crs,
    )
    if geoms:
        if src_crs.is_geographic:
            from pyproj import Geod

            # Edges split at every pixel corner: the polygon's geodesic area is then exactly
            # the sum of its pixels' (rasters.pixel_areas_km2), as the statistics count them.
            geod = Geod(ellps="WGS84")
            dense = shapely.segmentize(np.asarray(geoms, dtype=object),
                                       max_segment_length=abs(transform.a) * 1.0001)
            areas = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in dense]) / 1e6
        else:
            factor = float(src_crs.linear_units_factor[1]) if src_crs.linear_units_factor else 1.0
            areas = shapely.area(np.asarray(geoms, dtype=object)) * factor**2 / 1e6
        pixel_km2 = float(rasters.pixel_areas_km2(mask_da).mean())
        frame["pixels"] = np.rint(areas / pixel_km2).astype(np.int64)
        frame["area_km2"] = areas.astype(np.float64)
    else:
        frame["pixels"] = np.array([], dtype=np.int64)
        frame["area_km2"] = np.array([], dtype=np.float64)
    frame = frame[[*POLYGON_COLUMNS, "geometry"]]
    frame = frame.sort_values("area_km2", ascending=False, ignore_index=True)
    return frame.to_crs(4326)


def to_geojson_bytes(gdf: gpd.GeoDataFrame) -> bytes:
    """A GeoDataFrame as GeoJSON (UTF-8 bytes, EPSG:4326 coordinates, lon/lat order).

    Raises:
        InvalidRequestError: the frame has no CRS.
    """
    if gdf.crs is None:
        raise InvalidRequestError("The polygons have no CRS; cannot write GeoJSON.")
    text = gdf.to_crs(4326).to_json(drop_id=True, to_wgs84=False)
    return text.encode("utf-8")


def to_geopackage_bytes(gdf: gpd.GeoDataFrame, *, layer: str = "polygons") -> bytes:
    """A GeoDataFrame as a GeoPackage file (bytes), one layer, EPSG:4326.

    Written through GDAL's in-memory file system (pyogrio), never to disk.

    Raises:
        InvalidRequestError: the frame has no CRS or the layer name is empty.
    """
    import pyogrio

    if gdf.crs is None:
        raise InvalidRequestError("The polygons have no CRS; cannot write a GeoPackage.")
    if not layer or not str(layer).strip():
        raise InvalidRequestError(f"GeoPackage layer name must not be empty, got {layer!r}.")
    buffer = io.BytesIO()
    pyogrio.write_dataframe(gdf.to_crs(4326), buffer, driver="GPKG", layer=str(layer))
    return buffer.getvalue()


def class_area_stats(
    class_da: xr.DataArray,
    class_names: Sequence[str] | None = None,
    *,
    nodata: int | None = None,
) -> list[dict[str, Any]]:
    """Pixels, area and share of every class of a class map.

    Args:
        class_da: ``[1, y, x]`` integer class map with a CRS (``LULC``, ``WATER``,
            ``PREDICTION``...).
        class_names: Name of each class index; default the layer's ``class_names`` attr.
        nodata: Value counted as "No data"; default the raster's nodata (``rio.nodata``), if
            any, else none.

    Returns:
        One dict per class (``class`` = index, ``name``, ``pixels``, ``area_km2``,
        ``percent``), every class listed even when absent; then a ``"No data"`` row when
        ``nodata`` pixels exist, and a row per value outside the class list (named
        ``"class <v>"``). The areas sum to the raster's area and the percents to 100.

    Raises:
        InvalidRequestError: not a single-band integer map with a CRS, or no class names.
    """
    import rioxarray  # noqa: F401

    data = _class_array(class_da, "The class map")
    names = list(class_names) if class_names is not None else rasters.class_names(class_da)
    if not names:
        raise InvalidRequestError(
            "No class names: pass class_names or give the layer a 'class_names' attr."
        )
    if nodata is None and class_da.rio.nodata is not None:
        nd = class_da.rio.nodata
        nodata = int(nd) if np.isfinite(nd) and float(nd).is_integer() else None
    areas = rasters.pixel_areas_km2(class_da)
    total_pixels = data.size
    values = data.astype(np.int64)
    # Area per value: sum the per-row pixel area of each pixel.
    row_area = np.broadcast_to(areas, values.shape)
    uniq, inverse = np.unique(values.ravel(), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(uniq))
    sums = np.bincount(inverse, weights=row_area.ravel(), minlength=len(uniq))
    by_value = {int(v): (int(c), float(a)) for v, c, a in zip(uniq, counts, sums, strict=True)}

    def row(index: int, name: str, pixels: int, area: float) -> dict[str, Any]:
        return {
            "class": index,
            "name": name,
            "pixels": pixels,
            "area_km2": area,
            "percent": 100.0 * pixels / total_pixels,
        }

    rows = []
    for index, name in enumerate(names):
        if nodata is not None and index == nodata:
            continue
        pixels, area = by_value.pop(index, (0, 0.0))
        rows.append(row(index, str(name), pixels, area))
    if nodata is not None and nodata in by_value:
        pixels, area = by_value.pop(nodata)
        rows.append(row(nodata, "No data", pixels, area))
    for value in sorted(by_value):
        pixels, area = by_value[value]
        rows.append(row(value, f"class {value}", pixels, area))
    return rows


__all__ = [
    "POLYGON_COLUMNS",
    "class_area_stats",
    "mask_to_polygons",
    "to_geojson_bytes",
    "to_geopackage_bytes",
]

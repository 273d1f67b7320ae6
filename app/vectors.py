"""Vector outputs: class masks (e.g. ``[P] Water``) as polygons in GeoJSON and GeoPackage.

Polygons are traced on the raster's own grid (rasterio.features.shapes), their areas measured
there (UTM metres, exact pixel areas), then reprojected to EPSG:4326 for the files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import xarray as xr
from rasterio.features import shapes
from shapely.geometry import shape

from inference.errors import InvalidRequestError


def mask_to_polygons(
    mask: xr.DataArray, *, value: int = 1, name: str = "water"
) -> gpd.GeoDataFrame:
    """Polygons of the pixels of ``mask`` equal to ``value``.

    Args:
        mask: ``[1, y, x]`` class map with CRS and transform (raster contract).
        value: Class to trace.
        name: Class name written in the ``class`` column.

    Returns:
        A GeoDataFrame in EPSG:4326 with ``class``, ``value`` and ``area_km2`` (measured in the
        raster's CRS) per polygon, largest first.

    Raises:
        InvalidRequestError: the array has no CRS.
    """
    if mask.rio.crs is None:
        raise InvalidRequestError("the mask has no CRS: cannot vectorise it")
    data = np.asarray(mask.values[0] if mask.ndim == 3 else mask.values)
    selected = (data == value).astype(np.uint8)
    geoms = [shape(g) for g, v in shapes(selected, mask=selected.astype(bool),
                                          transform=mask.rio.transform()) if v == 1]
    frame = gpd.GeoDataFrame(
        {"class": [name] * len(geoms), "value": [value] * len(geoms)},
        geometry=geoms, crs=mask.rio.crs.to_wkt(),
    )
    frame["area_km2"] = frame.geometry.area / 1e6
    frame = frame.sort_values("area_km2", ascending=False, ignore_index=True)
    return frame.to_crs("EPSG:4326")


def to_geojson_bytes(frame: gpd.GeoDataFrame) -> bytes:
    """The polygons as a GeoJSON FeatureCollection (EPSG:4326)."""
    return frame.to_json(drop_id=True).encode("utf-8")


def to_geopackage_bytes(frame: gpd.GeoDataFrame, *, layer: str = "polygons") -> bytes:
    """The polygons as a GeoPackage file's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "polygons.gpkg"
        frame.to_file(path, layer=layer, driver="GPKG")
        return path.read_bytes()

"""Class maps to polygons and area tables: exact areas, read-back exports, AOI totals."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from pyproj import Geod

from app.layers import display_layers_for, layer_statistics
from app.rasters import pixel_areas_km2
from app.vectors import (
    POLYGON_COLUMNS,
    class_area_stats,
    mask_to_polygons,
    to_geojson_bytes,
    to_geopackage_bytes,
)
from inference.errors import InvalidRequestError
from inference.modalities import LULC_CLASSES, LULC_WATER
from tests.fixtures.models import s2_window

PIXEL_KM2 = 10 * 10 / 1e6  # 10 m pixels


def _utm(data: np.ndarray, *, names: list[str] | None = None, nodata: int | None = None
         ) -> xr.DataArray:
    """A ``[1, y, x]`` class map on a 10 m UTM 33N grid."""
    h, w = data.shape[-2:]
    da = xr.DataArray(
        data.reshape(1, h, w), dims=("band", "y", "x"),
        coords={"band": ["CLASS"], "y": 4_986_000.0 - 10 * (np.arange(h) + 0.5),
                "x": 500_000.0 + 10 * (np.arange(w) + 0.5)},
        attrs={"class_names": json.dumps(names)} if names else {},
    )
    da = da.rio.write_crs("EPSG:32633").rio.write_transform()
    return da.rio.write_nodata(nodata) if nodata is not None else da


def _lonlat(data: np.ndarray, *, west: float, north: float, step: float) -> xr.DataArray:
    h, w = data.shape[-2:]
    da = xr.DataArray(
        data.reshape(1, h, w), dims=("band", "y", "x"),
        coords={"band": ["CLASS"], "y": north - step * (np.arange(h) + 0.5),
                "x": west + step * (np.arange(w) + 0.5)},
    )
    return da.rio.write_crs("EPSG:4326").rio.write_transform()


def _ponds() -> np.ndarray:
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 5:25] = 1  # 400 px square
    yy, xx = np.ogrid[:60, :80]
    mask[(yy - 40) ** 2 + (xx - 60) ** 2 < 100] = 1  # round lake
    mask[45:55, 5:15] = 1
    mask[48:52, 8:12] = 0  # a 10x10 island-ringed pond: 84 px with a 16 px hole
    mask[0:3, :] = 255  # no data strip
    return mask


def test_polygons_have_exact_pixel_areas_sorted_largest_first() -> None:
    mask = _ponds()
    frame = mask_to_polygons(_utm(mask, names=["not water", "water"]))
    assert list(frame.columns) == [*POLYGON_COLUMNS, "geometry"]
    assert frame.crs.to_epsg() == 4326
    assert len(frame) == 3
    assert (frame["class"] == "water").all() and (frame["value"] == 1).all()
    assert frame["pixels"].sum() == (mask == 1).sum()
    # Area is measured on the UTM grid: exact, not approximated after reprojection.
    np.testing.assert_allclose(frame["area_km2"], frame["pixels"] * PIXEL_KM2, rtol=1e-9)
    assert list(frame["area_km2"]) == sorted(frame["area_km2"], reverse=True)
    ring = frame.loc[frame["pixels"] == 84].geometry.iloc[0]
    assert len(ring.interiors) == 1  # the hole is kept, not filled


def test_polygon_name_value_and_empty_mask() -> None:
    mask = _ponds()
    nodata = mask_to_polygons(_utm(mask), value=255, name="gap")
    assert list(nodata["class"]) == ["gap"] and nodata["pixels"].iloc[0] == 3 * 80
    assert mask_to_polygons(_utm(mask), value=7).pipe(len) == 0
    empty = mask_to_polygons(_utm(np.zeros((5, 5), np.uint8)))
    assert list(empty.columns) == [*POLYGON_COLUMNS, "geometry"] and empty.crs.to_epsg() == 4326
    assert mask_to_polygons(_utm(mask), value=1)["class"].iloc[0] == "class 1"


def test_exports_read_back_with_geopandas(tmp_path: Path) -> None:
    mask = _ponds()
    frame = mask_to_polygons(_utm(mask, names=["not water", "water"]))
    back = gpd.read_file(io.BytesIO(to_geojson_bytes(frame)))
    assert len(back) == len(frame) and back.crs.to_epsg() == 4326
    assert set(back.columns) >= {"class", "value", "pixels", "area_km2"}
    (tmp_path / "water.gpkg").write_bytes(to_geopackage_bytes(frame, layer="water"))
    gpkg = gpd.read_file(tmp_path / "water.gpkg", layer="water")
    assert len(gpkg) == len(frame) and gpkg.crs.to_epsg() == 4326
    # Reprojected back to UTM the polygons cover the mask's area within one pixel.
    utm_km2 = gpkg.to_crs(32633).geometry.area.sum() / 1e6
    assert utm_km2 == pytest.approx((mask == 1).sum() * PIXEL_KM2, abs=PIXEL_KM2)
    coords = json.loads(to_geojson_bytes(frame))["features"][0]["geometry"]["coordinates"][0]
    lon, lat = coords[0]
    assert 14 < lon < 16 and 44 < lat < 46  # lon/lat order, around UTM 33N's centre


def test_geographic_grid_uses_geodesic_areas() -> None:
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 10:40] = 1
    da = _lonlat(mask, west=10.0, north=60.0, step=0.001)
    frame = mask_to_polygons(da)
    geod = Geod(ellps="WGS84")
    lons, lats = [10.01, 10.04, 10.04, 10.01], [59.99, 59.99, 59.97, 59.97]
    expected = abs(geod.polygon_area_perimeter(lons, lats)[0]) / 1e6
    assert frame["area_km2"].iloc[0] == pytest.approx(expected, rel=1e-6)
    rows = pixel_areas_km2(da)
    assert rows.shape == (40, 1) and rows[0, 0] < rows[-1, 0]  # pixels grow towards the equator


def test_statistics_and_the_polygon_export_give_the_same_km2_in_degrees() -> None:
    """The Layers page's class areas and the polygon download use one (ellipsoidal) formula."""
    mask = np.zeros((40, 50), np.uint8)
    mask[5:35, 5:45] = 1
    da = _lonlat(mask, west=10.0, north=60.0, step=0.01)
    da.attrs.update(kind="prediction", class_names='["not water", "water"]')
    polygons_km2 = float(mask_to_polygons(da)["area_km2"].sum())
    layer = display_layers_for({"WATER": da})[0]
    water = next(c for c in layer_statistics(da, layer)["classes"] if c["name"] == "water")
    assert water["area_km2"] == pytest.approx(polygons_km2, rel=1e-9)


def test_class_area_stats_sum_to_the_raster_area() -> None:
    data = np.zeros((30, 40), np.uint8)
    data[:, :10] = 1
    data[:, 10:15] = 3
    data[:2] = 255
    data[29, 39] = 12  # a value outside the class list
    stats = class_area_stats(_utm(data, nodata=255), ["not water", "water", "mud", "ice"])
    by_name = {s["name"]: s for s in stats}
    assert [s["class"] for s in stats] == [0, 1, 2, 3, 255, 12]
    assert by_name["water"]["pixels"] == 28 * 10 and by_name["mud"]["pixels"] == 0
    assert by_name["No data"]["pixels"] == 80 and by_name["class 12"]["pixels"] == 1
    assert by_name["water"]["area_km2"] == pytest.approx(280 * PIXEL_KM2)
    assert sum(s["area_km2"] for s in stats) == pytest.approx(30 * 40 * PIXEL_KM2)
    assert sum(s["percent"] for s in stats) == pytest.approx(100.0)
    named = class_area_stats(_utm(data, names=["a", "b", "c", "d"]), nodata=255)
    assert [s["name"] for s in named][:4] == ["a", "b", "c", "d"]


def test_class_area_stats_on_a_geographic_grid() -> None:
    data = np.ones((20, 30), np.uint8)
    stats = class_area_stats(_lonlat(data, west=0.0, north=1.0, step=0.01), ["x", "y"])
    lons, lats = [0.0, 0.3, 0.3, 0.0], [1.0, 1.0, 0.8, 0.8]
    total = abs(Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)[0]) / 1e6
    # The big polygon's east-west edges are geodesics that bow off the parallels (≈2e-6).
    assert sum(s["area_km2"] for s in stats) == pytest.approx(total, rel=1e-5)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="integer class map"):
        mask_to_polygons(_utm(np.zeros((4, 4), np.float32)))
    no_crs = xr.DataArray(np.zeros((1, 4, 4), np.uint8), dims=("band", "y", "x"))
    with pytest.raises(InvalidRequestError, match="no CRS"):
        mask_to_polygons(no_crs)
    with pytest.raises(InvalidRequestError, match="one band"):
        class_area_stats(_utm(np.zeros((4, 4), np.uint8)).pipe(
            lambda d: xr.concat([d, d], dim="band")), ["a"])
    with pytest.raises(InvalidRequestError, match="class names"):
        class_area_stats(_utm(np.zeros((4, 4), np.uint8)))
    with pytest.raises(InvalidRequestError, match="connectivity"):
        mask_to_polygons(_utm(np.zeros((4, 4), np.uint8)), connectivity=6)


@pytest.mark.model
def test_zero_shot_water_layers_polygons_and_areas_agree(tiny_lulc_model: Any) -> None:
    from inference.water import WATER_NODATA, zero_shot_water

    s2 = s2_window(96, 130, seed=11)
    s2.values[:, :6, :] = np.nan  # a no-data strip
    out = zero_shot_water(tiny_lulc_model, s2, seed=3)
    lulc, water = out["LULC"].values[0], out["WATER"].values[0]
    probs = out["LULC_PROB"].values
    valid = np.isfinite(probs).all(axis=0)
    assert not valid[:6].any() and valid[6:].all()
    np.testing.assert_array_equal(water[valid], (probs[:, valid].argmax(axis=0) == LULC_WATER))
    np.testing.assert_array_equal(water[valid], lulc[valid] == LULC_WATER)
    assert (water[~valid] == WATER_NODATA).all()
    aoi_km2 = 96 * 130 * PIXEL_KM2
    water_stats = class_area_stats(out["WATER"], nodata=WATER_NODATA)
    assert sum(s["area_km2"] for s in water_stats) == pytest.approx(aoi_km2)
    assert water_stats[-1]["name"] == "No data" and water_stats[-1]["pixels"] == 6 * 130
    lulc_stats = class_area_stats(out["LULC"], [c.name for c in LULC_CLASSES])
    assert sum(s["area_km2"] for s in lulc_stats) == pytest.approx(aoi_km2)
    polygons = mask_to_polygons(out["WATER"])
    n_water = int((water == 1).sum())
    assert 0 < n_water < valid.sum()  # seeded: the untrained model maps some water
    assert polygons["pixels"].sum() == n_water
    assert polygons["area_km2"].sum() == pytest.approx(water_stats[1]["area_km2"])

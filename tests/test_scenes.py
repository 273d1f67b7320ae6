"""Scene loading: the values, grid and flags an analyst gets for an AOI window."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr

from app.aoi import AOI
from app.catalog import SearchRequest, search_scenes
from app.scenes import aoi_mask, baseline_has_offset, load_scene, true_colour_rgb, utm_epsg
from inference.errors import AssetAccessError, SceneError
from inference.modalities import S1_BANDS, S2L2A_BANDS
from tests.fixtures.s2_scenes import (
    BAND_RES,
    TILE_ORIGINS,
    GeneratedScene,
    SceneSet,
    utm_box_to_lonlat,
    utm_polygon_to_lonlat,
)

# odc-geo 0.5 calls shapely.ops.transform (deprecated in shapely 2.2) and multiplies Affine
# objects with `*` (PendingDeprecationWarning since affine 3.0, rasterio/affine#146).
pytestmark = [
    pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

NOT_PC = "http://127.0.0.1:9/api/stac/v1"  # never contacted: loading does not query the catalog

AOI_A_UTM = (500_600.0, 4_983_600.0, 502_400.0, 4_985_400.0)
AOI_AB_UTM = (501_500.0, 4_983_500.0, 504_500.0, 4_985_500.0)
AOI_C_UTM = (500_600.0, 5_013_600.0, 502_400.0, 5_015_400.0)
#: Inside the west nodata strip of every band of tile A.
AOI_NODATA_UTM = (500_020.0, 4_984_000.0, 500_100.0, 4_984_200.0)

OFFSET_SCENE = "S2A_T33TWL_20220615_A"  # baseline 04.00, cloudy
OLD_SCENE = "S2A_T33TWL_20210610_A"  # baseline 03.00, cloudy
CLEAR_SCENE = "S2B_T33TWL_20211105_A"  # baseline 03.01, no clouds


def aoi_utm(bounds: tuple[float, float, float, float]) -> AOI:
    return AOI.from_geojson(utm_box_to_lonlat(*bounds))


def expected_band(scene: GeneratedScene, band: str, da: xr.DataArray) -> np.ndarray:
    """Expected loaded values from the written file: DN − offset, clipped at 0, NaN for 0."""
    res = BAND_RES[band]
    x0, y0 = TILE_ORIGINS[scene.spec.tile]
    with rasterio.open(scene.paths[band]) as src:
        dn = src.read(1).astype(np.float64)
    cols = np.floor((da["x"].values - x0) / res).astype(int)
    rows = np.floor((y0 - da["y"].values) / res).astype(int)
    inside = np.outer((rows >= 0) & (rows < dn.shape[0]), (cols >= 0) & (cols < dn.shape[1]))
    window = dn[np.ix_(np.clip(rows, 0, dn.shape[0] - 1), np.clip(cols, 0, dn.shape[1] - 1))]
    window[~inside] = 0  # outside the tile: nodata
    return np.where(window == 0, np.nan, np.clip(window - scene.offset, 0, None))


@pytest.fixture(scope="module")
def offset_da(s2_scene_set: SceneSet) -> xr.DataArray:
    return load_scene([s2_scene_set.scenes[OFFSET_SCENE].item], aoi_utm(AOI_A_UTM),
                      stac_url=NOT_PC)


def test_grid_bands_and_attrs_follow_the_raster_contract(offset_da: xr.DataArray) -> None:
    da = offset_da
    assert da.dims == ("band", "y", "x")
    assert list(da["band"].values) == list(S2L2A_BANDS)
    assert da.dtype == np.float32
    assert da.rio.crs.to_epsg() == 32633
    transform = da.rio.transform()
    assert (transform.a, transform.e) == (10.0, -10.0)
    assert transform.c % 10 == 0 and transform.f % 10 == 0
    # The grid covers the AOI's bounding box in UTM, to the pixel.
    x0, y0, x1, y1 = AOI_A_UTM
    assert transform.c <= x0 < transform.c + 10
    assert transform.f - 10 < y1 <= transform.f
    assert da.sizes["x"] == pytest.approx((x1 - x0) / 10, abs=2)
    assert da.sizes["y"] == pytest.approx((y1 - y0) / 10, abs=2)
    assert float(da["x"][0]) == transform.c + 5  # pixel centres
    attrs = da.attrs
    assert attrs["modality"] == "S2L2A"
    assert attrs["kind"] == "input"
    assert attrs["synthetic"] is False
    assert attrs["scene_id"] == OFFSET_SCENE
    assert attrs["collection"] == "sentinel-2-l2a"
    assert attrs["datetime"] == "2022-06-15T10:00:31Z"
    assert attrs["units"].startswith("DN")
    for value in attrs.values():
        assert isinstance(value, str | int | float | bool)


def test_offset_is_removed_for_new_baselines(
    offset_da: xr.DataArray, s2_scene_set: SceneSet
) -> None:
    scene = s2_scene_set.scenes[OFFSET_SCENE]
    assert scene.offset == 1000
    assert offset_da.attrs["offset_applied"] == 1000
    for band in S2L2A_BANDS:  # 10, 20 and 60 m bands, all on the 10 m grid
        np.testing.assert_array_equal(
            offset_da.sel(band=band).values, expected_band(scene, band, offset_da), err_msg=band
        )
    # The dark patch was written below the offset: it reads 0, not negative or wrapped.
    b02 = offset_da.sel(band="B02").values
    assert np.nanmin(b02) == 0.0
    assert (b02 == 0).sum() > 100


def test_old_baselines_are_left_unchanged(s2_scene_set: SceneSet) -> None:
    scene = s2_scene_set.scenes[OLD_SCENE]
    da = load_scene([scene.item], aoi_utm(AOI_A_UTM), stac_url=NOT_PC)
    assert da.attrs["offset_applied"] == 0
    for band in ("B02", "B05", "B09"):
        expected = expected_band(scene, band, da)
        np.testing.assert_array_equal(da.sel(band=band).values, expected)
    # Same reflectance truth as the generator wrote: DN unchanged.
    assert np.nanmin(da.sel(band="B02").values) >= 200


def test_aoi_cloud_share_matches_generator_truth(
    offset_da: xr.DataArray, s2_scene_set: SceneSet
) -> None:
    aoi = aoi_utm(AOI_A_UTM)
    cloud, valid = s2_scene_set.expected_shares(OFFSET_SCENE, aoi.geometry)
    assert cloud > 0.1  # the generator put clouds in this AOI
    assert offset_da.attrs["aoi_cloud_share"] == pytest.approx(cloud, abs=0.01)
    assert offset_da.attrs["aoi_valid_share"] == pytest.approx(valid, abs=0.01)
    clear = load_scene([s2_scene_set.scenes[CLEAR_SCENE].item], aoi, stac_url=NOT_PC)
    assert clear.attrs["aoi_cloud_share"] == 0.0


def test_valid_share_counts_the_nodata_strip(s2_scene_set: SceneSet) -> None:
    # West edge of tile A: part of the AOI lies in the generator's nodata strip.
    aoi = aoi_utm((500_000.0, 4_984_000.0, 500_600.0, 4_984_600.0))
    da = load_scene([s2_scene_set.scenes[CLEAR_SCENE].item], aoi, stac_url=NOT_PC)
    _, valid = s2_scene_set.expected_shares(CLEAR_SCENE, aoi.geometry)
    assert 0.5 < valid < 0.9
    assert da.attrs["aoi_valid_share"] == pytest.approx(valid, abs=0.03)
    assert np.isnan(da.sel(band="B04").values[:, :5]).all()


def test_same_day_tiles_are_mosaicked(s2_scene_set: SceneSet) -> None:
    tile_a = s2_scene_set.scenes["S2A_T33TWL_20220615_A"]
    tile_b = s2_scene_set.scenes["S2A_T33TXL_20220615_B"]
    da = load_scene([tile_a.item, tile_b.item], aoi_utm(AOI_AB_UTM), stac_url=NOT_PC)
    assert da.attrs["scene_id"] == f"{tile_a.spec.item_id}+{tile_b.spec.item_id}"
    boundary = TILE_ORIGINS["B"][0]
    west = da["x"].values < boundary
    assert west.any() and (~west).any()
    for band in ("B04", "B11"):
        values = da.sel(band=band).values
        np.testing.assert_array_equal(values[:, west], expected_band(tile_a, band, da)[:, west])
        # Tile B starts with its own nodata strip; beyond it, tile B's values.
        east = expected_band(tile_b, band, da)[:, ~west]
        np.testing.assert_array_equal(values[:, ~west], east)
        assert np.isfinite(east).mean() > 0.8


def test_s1_rtc_is_converted_to_db(s2_scene_set: SceneSet) -> None:
    scene = s2_scene_set.scenes["S1A_IW_GRDH_20220616_A_rtc"]
    aoi = aoi_utm((500_500.0, 4_984_000.0, 502_500.0, 4_985_990.0))  # includes the bad rows
    da = load_scene([scene.item], aoi, stac_url=NOT_PC)
    assert list(da["band"].values) == list(S1_BANDS)
    assert da.attrs["modality"] == "S1RTC"
    assert da.attrs["units"] == "dB"
    assert da.dtype == np.float32
    x0, y0 = TILE_ORIGINS["A"]
    cols = ((da["x"].values - x0) // 10).astype(int)
    rows = ((y0 - da["y"].values) // 10).astype(int)
    for name, pol in (("VV", "vv"), ("VH", "vh")):
        with rasterio.open(scene.paths[pol]) as src:
            linear = src.read(1)[np.ix_(rows, cols)].astype(np.float64)
        got = da.sel(band=name).values
        positive = linear > 0
        assert (~positive).any() and positive.any()
        assert np.isnan(got[~positive]).all()
        np.testing.assert_allclose(got[positive], 10 * np.log10(linear[positive]), rtol=1e-5)
    vv = da.sel(band="VV").values
    assert -30 < np.nanmean(vv) < 0  # backscatter in dB, not linear
    assert da.attrs["aoi_cloud_share"] == 0.0


def test_aoi_outside_the_scene_is_refused(s2_scene_set: SceneSet) -> None:
    with pytest.raises(SceneError, match="outside scene"):
        load_scene([s2_scene_set.scenes[OFFSET_SCENE].item], aoi_utm(AOI_C_UTM),
                   stac_url=NOT_PC)


def test_all_nodata_window_is_refused(s2_scene_set: SceneSet) -> None:
    with pytest.raises(SceneError, match="no valid pixels"):
        load_scene([s2_scene_set.scenes[OFFSET_SCENE].item], aoi_utm(AOI_NODATA_UTM),
                   stac_url=NOT_PC)


def test_items_of_different_days_are_refused(s2_scene_set: SceneSet) -> None:
    items = [s2_scene_set.scenes[OFFSET_SCENE].item,
             s2_scene_set.scenes["S2A_T33TWL_20230801_A"].item]
    with pytest.raises(SceneError, match="2 different days"):
        load_scene(items, aoi_utm(AOI_A_UTM), stac_url=NOT_PC)


def test_mixed_offsets_in_one_mosaic_are_refused(s2_scene_set: SceneSet) -> None:
    tile_b = copy.deepcopy(s2_scene_set.scenes["S2A_T33TXL_20220615_B"].item)
    tile_b["properties"]["s2:processing_baseline"] = "03.01"
    items = [s2_scene_set.scenes[OFFSET_SCENE].item, tile_b]
    with pytest.raises(SceneError, match="mix processing baselines"):
        load_scene(items, aoi_utm(AOI_AB_UTM), stac_url=NOT_PC)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda items: [], "no scene given"),
        (lambda items: [{**items[0], "collection": "sentinel-1-grd"}], "sentinel-1-rtc"),
        (lambda items: [{**items[0], "collection": "landsat"}], "'landsat'"),
        (lambda items: [items[0], {**items[0], "id": "x", "collection": "sentinel-1-rtc"}],
         "several collections"),
    ],
)
def test_unusable_item_lists_are_refused(
    s2_scene_set: SceneSet, mutate: Any, fragment: str
) -> None:
    items = [copy.deepcopy(s2_scene_set.scenes[OFFSET_SCENE].item)]
    with pytest.raises(SceneError, match=fragment):
        load_scene(mutate(items), aoi_utm(AOI_A_UTM), stac_url=NOT_PC)


def test_unreadable_asset_raises_asset_access_error(s2_scene_set: SceneSet, tmp_path) -> None:
    item = copy.deepcopy(s2_scene_set.scenes[OFFSET_SCENE].item)
    item["assets"]["B03"]["href"] = str(tmp_path / "missing" / "B03.tif")
    with pytest.raises(AssetAccessError, match=r"B03\.tif"):
        load_scene([item], aoi_utm(AOI_A_UTM), stac_url=NOT_PC)


def test_true_colour_preview_stretches_0_to_3000(offset_da: xr.DataArray) -> None:
    rgb = true_colour_rgb(offset_da)
    assert rgb.shape == (offset_da.sizes["y"], offset_da.sizes["x"], 3)
    assert rgb.dtype == np.uint8
    b04 = offset_da.sel(band="B04").values
    i, j = np.argwhere(np.isfinite(b04) & (b04 < 3000))[0]
    assert rgb[i, j, 0] == round(b04[i, j] / 3000 * 255)
    small = xr.DataArray(
        np.array([[[1500.0, np.nan, 9000.0]]] * 3, dtype=np.float32),
        dims=("band", "y", "x"), coords={"band": ["B04", "B03", "B02"]},
    )
    assert true_colour_rgb(small)[0].tolist() == [[128, 128, 128], [0, 0, 0], [255, 255, 255]]
    with pytest.raises(SceneError, match="B02"):
        true_colour_rgb(small.sel(band=["B04", "B03"]))


def test_baseline_and_utm_helpers() -> None:
    assert baseline_has_offset("04.00") and baseline_has_offset("05.10")
    assert not baseline_has_offset("03.01") and not baseline_has_offset(None)
    assert utm_epsg(15.0, 45.0) == 32633
    assert utm_epsg(-70.0, -33.0) == 32719


@pytest.mark.integration
def test_search_then_load_through_the_api(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    aoi = aoi_utm(AOI_A_UTM)
    found = search_scenes(SearchRequest(aoi, "2023-01-01", "2023-12-31", max_cloud=50),
                          stac_url=stac_api_url)
    assert len(found) == 1
    da = load_scene([found[0]], aoi, stac_url=stac_api_url)
    scene = s2_scene_set.scenes[found[0].id]
    np.testing.assert_array_equal(da.sel(band="B08").values, expected_band(scene, "B08", da))
    assert da.attrs["offset_applied"] == 1000


def test_aoi_mask_follows_the_drawn_polygon(s2_scene_set: SceneSet) -> None:
    x0, y0, x1, y1 = AOI_A_UTM
    triangle = AOI.from_geojson(utm_polygon_to_lonlat((x0, y0), (x1, y0), (x0, y1)))
    da = load_scene([s2_scene_set.scenes[CLEAR_SCENE].item], triangle, stac_url=NOT_PC)
    inside = aoi_mask(da, triangle)
    assert inside.shape == da.shape[1:]
    assert inside.mean() == pytest.approx(0.5, abs=0.02)
    assert inside[-1, 0] and not inside[0, -1]  # south-west corner in, north-east corner out
    rectangle = aoi_utm(AOI_A_UTM)
    assert aoi_mask(load_scene([s2_scene_set.scenes[CLEAR_SCENE].item], rectangle,
                               stac_url=NOT_PC), rectangle).mean() > 0.99

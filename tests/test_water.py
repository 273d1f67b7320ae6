"""Zero-shot water (TiM through generated LULC), class areas and vector exports."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr

from app.cli import main
from app.vectors import (
    class_area_stats,
    mask_to_polygons,
    to_geojson_bytes,
    to_geopackage_bytes,
)
from inference.modalities import LULC_CLASSES, LULC_WATER
from inference.water import WATER_NODATA, water_from_lulc, zero_shot_water
from tests.fixtures.models import s2_window


def _grid(data: np.ndarray, bands: list[str]) -> xr.DataArray:
    h, w = data.shape[1:]
    da = xr.DataArray(
        data, dims=("band", "y", "x"),
        coords={"band": bands, "y": 4_986_000.0 - 10 * (np.arange(h) + 0.5),
                "x": 500_000.0 + 10 * (np.arange(w) + 0.5)},
        attrs={"modality": "LULC", "scene_id": "s"},
    )
    return da.rio.write_crs("EPSG:32633").rio.write_transform()


def test_water_is_exactly_the_water_argmax_and_nodata_stays_nodata() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(LULC_CLASSES)), size=(30, 40)).transpose(2, 0, 1)
    probs = probs.astype(np.float32)
    probs[:, :3, :] = np.nan  # a nodata strip
    lulc = np.nan_to_num(probs, nan=0).argmax(axis=0).astype(np.uint8)[None]
    out = water_from_lulc(_grid(lulc, ["LULC"]), _grid(probs, [c.name for c in LULC_CLASSES]))
    water = out["WATER"].values[0]
    assert (water[3:] == (lulc[0, 3:] == LULC_WATER)).all()
    assert (water[:3] == WATER_NODATA).all()
    np.testing.assert_array_equal(out["WATER_CONFIDENCE"].values[0, 3:], probs[LULC_WATER, 3:])
    assert out["WATER"].attrs["kind"] == "prediction"
    assert json.loads(out["WATER"].attrs["class_names"]) == ["not water", "water"]
    assert out["WATER"].rio.transform() == out["WATER_CONFIDENCE"].rio.transform()


def test_class_areas_sum_to_the_aoi_with_a_no_data_row() -> None:
    classes = np.zeros((1, 20, 50), np.uint8)
    classes[0, :, :10] = 1
    classes[0, :2, :] = WATER_NODATA
    stats = class_area_stats(_grid(classes, ["WATER"]), ["not water", "water"],
                             nodata=WATER_NODATA)
    assert [s["pixels"] for s in stats] == [18 * 40, 18 * 10, 2 * 50]
    assert stats[-1]["name"] == "No data"
    assert sum(s["area_km2"] for s in stats) == pytest.approx(20 * 50 * 100 / 1e6)
    assert sum(s["percent"] for s in stats) == pytest.approx(100.0)


def test_vectors_read_back_and_match_the_mask_area_within_a_pixel(tmp_path: Path) -> None:
    mask = np.zeros((1, 60, 80), np.uint8)
    mask[0, 10:30, 5:25] = 1  # a 20 x 20 px pond = 0.04 km²
    yy, xx = np.ogrid[:60, :80]
    mask[0][(yy - 40) ** 2 + (xx - 60) ** 2 < 100] = 1  # a round lake
    da = _grid(mask, ["WATER"])
    frame = mask_to_polygons(da, name="water")
    assert len(frame) == 2 and frame.crs.to_epsg() == 4326
    pixel_km2 = 100 / 1e6
    assert frame["area_km2"].sum() == pytest.approx(mask.sum() * pixel_km2, abs=pixel_km2)
    assert frame["area_km2"].iloc[0] >= frame["area_km2"].iloc[1]
    back = gpd.read_file(io.BytesIO(to_geojson_bytes(frame)))
    assert len(back) == 2 and back.crs.to_epsg() == 4326
    (tmp_path / "w.gpkg").write_bytes(to_geopackage_bytes(frame))
    gpkg = gpd.read_file(tmp_path / "w.gpkg")
    utm_area = gpkg.to_crs(32633).geometry.area.sum() / 1e6
    assert utm_area == pytest.approx(mask.sum() * pixel_km2, rel=1e-3)


@pytest.mark.model
def test_zero_shot_water_end_to_end_with_a_real_model(tiny_lulc_model: Any) -> None:
    s2 = s2_window(120, 90, seed=5)
    out = zero_shot_water(tiny_lulc_model, s2, seed=1)
    assert set(out) == {"LULC", "LULC_PROB", "WATER", "WATER_CONFIDENCE"}
    assert out["LULC"].attrs["kind"] == "generated" and out["WATER"].attrs["kind"] == "prediction"
    np.testing.assert_array_equal(out["WATER"].values[0], out["LULC"].values[0] == LULC_WATER)
    for da in out.values():
        assert da.rio.transform() == s2.rio.transform() and da.shape[1:] == (120, 90)
    stats = class_area_stats(out["WATER"], ["not water", "water"], nodata=WATER_NODATA)
    assert sum(s["area_km2"] for s in stats) == pytest.approx(120 * 90 * 100 / 1e6)


def _segment_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 *args: str) -> Path:
    """Run ``terralens segment`` on the test scene (tiny, untrained, CPU); the run folder."""
    monkeypatch.setenv("TERRALENS_WEIGHTS", "untrained")
    monkeypatch.setenv("TERRALENS_DEVICE", "cpu")
    code = main(["segment", "--item", "S2B_T33TWL_20211105_A", "--bbox",
                 "15.008,45.005,15.02,45.015", "--model", "tiny", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return Path(captured.out.strip())


@pytest.mark.integration
@pytest.mark.model
def test_cli_segment_without_checkpoint_maps_water(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stac_api_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = _segment_cli(monkeypatch, capsys, "--stac-url", stac_api_url,
                           "--out", str(tmp_path))
    assert {"WATER.tif", "WATER_CONFIDENCE.tif", "LULC.tif", "item.json"} <= {
        p.name for p in run_dir.iterdir()}
    # The water polygons and the class areas, as the app's downloads offer them.
    polygons = gpd.read_file(run_dir / "WATER_polygons.geojson")
    assert polygons.crs.to_epsg() == 4326 and "area_km2" in polygons.columns
    packaged = gpd.read_file(run_dir / "WATER_polygons.gpkg")
    assert len(packaged) == len(polygons)
    with rasterio.open(run_dir / "WATER.tif") as water:
        values = water.read(1)
        pixel_km2 = abs(water.transform.a * water.transform.e) / 1e6
    assert polygons["area_km2"].sum() == pytest.approx((values == 1).sum() * pixel_km2)
    with (run_dir / "WATER_class_areas.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_name = {r["name"]: r for r in rows}
    assert int(by_name["water"]["pixels"]) == int((values == 1).sum())
    assert sum(float(r["area_km2"]) for r in rows) == pytest.approx(values.size * pixel_km2)
    item = json.loads((run_dir / "item.json").read_text())
    assert item["assets"]["WATER_class_areas.csv"]["type"] == "text/csv"


@pytest.mark.integration
@pytest.mark.model
def test_cli_segment_with_a_fine_tuned_tim_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stac_api_url: str, tim_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = _segment_cli(monkeypatch, capsys, "--stac-url", stac_api_url,
                           "--checkpoint", str(tim_checkpoint), "--out", str(tmp_path))
    with rasterio.open(run_dir / "PREDICTION.tif") as pred, \
            rasterio.open(run_dir / "input.tif") as inp:
        assert pred.transform == inp.transform and pred.shape == inp.shape
    assert (run_dir / "TIM_LULC.tif").is_file()

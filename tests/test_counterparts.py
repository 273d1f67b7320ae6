"""The real counterparts of generated layers: found on the catalog and read onto the run grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.counterparts import IO_LULC_CODES, lulc_code_map
from app.reality import check_run
from tests.fixtures.runs import write_sample_run


def test_io_land_cover_codes_map_onto_terramind_classes_by_name() -> None:
    default = {code: index for index, code in enumerate(IO_LULC_CODES, start=1)}
    assert lulc_code_map(None) == default
    # A collection naming water as code 20 moves water there; unnamed classes keep the default.
    collection = {"item_assets": {"data": {"classification:classes": [
        {"value": 20, "description": "Water"}, {"value": "x", "name": "Trees"}]}}}
    mapping = lulc_code_map(collection)
    assert [code for code, index in mapping.items() if index == 1] == [20]
    assert {k: v for k, v in mapping.items() if k != 20} == {
        k: v for k, v in default.items() if v != 1}


@pytest.mark.integration
def test_counterparts_from_the_catalog_on_the_run_grid(tmp_path: Path, stac_api_url: str) -> None:
    from pyproj import Transformer

    from tests.fixtures.reference_data import GRD_DN, IO_CODES, dem_value, lulc_code

    _, run = write_sample_run(tmp_path / "runs")
    report = check_run(run, stac_url=stac_api_url, s1_days=12, timeout_s=10)
    by_layer = {c.layer: c for c in report.checks}
    assert all(c.ok for c in report.checks), [c.message for c in report.checks]
    # DEM: a plane in lon/lat, warped bilinearly from EPSG:4326 onto the UTM run grid.
    real = by_layer["DEM"].real
    xs, ys = np.meshgrid(real["x"].values, real["y"].values)
    lon, lat = Transformer.from_crs(run.load_layer("DEM").rio.crs, 4326,
                                    always_xy=True).transform(xs, ys)
    inside = np.isfinite(real.values[0])
    assert inside.mean() > 0.9
    np.testing.assert_allclose(real.values[0][inside], dem_value(lon, lat)[inside], atol=0.05)
    # LULC: Esri/IO codes from EPSG:3857 stripes, nearest, mapped onto classes 1..9.
    x3857, _ = Transformer.from_crs(run.load_layer("DEM").rio.crs, 3857,
                                    always_xy=True).transform(xs, ys)
    expected = np.searchsorted(IO_CODES, lulc_code(x3857)) + 1
    lulc = by_layer["LULC"].real.values[0]
    assert (lulc[lulc != 255] == expected[lulc != 255]).mean() > 0.97
    assert by_layer["LULC"].metrics["LULC"]["pixels"] > 0
    # S1GRD: the acquisition two days later, uncalibrated amplitude in dB.
    grd = by_layer["S1GRD"]
    assert grd.counterpart is not None and "+2 day" in grd.counterpart.note
    assert np.nanmax(np.abs(grd.real.sel(band="VV").values - 20 * np.log10(GRD_DN))) < 1e-3
    # A narrower window: the message names the window and the date.
    narrow = check_run(run, stac_url=stac_api_url, s1_days=1, timeout_s=10)
    message = next(c.message for c in narrow.checks if c.layer == "S1GRD")
    assert message.startswith("no Sentinel-1 GRD acquisition within 1 days of 2022-06-15")

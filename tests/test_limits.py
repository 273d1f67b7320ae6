"""Bounded memory and disk: every read is sized by its pixels before it happens.

The huge-upload and full-disk tests run the code in a child process under an OS limit
(``RLIMIT_AS`` 2 GiB of address space, ``RLIMIT_FSIZE`` 256 kB per file), so a regression fails
the test instead of taking the shared machine down.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from app.aoi import AOI
from app.rasters import read_layer, read_plan
from app.scenes import load_scene
from inference.errors import InvalidAOIError, InvalidRequestError
from tests.fixtures.s2_scenes import SceneSet, utm_box_to_lonlat

ROOT = Path(__file__).resolve().parents[1]
#: Address-space limit of the child processes (the imports alone take about 0.6 GiB).
CHILD_AS_BYTES = 2 * 1024**3


def _run_limited(code: str, *, fsize: int | None = None) -> dict[str, Any]:
    """Run ``code`` (which prints one JSON line last) in a child under the limits."""
    prelude = textwrap.dedent(f"""
        import resource, signal
        resource.setrlimit(resource.RLIMIT_AS, ({CHILD_AS_BYTES}, {CHILD_AS_BYTES}))
        if {fsize!r} is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize!r}, {fsize!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "GDAL_CACHEMAX": "64"}
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    return dict(json.loads(lines[-1]))


def _sparse_huge_tiff(path: Path) -> None:
    """100000 × 100000 px at 2 cm declared, one 1024² tile written: tens of kB on disk."""
    with rasterio.open(path, "w", driver="GTiff", width=100_000, height=100_000, count=1,
                       dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_000_000, 0.02, 0.02), tiled=True,
                       blockxsize=1024, blockysize=1024, compress="deflate",
                       sparse_ok=True) as dst:
        dst.write(np.full((1, 1024, 1024), 7, np.uint8), window=((0, 1024), (0, 1024)))


def test_a_declared_huge_upload_is_read_decimated_within_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    _sparse_huge_tiff(path)
    assert path.stat().st_size < 500_000
    result = _run_limited(f"""
        import json
        from pathlib import Path
        from app.rasters import read_layer
        da = read_layer(Path({str(path)!r}).read_bytes(), max_pixels=4_000_000)
        print(json.dumps({{"shape": list(da.shape), "decimation": da.attrs["read_decimation"],
                          "corner": int(da.values[0, 0, 0]), "res": da.rio.resolution()[0]}}))
    """)
    band, height, width = result["shape"]
    assert band * height * width <= 4_000_000
    assert result["decimation"] == math.ceil(100_000 / height) == 50
    assert result["corner"] == 7  # the written tile is there, seen from above
    assert result["res"] == pytest.approx(0.02 * 50)


def test_read_plan_keeps_every_read_under_the_limit() -> None:
    assert read_plan(1, 100, 100, 10_000) == (1, 100, 100)
    factor, h, w = read_plan(13, 5_000, 110_000, 64_000_000)
    assert 13 * h * w <= 64_000_000 and factor == 11
    with pytest.raises(InvalidRequestError, match="TERRALENS_MAX_READ_PIXELS"):
        read_plan(10_000_000, 10, 10, 1_000)


def test_an_upload_within_the_limit_is_read_whole(sample_layers: Any) -> None:
    from app.rasters import layer_to_cog_bytes

    ndvi = sample_layers.layers["NDVI"]
    da = read_layer(layer_to_cog_bytes(ndvi))
    assert da.shape == ndvi.shape and "read_decimation" not in da.attrs


def test_a_full_disk_during_a_cog_write_is_a_run_store_error(tmp_path: Path) -> None:
    result = _run_limited(f"""
        import json
        import numpy as np, xarray as xr, rioxarray
        from app.rasters import write_cog
        from inference.errors import RunStoreError
        rng = np.random.default_rng(0)
        da = xr.DataArray(rng.random((1, 1024, 1024), dtype=np.float32), dims=("band", "y", "x"),
                          coords={{"band": ["NDVI"], "y": -10.0 * np.arange(1024),
                                  "x": 10.0 * np.arange(1024)}}).rio.write_crs(32633)
        try:
            write_cog(da, {str(tmp_path / "ndvi.tif")!r})
            print(json.dumps({{"error": None}}))
        except RunStoreError as err:
            print(json.dumps({{"error": "RunStoreError", "message": str(err)}}))
    """, fsize=256_000)
    assert result["error"] == "RunStoreError"
    assert "disk" in result["message"]


# -- the AOI window ------------------------------------------------------------------------------
def _two_fields(km_apart: float, diagonal: bool = False) -> AOI:
    """Two 0.01° fields, ``km_apart`` east (and north, when diagonal) of each other."""
    dlon = km_apart / (111.32 * math.cos(math.radians(45.0)))
    dlat = km_apart / 111.0 if diagonal else 0.0
    fields = [[[15.0, 45.0], [15.01, 45.0], [15.01, 45.01], [15.0, 45.01], [15.0, 45.0]],
              [[15.0 + dlon, 45.0 + dlat], [15.01 + dlon, 45.0 + dlat],
               [15.01 + dlon, 45.01 + dlat], [15.0 + dlon, 45.01 + dlat],
               [15.0 + dlon, 45.0 + dlat]]]
    return AOI({"type": "MultiPolygon", "coordinates": [[f] for f in fields]})


@pytest.mark.parametrize("diagonal", [False, True])
def test_two_distant_fields_are_refused_by_their_window(diagonal: bool) -> None:
    aoi = _two_fields(500.0, diagonal)
    assert aoi.area_km2 < 2.0
    with pytest.raises(InvalidAOIError) as info:
        aoi.validate(max_km2=100, max_window_km2=400)
    message = str(info.value)
    assert "bounding box" in message and "split the area" in message
    assert "400.0 km²" in message and "TERRALENS_MAX_WINDOW_KM2" in message


def test_two_close_fields_pass() -> None:
    _two_fields(5.0).validate(max_km2=100, max_window_km2=400)


def test_the_window_limit_defaults_to_four_times_the_area_limit() -> None:
    aoi = AOI.from_bbox(15.0, 45.0, 15.3, 45.3)  # about 790 km²
    aoi.validate(max_km2=1000)
    with pytest.raises(InvalidAOIError, match="bounding box"):
        _two_fields(100.0).validate(max_km2=10)


def test_a_scene_window_over_the_pixel_limit_is_refused_before_reading(
    s2_scene_set: SceneSet,
) -> None:
    scene = s2_scene_set.scenes["S2A_T33TWL_20220615_A"]
    item = json.loads(json.dumps(scene.item))
    for asset in item["assets"].values():  # nothing may be read: every asset is missing
        asset["href"] = "/nonexistent/terralens/B.tif"
    aoi = AOI(utm_box_to_lonlat(500_600.0, 4_983_600.0, 502_400.0, 4_985_400.0))  # 1.8 km
    with pytest.raises(InvalidAOIError) as info:
        load_scene([item], aoi, stac_url="http://127.0.0.1:9/api", max_pixels=100_000)
    message = str(info.value)
    assert "13 bands" in message and "100,000" in message
    assert "TERRALENS_MAX_READ_PIXELS" in message and "split the area" in message

"""Exports: run zips and their README (map PNGs: tests/test_map_export.py)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from rasterio.io import MemoryFile

from app.exports import SYNTHETIC_WARNING, run_zip_bytes


def _open(data: bytes):
    memfile = MemoryFile(data)
    return memfile, memfile.open()


def test_run_zip_holds_every_cog_the_item_and_a_readme(sample_run):
    _, run = sample_run
    with zipfile.ZipFile(io.BytesIO(run_zip_bytes(run))) as archive:
        names = set(archive.namelist())
        folder = f"terralens-run-{run.id}"
        expected = {f"{folder}/{n}.tif" for n in [*run.layer_names, "input"]}
        assert expected | {f"{folder}/item.json", f"{folder}/README.txt"} == names
        item = json.loads(archive.read(f"{folder}/item.json"))
        assert item["id"] == run.id
        readme = archive.read(f"{folder}/README.txt").decode()
        with MemoryFile(archive.read(f"{folder}/DEM.tif")) as mem, mem.open() as src:
            np.testing.assert_array_equal(src.read(1), run.load_layer("DEM").values[0])
    assert SYNTHETIC_WARNING in readme
    assert "S1GRD.tif" in readme and "units dB" in readme
    assert "DEM.tif" in readme and "units m" in readme
    assert run.request.scene_id in readme
    assert "seed: 0" in readme and "timesteps: 10" in readme

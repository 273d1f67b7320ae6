"""Rasters: COG bytes and files read back exactly with rasterio, foreign GeoTIFFs, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from app.colors import hex_to_rgb
from app.rasters import ATTRS_TAG, layer_to_cog_bytes, read_layer, write_cog
from inference.errors import InvalidRequestError, RunStoreError
from inference.modalities import LULC_CLASSES
from tests.fixtures.runs import EPSG, ORIGIN, RES, make_array


def _open(data: bytes):
    memfile = MemoryFile(data)
    return memfile, memfile.open()


def test_continuous_cog_bytes_read_back_with_rasterio(sample_layers):
    da = sample_layers.layers["S1GRD"]
    memfile, src = _open(layer_to_cog_bytes(da))
    with memfile, src:
        assert src.count == 2
        assert src.dtypes == ("float32", "float32")
        assert np.array_equal(src.read(), da.values)
        assert src.crs.to_epsg() == EPSG
        assert src.transform == from_origin(ORIGIN[0], ORIGIN[1], RES, RES)
        assert np.isnan(src.nodata)
        assert src.descriptions == ("VV", "VH")
        assert src.units == ("dB", "dB")
        tags = src.tags()
        assert tags["units"] == "dB"
        assert tags["kind"] == "generated"
        assert tags["synthetic"] == "true"
        assert tags["model"] == da.attrs["model"]
        assert tags["seed"] == str(da.attrs["seed"])
        assert tags["scene_id"] == da.attrs["scene_id"]
        assert json.loads(tags[ATTRS_TAG]) == da.attrs
        # GDAL's COG driver wrote it: tiled, COG layout.
        assert src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_class_map_is_uint8_with_nodata_255_and_the_lulc_colour_table(sample_layers):
    da = sample_layers.layers["LULC"]
    memfile, src = _open(layer_to_cog_bytes(da))
    with memfile, src:
        assert src.dtypes == ("uint8",)
        assert src.nodata == 255
        assert np.array_equal(src.read(1), da.values[0])
        colormap = src.colormap(1)
        for cls in LULC_CLASSES:
            assert colormap[cls.index][:3] == hex_to_rgb(cls.colour)


def test_large_layers_get_overviews(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.normal(size=(1, 1100, 1100)).astype(np.float32)
    import xarray as xr

    da = xr.DataArray(values, dims=("band", "y", "x"),
                      coords={"band": ["NDVI"], "y": 5e6 - 5 - 10 * np.arange(1100),
                              "x": 5e5 + 5 + 10 * np.arange(1100)},
                      attrs={"modality": "NDVI", "units": "", "kind": "generated",
                             "synthetic": True})
    da = da.rio.write_crs("EPSG:32633")
    path = write_cog(da, tmp_path / "big.tif")
    with rasterio.open(path) as src:
        assert src.overviews(1), "a 1100 px COG must carry overviews"
        assert src.block_shapes[0][0] < 1100  # tiled, not striped


def test_read_layer_restores_the_raster_contract(sample_layers, tmp_path):
    original = sample_layers.input_layer
    back = read_layer(write_cog(original, tmp_path / "input.tif"))
    assert back.dims == ("band", "y", "x")
    assert list(back["band"].values) == list(original["band"].values)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back.values), np.isnan(original.values))
    np.testing.assert_array_equal(back.values, original.values)
    np.testing.assert_allclose(back["x"].values, original["x"].values)
    np.testing.assert_allclose(back["y"].values, original["y"].values)
    assert back.rio.crs.to_epsg() == EPSG
    assert back.rio.transform() == original.rio.transform()
    assert back.attrs == original.attrs
    assert back.attrs["synthetic"] is False  # types survive, not just text


def test_read_layer_from_upload_bytes_keeps_class_maps_uint8(sample_layers):
    original = sample_layers.layers["WATER"]
    back = read_layer(layer_to_cog_bytes(original))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.values, original.values)
    assert back.attrs["class_names"] == original.attrs["class_names"]


def test_read_layer_opens_a_foreign_geotiff_with_a_nodata_value(tmp_path):
    path = tmp_path / "dem_int16.tif"
    data = np.arange(20, dtype=np.int16).reshape(1, 4, 5)
    data[0, 0, 0] = -9999
    with rasterio.open(path, "w", driver="GTiff", width=5, height=4, count=1, dtype="int16",
                       crs="EPSG:32633", transform=from_origin(500000, 4986000, 30, 30),
                       nodata=-9999) as dst:
        dst.write(data)
        dst.units = ("m",)
    da = read_layer(path)
    assert da.dtype == np.float32
    assert np.isnan(da.values[0, 0, 0])
    assert da.values[0, 3, 4] == 19
    assert da.attrs["kind"] == "input" and da.attrs["synthetic"] is False
    assert da.attrs["units"] == "m"
    assert list(da["band"].values) == ["1"]


def test_read_layer_errors_name_the_problem(tmp_path):
    with pytest.raises(InvalidRequestError, match="GeoTIFF"):
        read_layer(b"this is not a tiff")
    with pytest.raises(RunStoreError, match="does not exist"):
        read_layer(tmp_path / "missing.tif")


def test_write_cog_rejects_arrays_off_the_contract(sample_layers, tmp_path):
    flat = sample_layers.layers["NDVI"].isel(band=0)
    with pytest.raises(InvalidRequestError, match="dims"):
        write_cog(flat, tmp_path / "x.tif")
    no_crs = make_array(np.zeros((1, 100, 120), np.float32), ("NDVI",), {})
    no_crs = no_crs.drop_vars("spatial_ref")
    with pytest.raises(InvalidRequestError, match="CRS"):
        write_cog(no_crs, tmp_path / "x.tif")

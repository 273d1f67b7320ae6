"""A run's STAC metadata: the Item (assets, bands, classes, provenance, links) and the Catalog."""

from __future__ import annotations

import json
import socket

import pystac
import pystac.validation
import pytest
import shapely.geometry

from app.run_request import RunRequest
from app.runs import RunStore
from inference.modalities import LULC_CLASSES
from tests.fixtures.runs import SCENE_DATETIME, SCENE_ID, make_sample_layers


@pytest.fixture(scope="module")
def sample():
    """A smaller set of layers than the full fixture (fast saves in this module)."""
    full = make_sample_layers(1)
    layers = {k: full.layers[k] for k in ("S1GRD", "LULC", "DEM")}
    return full, layers


def test_item_is_a_stac_item_with_aoi_datetime_provenance_and_assets(sample_run, monkeypatch):
    _, run = sample_run
    item = pystac.Item.from_file(str(run.path / "item.json"))
    assert item.id == run.id
    assert shapely.geometry.shape(item.geometry).equals(
        shapely.geometry.shape(run.request.aoi))
    assert item.datetime.isoformat() == SCENE_DATETIME
    props = item.properties
    assert props["terralens:scene_id"] == SCENE_ID
    assert props["terralens:synthetic"] is True
    prov = props["terralens:provenance"]
    for key in ("model", "weights", "timesteps", "seed", "offset_applied", "untrained",
                "terratorch_version", "scene_id"):
        assert key in prov
    assert "created" in props
    s1 = item.assets["S1GRD"]
    assert s1.media_type == pystac.MediaType.COG
    assert "data" in s1.roles and "synthetic" in s1.roles
    assert [b["name"] for b in s1.extra_fields["bands"]] == ["VV", "VH"]
    assert {b["unit"] for b in s1.extra_fields["bands"]} == {"dB"}
    assert {(b["data_type"], b["nodata"]) for b in s1.extra_fields["bands"]} == {
        ("float32", "nan")}
    assert s1.extra_fields["terralens:kind"] == "generated"
    assert s1.extra_fields["proj:code"] == "EPSG:32633"
    assert "input" in item.assets["input"].roles
    lulc = item.assets["LULC"].extra_fields
    assert lulc["bands"][0]["data_type"] == "uint8" and lulc["bands"][0]["nodata"] == 255
    water = lulc["classification:classes"][1]
    assert water["value"] == 1 and water["name"] == "Water"
    assert water["color_hint"] == LULC_CLASSES[1].colour.lstrip("#").upper()
    assert props["processing:software"]["terralens"]
    assert props["processing:software"]["terratorch"] == prov["terratorch_version"]
    assert item.assets["DEM"].get_absolute_href().endswith(f"{run.id}/DEM.tif")

    # The core Item schema ships with pystac; validate it with the network cut off.
    def no_network(*_args, **_kwargs):
        raise OSError("tests have no network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    core = json.loads((run.path / "item.json").read_text())
    core["stac_extensions"] = []
    assert pystac.validation.validate_dict(core)


def test_catalog_links_every_run(tmp_path, sample):
    store = RunStore(tmp_path)
    full, layers = sample
    run = store.save(full.request, layers, provenance=full.provenance)
    catalog = pystac.Catalog.from_file(str(tmp_path / "catalog.json"))
    items = list(catalog.get_items())
    assert [i.id for i in items] == [run.id]
    store.delete(run.id)
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    assert [link for link in catalog["links"] if link["rel"] == "item"] == []


def test_a_run_links_the_scene_it_was_derived_from(tmp_path, sample):
    full, layers = sample
    href = "http://127.0.0.1:8081/api/stac/v1/collections/sentinel-2-l2a/items/S2A_X"
    store = RunStore(tmp_path)
    run = store.save(full.request, layers, provenance=full.provenance | {"scene_href": href})
    item = json.loads((run.path / "item.json").read_text())
    derived = [link for link in item["links"] if link["rel"] == "derived_from"]
    assert [link["href"] for link in derived] == [href]
    other = full.request.to_dict()
    other["params"] = other["params"] | {"seed": 99}
    without = store.save(RunRequest.from_dict(other), layers, provenance=full.provenance)
    links = json.loads((without.path / "item.json").read_text())["links"]
    assert not [link for link in links if link["rel"] == "derived_from"]

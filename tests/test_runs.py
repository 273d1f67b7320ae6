"""The run store: requests and keys, atomic saves, find/list/open/delete, the STAC Item."""

from __future__ import annotations

import json
import os
import socket
import threading

import numpy as np
import pystac
import pystac.validation
import pytest
import shapely.geometry

import app.runs as runs_module
from app.aoi import AOI
from app.layers import display_layers_for
from app.runs import INPUT_LAYER, RunRequest, RunStore
from inference.errors import InvalidRequestError, RunStoreError
from inference.modalities import LULC_CLASSES
from tests.fixtures.runs import SCENE_DATETIME, SCENE_ID, make_sample_layers


@pytest.fixture(scope="module")
def sample():
    """A smaller set of layers than the full fixture (fast saves in this module)."""
    full = make_sample_layers(1)
    layers = {k: full.layers[k] for k in ("S1GRD", "LULC", "DEM")}
    return full, layers


def _save(store, sample, **request_changes):
    full, layers = sample
    request = full.request
    if request_changes:
        fields = request.to_dict() | request_changes
        request = RunRequest.from_dict(fields)
    return store.save(request, layers, provenance=full.provenance)


# -- RunRequest -----------------------------------------------------------------------------------
def test_equivalent_requests_have_the_same_key(sample_layers):
    request = sample_layers.request
    geometry = request.aoi
    other = RunRequest(
        scene_id=f"  {request.scene_id} ",
        aoi={"type": "Feature", "properties": {"name": "x"},
             "geometry": {"type": "Polygon",
                          "coordinates": [[tuple(p) for p in geometry["coordinates"][0]]]}},
        task=request.task,
        params=list(reversed(list(request.params_dict.items()))),
        model=request.model,
        weights=request.weights,
    )
    assert other == request
    assert other.key == request.key
    assert hash(other) == hash(request)
    assert len(request.key) == 16 and int(request.key, 16) >= 0


def test_an_aoi_object_gives_the_same_key_as_its_geometry():
    aoi = AOI.from_bbox(15.0, 45.0, 15.02, 45.01)
    by_object = RunRequest("S2A_X", aoi, "generate", {"seed": 0})
    by_dict = RunRequest("S2A_X", aoi.geometry, "generate", {"seed": 0})
    assert by_object.key == by_dict.key


@pytest.mark.parametrize("change", [
    {"scene_id": "S2B_OTHER"}, {"task": "water"}, {"model": "terramind_v1_base_generate"},
    {"weights": "untrained"}, {"params": {"seed": 1, "timesteps": 10}},
])
def test_any_change_gives_a_different_key(sample_layers, change):
    request = sample_layers.request
    changed = RunRequest.from_dict(request.to_dict() | change)
    assert changed.key != request.key


def test_request_round_trips_through_json(sample_layers):
    request = sample_layers.request
    again = RunRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request and again.key == request.key
    assert request.params_dict["outputs"] == ["S1GRD", "LULC", "NDVI", "DEM"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scene_id": ""}, "scene_id"),
    ({"task": None}, "task"),
    ({"aoi": {"type": "Polygon"}}, "coordinates"),
    ({"aoi": "not json"}, "GeoJSON"),
    ({"params": {"nested": {"a": 1}}}, "nested"),
    ({"params": 5}, "params"),
])
def test_bad_requests_are_refused_with_the_bad_value(kwargs, match):
    base = {"scene_id": "S2A_X", "aoi": AOI.from_bbox(15, 45, 15.01, 45.01).geometry,
            "task": "generate", "params": {}}
    with pytest.raises(InvalidRequestError, match=match):
        RunRequest(**(base | kwargs))


# -- RunStore -------------------------------------------------------------------------------------
def test_save_then_find_open_and_load(tmp_path, sample):
    full, layers = sample
    store = RunStore(tmp_path / "runs")
    assert store.find(full.request) is None
    run = _save(store, sample)
    assert run.id == full.request.key
    found = store.find(RunRequest.from_dict(full.request.to_dict()))
    assert found is not None and found.id == run.id
    opened = store.open(run.id)
    assert opened.request == full.request
    assert opened.layer_names == ["S1GRD", "LULC", "DEM"]
    assert opened.input_name is None
    assert opened.synthetic and not opened.untrained
    dem = opened.load_layer("DEM")
    np.testing.assert_array_equal(dem.values, layers["DEM"].values)
    assert dem.attrs == layers["DEM"].attrs
    assert store.find(RunRequest.from_dict(full.request.to_dict() | {"task": "water"})) is None


def test_the_input_layer_is_kept_and_shown_as_true_colour(sample_run):
    _, run = sample_run
    assert run.input_name == INPUT_LAYER
    assert INPUT_LAYER not in run.layer_names
    names = [layer.name for layer in display_layers_for(run.load_layers(load=False))]
    assert names[:2] == ["Input true colour", "Input false colour"]
    assert "[G] S1GRD-VV" in names and "[G] S1GRD-VH" in names and "[P] Water" in names
    assert not any("PROB" in n for n in names)


def test_list_is_newest_first_and_delete_removes(tmp_path, sample):
    store = RunStore(tmp_path)
    first = _save(store, sample)
    second = _save(store, sample, task="water")
    third = _save(store, sample, params={"seed": 7})
    assert [r.id for r in store.list_runs()] == [third.id, second.id, first.id]
    store.delete(second.id)
    assert [r.id for r in store.list_runs()] == [third.id, first.id]
    assert not (tmp_path / second.id).exists()
    with pytest.raises(RunStoreError, match="no run"):
        store.open(second.id)
    with pytest.raises(RunStoreError, match="no run"):
        store.delete(second.id)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_saving_the_same_request_again_keeps_the_first_run(tmp_path, sample):
    store = RunStore(tmp_path)
    first = _save(store, sample)
    again = _save(store, sample)
    assert again.id == first.id and again.created == first.created  # first writer wins
    assert [r.id for r in store.list_runs()] == [first.id]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_reader_never_fails_while_the_same_request_is_saved_again(tmp_path, sample):
    store = RunStore(tmp_path)
    first = _save(store, sample)
    stop = threading.Event()
    errors: list[BaseException] = []

    def resave() -> None:
        try:
            while not stop.is_set():
                _save(RunStore(tmp_path), sample)
        except BaseException as err:  # reported below
            errors.append(err)

    writer = threading.Thread(target=resave)
    writer.start()
    reads = 0
    try:
        for _ in range(60):
            run = RunStore(tmp_path).open(first.id)
            assert run.load_layer("LULC").shape[1:] == first.load_layer("LULC").shape[1:]
            reads += 1
    finally:
        stop.set()
        writer.join(60)
    assert not errors, errors
    assert reads == 60


def test_sweep_removes_the_folders_of_dead_writers_only(tmp_path, sample):
    import subprocess
    import sys

    store = RunStore(tmp_path)
    good = _save(store, sample)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f".tmp-{good.id}-{dead_pid}-deadbeef"
    left.mkdir()
    (left / "LULC.tif").write_bytes(b"partial")
    trash = tmp_path / f".trash-{good.id}-{dead_pid}-0badf00d"
    trash.mkdir()
    live = tmp_path / f".tmp-{good.id}-{os.getpid()}-cafebabe"
    live.mkdir()
    assert sorted(store.sweep()) == sorted([left.name, trash.name])
    assert not left.exists() and not trash.exists() and live.is_dir()
    assert [r.id for r in store.list_runs()] == [good.id]


def test_half_written_runs_are_never_listed_or_found(tmp_path, sample):
    full, _ = sample
    store = RunStore(tmp_path)
    good = _save(store, sample)
    # A crash left a temp folder (even with an item.json) and a folder without item.json.
    tmp = tmp_path / f".tmp-{full.request.key}-deadbeef"
    tmp.mkdir()
    (tmp / "item.json").write_text((good.path / "item.json").read_text())
    (tmp_path / "0123456789abcdef").mkdir()
    (tmp_path / "0123456789abcdef" / "S1GRD.tif").write_bytes(b"partial")
    assert [r.id for r in store.list_runs()] == [good.id]
    with pytest.raises(RunStoreError, match="no run"):
        store.open("0123456789abcdef")
    # An item.json whose layers are missing is incomplete, not a run.
    (good.path / "DEM.tif").unlink()
    assert store.list_runs() == []
    assert store.find(full.request) is None
    with pytest.raises(RunStoreError, match="incomplete"):
        store.open(good.id)


def test_a_failing_save_leaves_nothing_behind(tmp_path, sample, monkeypatch):
    store = RunStore(tmp_path)
    real_write = runs_module.write_cog
    calls = []

    def failing_write(da, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(da, path)

    monkeypatch.setattr(runs_module, "write_cog", failing_write)
    full, _ = sample
    with pytest.raises(RunStoreError, match="disk space"):
        _save(store, sample)
    assert store.list_runs() == []
    assert store.find(full.request) is None
    assert [p.name for p in tmp_path.iterdir() if p.name != "catalog.json"] == []


def test_bad_layer_names_and_ids_are_refused(tmp_path, sample):
    full, layers = sample
    store = RunStore(tmp_path)
    for name in ("../evil", "item", "input", "a b"):
        with pytest.raises(InvalidRequestError, match="layer name"):
            store.save(full.request, {name: layers["DEM"]}, provenance={})
    with pytest.raises(InvalidRequestError, match="at least one layer"):
        store.save(full.request, {}, provenance={})
    with pytest.raises(RunStoreError, match="not a run id"):
        store.open("../etc")


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
    run = _save(store, sample)
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


def test_a_run_keeps_its_vector_files_beside_the_layers(tmp_path, sample):
    full, layers = sample
    store = RunStore(tmp_path)
    run = store.save(full.request, layers, provenance=full.provenance,
                     files={"WATER_class_areas.csv": b"class,name\n1,water\n"})
    assert run.files == {"WATER_class_areas.csv": run.path / "WATER_class_areas.csv"}
    assert "WATER_class_areas.csv" not in run.layer_names
    assert set(store.open(run.id).load_layers()) == set(layers)
    for bad in ("../escape.csv", "item.json", "layer.exe", "x/y.csv"):
        with pytest.raises(InvalidRequestError, match="run file name"):
            store.save(full.request, layers, provenance=full.provenance, files={bad: b""})

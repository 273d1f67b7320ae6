"""The run store: atomic saves, find/list/open/delete, sweeping, a run's layers and files."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import app.runs as runs_module
from app.aoi import AOI
from app.layers import display_layers_for
from app.run_item import INPUT_LAYER
from app.run_request import RunRequest
from app.runs import RunStore
from inference.errors import InvalidRequestError, RunStoreError
from tests.fixtures.runs import make_sample_layers


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
    assert opened.aoi == AOI(full.request.aoi) and opened.aoi is opened.aoi  # built once
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

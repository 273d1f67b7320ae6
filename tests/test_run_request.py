"""A run's request: normalisation, the content key, JSON round trip, refusals."""

from __future__ import annotations

import json

import pytest

from app.aoi import AOI
from app.run_request import RunRequest
from inference.errors import InvalidRequestError


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
